// The optimizer steps (optim_steps.inc) built for the avx2 ISA (-mavx2 -mfma; this file
// alone has its flags), entered only after the CPU check in gemm/isa.cpp.
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

OptimKernels<float> avx2_optim_kernels_f32() { return make_optim_kernels<float>(); }
OptimKernels<double> avx2_optim_kernels_f64() { return make_optim_kernels<double>(); }

}  // namespace densekit
