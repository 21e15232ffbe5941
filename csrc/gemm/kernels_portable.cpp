// Portable microkernels: the baseline ISA only (SSE2 on x86-64), through GCC/Clang vector
// extensions where available. No fma: each step rounds the product, then the sum
// (-ffp-contract=off keeps the compiler from fusing them). The fallback on any CPU.
//   float32: 6x8 (two 4-lane vectors per row), 1x32 .. 4x12 for m <= 4; float64: 6x4, 1x16 ..
#include <utility>

#include "float_bits.hpp"
#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

#include "vecmath/vectors_portable.inc"

#include "microkernel_body.inc"

}  // namespace

KernelFamily<float> portable_kernels_f32() {
  return make_family<Portable<float, 4>, 6, 2, 4, 16>(Isa::portable, "portable 6x8");
}

KernelFamily<double> portable_kernels_f64() {
  return make_family<Portable<double, 2>, 6, 2, 4, 16>(Isa::portable, "portable 6x4");
}

}  // namespace densekit::gemm
