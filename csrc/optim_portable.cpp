// The optimizer steps (optim_steps.inc) built at the baseline ISA: every CPU's fallback.
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

#include "optim_kernels.hpp"
#include "parallel.hpp"

namespace densekit {
namespace {
#include "optim_steps.inc"
}  // namespace

OptimKernels<float> portable_optim_kernels_f32() { return make_optim_kernels<float>(); }
OptimKernels<double> portable_optim_kernels_f64() { return make_optim_kernels<double>(); }

}  // namespace densekit
