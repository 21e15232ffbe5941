// Instruction-set choice for the matrix-product engine: what the CPU offers, what the
// DENSEKIT_ISA environment variable asks for, and the one ISA used by every call.
//
// The choice is made once (the extension module makes it at import) and never changes.
// DENSEKIT_ISA=avx512|avx2|portable may only lower the choice; asking for an ISA the CPU
// lacks falls back to the best one it has, and `note` says why.
#pragma once

#include <string>

namespace densekit::gemm {

enum class Isa { portable = 0, avx2 = 1, avx512 = 2 };

struct CpuFeatures {
  bool sse2 = false;
  bool avx = false;
  bool avx2 = false;
  bool fma = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool amx_tile = false;
  // the low-precision products' instructions (csrc/lowp): vdpbf16ps, vpdpbusd, the AMX forms
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
};

struct IsaChoice {
  Isa isa = Isa::portable;       // in use for float32 and float64
  Isa best = Isa::portable;      // the best this CPU supports
  bool forced = false;           // DENSEKIT_ISA was set and honoured
  std::string requested;         // DENSEKIT_ISA as given ("" when unset)
  std::string note;              // why a request was not honoured ("" when it was)
};

const CpuFeatures& cpu_features();
const IsaChoice& isa_choice();
// The ISA is usable here: its kernels are compiled in and the CPU runs them.
bool isa_supported(Isa isa);
const char* isa_name(Isa isa);
// Parses "avx512" / "avx2" / "portable"; returns false for anything else.
bool isa_from_name(const std::string& name, Isa* isa);

}  // namespace densekit::gemm
