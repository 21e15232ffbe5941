// The losses' row kernels for avx512, compiled with -mavx512f -mavx2 -mfma and entered only after
// the CPU check in gemm/isa.cpp.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized and -Wuninitialized (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "exp_series.hpp"
#include "float_bits.hpp"
#include "loss_rows.hpp"

namespace densekit {
namespace {

#include "vecmath/vectors_avx512.inc"

using LossF32 = F32x16;
using LossF64 = F64x8;
using LossTailF32 = F32x16;
using LossTailF64 = F64x8;

#include "loss_rows.inc"

}  // namespace

LossKernels<float> avx512_loss_kernels_f32() { return make_loss_kernels<float>(); }
LossKernels<double> avx512_loss_kernels_f64() { return make_loss_kernels<double>(); }

}  // namespace densekit
