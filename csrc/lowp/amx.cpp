// The AMX permission and CPU check (amx.hpp). Baseline ISA: no tile instruction here.
#include "lowp/amx.hpp"

#if defined(DENSEKIT_HAVE_AMX_KERNELS) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <cstdint>
#include <cstdlib>

#include "gemm/isa.hpp"
#include "lowp/path_choice.hpp"

namespace densekit::lowp {
namespace {

#if defined(DENSEKIT_HAVE_AMX_KERNELS) && defined(__linux__)
constexpr long kArchGetXcompPerm = 0x1022;
constexpr long kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureTileData = 18;

std::uint64_t xcr0() {
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (std::uint64_t(hi) << 32) | lo;
}

// DENSEKIT_AMX: "0", "off", "false" or "no" keep the tile state unasked for (a process that
// installs small alternate signal stacks later needs that: once the state is granted, Linux
// refuses stacks smaller than its signal frame); "1", "on", "true", "yes" or unset: asked for.
// Returns false, with a note, for the first kind; a value of neither kind is noted and ignored.
bool amx_allowed(std::string* note) {
  const char* env = std::getenv("DENSEKIT_AMX");
  if (env == nullptr || *env == '\0') return true;
  const std::string value = lowered(env);
  for (const char* off : {"0", "off", "false", "no"})
    if (value == off) {
      *note = std::string("DENSEKIT_AMX='") + env + "': the AMX tile state is not asked for";
      return false;
    }
  for (const char* on : {"1", "on", "true", "yes"})
    if (value == on) return true;
  *note = std::string("DENSEKIT_AMX='") + env + "' is not one of 0, off, false, no, 1, on, " +
          "true, yes; AMX allowed";
  return true;
}

AmxSupport probe_support() {
  AmxSupport s;
  const gemm::CpuFeatures& cpu = gemm::cpu_features();
  const bool bf16 = cpu.amx_bf16, int8 = cpu.amx_int8;
  if (!bf16 && !int8) return s;
  std::string request_note;
  if (!amx_allowed(&request_note)) {
    s.note = request_note;
    return s;
  }
  if (!cpu.avx512f || (xcr0() & (3u << 17)) != (3u << 17)) {
    s.note = "the OS does not enable the AMX tile state (XCR0)";
    return s;
  }
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureTileData) != 0) {
    s.note = "the kernel refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)";
    return s;
  }
  unsigned long granted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0 ||
      (granted & (1ul << kXfeatureTileData)) == 0) {
    s.note = "the AMX tile state was not granted (arch_prctl ARCH_GET_XCOMP_PERM)";
    return s;
  }
  s.bf16 = bf16;
  s.int8 = int8;
  s.note = request_note;  // an unrecognised DENSEKIT_AMX, ignored
  return s;
}
#else
AmxSupport probe_support() { return {}; }
#endif

}  // namespace

const AmxSupport& amx_support() {
  static const AmxSupport support = probe_support();
  return support;
}

}  // namespace densekit::lowp
