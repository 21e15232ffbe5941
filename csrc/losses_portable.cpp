// The losses' row kernels at the baseline ISA (no ISA flags): the fallback on any CPU.
#include <cmath>
#include <cstdint>
#include <limits>

#include "exp_series.hpp"
#include "float_bits.hpp"
#include "loss_rows.hpp"

namespace densekit {
namespace {

#include "vecmath/vectors_portable.inc"

using LossF32 = Portable<float, 4>;
using LossF64 = Portable<double, 2>;
using LossTailF32 = Portable<float, 1>;
using LossTailF64 = Portable<double, 1>;

#include "loss_rows.inc"

}  // namespace

LossKernels<float> portable_loss_kernels_f32() { return make_loss_kernels<float>(); }
LossKernels<double> portable_loss_kernels_f64() { return make_loss_kernels<double>(); }

}  // namespace densekit
