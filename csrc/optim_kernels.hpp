// The optimizer steps of one ISA (optim_steps.inc built by optim_portable.cpp, optim_avx2.cpp
// and optim_avx512.cpp, each with its own flags); optim.cpp picks the table of the float32
// engine's ISA. Each entry has the signature and contract of the step of that name in optim.hpp.
#pragma once

#include "common.hpp"
#include "optim.hpp"

namespace densekit {

// NaN-propagating maximum, as torch.maximum.
template <typename T>
T nan_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}

template <typename T>
struct OptimKernels {
  void (*sgd)(T* param, T* velocity, const T* grad, index_t n, const SgdHyper& hyper,
              int num_threads) = nullptr;
  void (*adam)(T* param, T* m, T* v, T* v_max, const T* grad, index_t n, const AdamHyper& hyper,
               int num_threads) = nullptr;
  void (*rmsprop)(T* param, T* square_avg, T* grad_avg, T* velocity, const T* grad, index_t n,
                  const RmspropHyper& hyper, int num_threads) = nullptr;
  double (*nadam)(T* param, T* m, T* v, const T* grad, index_t n, const NadamHyper& hyper,
                  int num_threads) = nullptr;
  void (*adamax)(T* param, T* m, T* u, const T* grad, index_t n, const AdamaxHyper& hyper,
                 int num_threads) = nullptr;
  void (*adagrad)(T* param, T* sum, const T* grad, index_t n, const AdagradHyper& hyper,
                  int num_threads) = nullptr;
  void (*lion)(T* param, T* m, const T* grad, index_t n, const LionHyper& hyper,
               int num_threads) = nullptr;
};

OptimKernels<float> portable_optim_kernels_f32();
OptimKernels<double> portable_optim_kernels_f64();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
OptimKernels<float> avx2_optim_kernels_f32();
OptimKernels<double> avx2_optim_kernels_f64();
OptimKernels<float> avx512_optim_kernels_f32();
OptimKernels<double> avx512_optim_kernels_f64();
#endif

}  // namespace densekit
