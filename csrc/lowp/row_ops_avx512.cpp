// The row operations (row_ops.inc) built for the avx512 ISA (this file alone has its flags);
// row_ops_avx512_bf16.cpp builds this file again with AVX512-BF16 under another name.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized and -Wuninitialized (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <limits>

#include "lowp/row_ops.hpp"
#include "vecmath/scalar_activations.hpp"

namespace densekit::lowp {
namespace {
#include "vecmath/vectors_avx512.inc"  // F32x16::transpose, for the quantization of row blocks

#include "lowp/row_ops.inc"
}  // namespace

#ifndef DENSEKIT_ROW_OPS_AVX512_NAME
#define DENSEKIT_ROW_OPS_AVX512_NAME row_ops_avx512
#endif
RowOps DENSEKIT_ROW_OPS_AVX512_NAME() { return make_row_ops(); }

}  // namespace densekit::lowp
