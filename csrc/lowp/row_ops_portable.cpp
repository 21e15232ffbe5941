// The row operations (row_ops.inc) built for the baseline ISA, and the choice among the ISAs.
#include <cstdint>
#include <cstring>
#include <limits>

#include "gemm/isa.hpp"
#include "lowp/bf16_gemm.hpp"
#include "lowp/row_ops.hpp"
#include "vecmath/scalar_activations.hpp"

namespace densekit::lowp {
namespace {
#include "lowp/row_ops.inc"
}  // namespace

RowOps row_ops_portable() { return make_row_ops(); }

const RowOps& row_ops() {
  static const RowOps ops = [] {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
    const gemm::Isa isa = gemm::isa_choice().isa;
    // AVX512-BF16's operand roundings go with the bf16 paths that use its instructions (the
    // emulated path, forced or not, keeps the integer rounding)
    if (isa == gemm::Isa::avx512 && bf16_path_supported(Bf16Path::avx512_bf16) &&
        bf16_choice().path != Bf16Path::emulated)
      return row_ops_avx512_bf16();
    if (isa == gemm::Isa::avx512) return row_ops_avx512();
    if (isa == gemm::Isa::avx2) return row_ops_avx2();
#endif
    return row_ops_portable();
  }();
  return ops;
}

}  // namespace densekit::lowp
