// Portable microkernels: plain C++ the compiler vectorises for the baseline ISA (SSE2 on
// x86-64). They are the fallback and the model the ISA-specific kernels follow.
#include "microkernels.hpp"

namespace densekit::gemm {
namespace {

template <typename T, int MR, int NR>
void portable_kernel(index_t kc, const T* a, const T* b, T* tile) {
  T acc[MR][NR] = {};
  for (index_t p = 0; p < kc; ++p) {
    const T* ap = a + p * MR;
    const T* bp = b + p * NR;
    for (int i = 0; i < MR; ++i) {
      const T ai = ap[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bp[j];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) tile[i * NR + j] = acc[i][j];
}

}  // namespace

Microkernel<float> portable_microkernel_f32() {
  return {"portable 6x8", 6, 8, &portable_kernel<float, 6, 8>};
}

Microkernel<double> portable_microkernel_f64() {
  return {"portable 6x4", 6, 4, &portable_kernel<double, 6, 4>};
}

}  // namespace densekit::gemm
