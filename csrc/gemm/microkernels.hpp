// Microkernel descriptors. A microkernel computes the mr x nr tile
//   tile[i * nr + j] = sum_{p < kc} a[p * mr + i] * b[p * nr + j]
// from packed panels (a: kc columns of mr values, b: kc rows of nr values), summing p in
// increasing order. Variants are named by ISA and tile shape.
#pragma once

#include "common.hpp"

namespace densekit::gemm {

template <typename T>
using MicrokernelFn = void (*)(index_t kc, const T* a, const T* b, T* tile);

template <typename T>
struct Microkernel {
  const char* name;
  int mr;
  int nr;
  MicrokernelFn<T> fn;
};

Microkernel<float> portable_microkernel_f32();
Microkernel<double> portable_microkernel_f64();

}  // namespace densekit::gemm
