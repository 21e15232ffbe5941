// AVX2+FMA microkernels. This file alone is compiled with -mavx2 -mfma; it is entered only
// after the CPU check in isa.cpp.
//   float32: 6x16 (12 ymm accumulators, 2 loads of B and 6 broadcasts of A per k step), and
//            for m <= 4: 1x64, 2x40, 3x32, 4x24 (see TileTable::wide_nv).
//   float64: 6x8, and 1x32 .. 4x12.
#include <immintrin.h>

#include <utility>

#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

#include "vecmath/vectors_avx2.inc"

#include "microkernel_body.inc"

}  // namespace

KernelFamily<float> avx2_kernels_f32() {
  return make_family<F32x8, 6, 2, 4, 16>(Isa::avx2, "avx2 6x16");
}

KernelFamily<double> avx2_kernels_f64() {
  return make_family<F64x4, 6, 2, 4, 16>(Isa::avx2, "avx2 6x8");
}

}  // namespace densekit::gemm
