// AVX-512F microkernels. This file alone is compiled with -mavx512f -mavx2 -mfma; it is
// entered only after the CPU check in isa.cpp.
//   float32: 14x32 (28 zmm accumulators; per k step 2 vector loads of B, 14 broadcasts of A)
//            and, for m <= 4 (batch 1..4), m x 128 (m <= 3) or 4x96: wide rows of B read
//            contiguously, >= 8 independent fma chains.
//   float64: 14x16, m x 64, 4x48: the same shapes in vectors.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized and -Wuninitialized (GCC bug 105593:
// _mm512_undefined_ps) in their own shuffle/max/min/scalef wrappers.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <utility>

#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

#include "vecmath/vectors_avx512.inc"

#include "microkernel_body.inc"

}  // namespace

KernelFamily<float> avx512_kernels_f32() {
  return make_family<F32x16, 14, 2, 4, 32>(Isa::avx512, "avx512 14x32");
}

KernelFamily<double> avx512_kernels_f64() {
  return make_family<F64x8, 14, 2, 4, 32>(Isa::avx512, "avx512 14x16");
}

}  // namespace densekit::gemm
