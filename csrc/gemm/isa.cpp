// CPU feature detection and the process-wide ISA choice (see isa.hpp).
#include "isa.hpp"

#include <cctype>
#include <cstdlib>

namespace densekit::gemm {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  // __builtin_cpu_supports also checks that the OS saves the wider registers (XCR0).
  __builtin_cpu_init();
  f.sse2 = __builtin_cpu_supports("sse2");
  f.avx = __builtin_cpu_supports("avx");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512_vnni = __builtin_cpu_supports("avx512vnni");
#if defined(__clang__) || __GNUC__ >= 11
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
#endif
#if (defined(__GNUC__) && __GNUC__ >= 11 && !defined(__clang__)) || \
    defined(DENSEKIT_HAVE_AMX_KERNELS)
  f.amx_tile = __builtin_cpu_supports("amx-tile");
  f.amx_bf16 = f.amx_tile && __builtin_cpu_supports("amx-bf16");
  f.amx_int8 = f.amx_tile && __builtin_cpu_supports("amx-int8");
#endif
#endif
  return f;
}

bool compiled_in(Isa isa) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  (void)isa;
  return true;
#else
  return isa == Isa::portable;
#endif
}

IsaChoice choose() {
  IsaChoice choice;
  choice.best = Isa::portable;
  if (isa_supported(Isa::avx2)) choice.best = Isa::avx2;
  if (isa_supported(Isa::avx512)) choice.best = Isa::avx512;
  choice.isa = choice.best;

  const char* env = std::getenv("DENSEKIT_ISA");
  if (env == nullptr || *env == '\0') return choice;
  choice.requested = env;
  std::string lowered;
  for (const char* p = env; *p != '\0'; ++p)
    lowered += static_cast<char>(std::tolower(static_cast<unsigned char>(*p)));
  Isa wanted;
  if (!isa_from_name(lowered, &wanted)) {
    choice.note = "DENSEKIT_ISA='" + choice.requested +
                  "' is not one of avx512, avx2, portable; using " + isa_name(choice.best);
  } else if (static_cast<int>(wanted) > static_cast<int>(choice.best)) {
    choice.note = "DENSEKIT_ISA='" + choice.requested + "' is not supported by this CPU/build; using " +
                  isa_name(choice.best);
  } else {
    choice.isa = wanted;
    choice.forced = true;
  }
  return choice;
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool isa_supported(Isa isa) {
  if (!compiled_in(isa)) return false;
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::portable: return true;
    case Isa::avx2: return f.avx2 && f.fma;
    case Isa::avx512: return f.avx512f && f.avx2 && f.fma;
  }
  return false;
}

const IsaChoice& isa_choice() {
  static const IsaChoice choice = choose();
  return choice;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::portable: return "portable";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "portable";
}

bool isa_from_name(const std::string& name, Isa* isa) {
  if (name == "portable") {
    *isa = Isa::portable;
  } else if (name == "avx2") {
    *isa = Isa::avx2;
  } else if (name == "avx512") {
    *isa = Isa::avx512;
  } else {
    return false;
  }
  return true;
}

}  // namespace densekit::gemm
