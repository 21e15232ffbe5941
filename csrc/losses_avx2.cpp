// The losses' row kernels for avx2, compiled with -mavx2 -mfma and entered only after
// the CPU check in gemm/isa.cpp.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "exp_series.hpp"
#include "float_bits.hpp"
#include "loss_rows.hpp"

namespace densekit {
namespace {

#include "vecmath/vectors_avx2.inc"

using LossF32 = F32x8;
using LossF64 = F64x4;
using LossTailF32 = F32x8;
using LossTailF64 = F64x4;

#include "loss_rows.inc"

}  // namespace

LossKernels<float> avx2_loss_kernels_f32() { return make_loss_kernels<float>(); }
LossKernels<double> avx2_loss_kernels_f64() { return make_loss_kernels<double>(); }

}  // namespace densekit
