// The AMX permission and CPU check (amx.hpp). Baseline ISA: no tile instruction here.
#include "lowp/amx.hpp"

#if defined(DENSEKIT_HAVE_AMX_KERNELS) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <cstdint>

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

AmxSupport probe_support() {
  AmxSupport s;
  __builtin_cpu_init();
  const bool tile = __builtin_cpu_supports("amx-tile");
  const bool bf16 = tile && __builtin_cpu_supports("amx-bf16");
  const bool int8 = tile && __builtin_cpu_supports("amx-int8");
  if (!bf16 && !int8) return s;
  if (!__builtin_cpu_supports("avx512f") || (xcr0() & (3u << 17)) != (3u << 17)) {
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
