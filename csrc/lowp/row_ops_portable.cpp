// The row operations (row_ops.inc) built for the baseline ISA, and the choice among the ISAs.
#include <cstdint>
#include <cstring>
#include <limits>

#include "gemm/isa.hpp"
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
    if (isa == gemm::Isa::avx512) return row_ops_avx512();
    if (isa == gemm::Isa::avx2) return row_ops_avx2();
#endif
    return row_ops_portable();
  }();
  return ops;
}

}  // namespace densekit::lowp
