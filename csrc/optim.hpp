// Optimizer steps (SGD, Adam/AdamW/AMSGrad, RMSprop) and global-norm gradient clipping.
//
// Each step is one elementwise pass that updates a parameter and its state in place, following
// torch.optim's single-tensor formulas operation by operation: scalars (bias corrections, step
// sizes) are computed once in double, cast to the array's type, and the elementwise arithmetic
// runs in that type, so float32 results track torch's float32 ones. Every element is
// independent, so results are bitwise the same for any thread count. All arrays of one call
// hold n elements and must not overlap (the bindings check).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.hpp"

namespace densekit {

struct SgdHyper {
  double lr = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
  // torch starts the momentum buffer as a copy of the first gradient (ignoring dampening);
  // with first_step the velocity is overwritten that way instead of updated.
  bool first_step = false;
};

struct AdamHyper {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // AdamW: param *= 1 - lr * weight_decay first
  bool maximize = false;
  std::int64_t step = 1;  // 1-based count including this step; sets the bias corrections
};

struct RmspropHyper {
  double lr = 0.0;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  bool maximize = false;
};

// SGD with optional momentum/Nesterov: velocity may be null only when momentum == 0.
template <typename T>
void sgd_step(T* param, T* velocity, const T* grad, index_t n, const SgdHyper& hyper,
              int num_threads);

// Adam: m and v are the first and second moments; v_max (AMSGrad) may be null.
template <typename T>
void adam_step(T* param, T* m, T* v, T* v_max, const T* grad, index_t n, const AdamHyper& hyper,
               int num_threads);

// RMSprop: grad_avg is needed when centered, velocity when momentum > 0 (null otherwise).
template <typename T>
void rmsprop_step(T* param, T* square_avg, T* grad_avg, T* velocity, const T* grad, index_t n,
                  const RmspropHyper& hyper, int num_threads);

// One gradient array of a clipping call: exactly one of the pointers is set.
struct GradientView {
  float* float32 = nullptr;
  double* float64 = nullptr;
  index_t size = 0;
};

// sqrt of the sum of squares over all arrays, accumulated in double over fixed chunks added in
// a fixed order. Squares that overflow double are redone with a scale, so finite inputs give a
// finite norm; any inf or NaN element gives an inf or NaN norm.
double global_norm(const GradientView* grads, std::size_t count, int num_threads);

// Measures the global norm and, when it is finite and above max_norm, scales every array by
// max_norm / norm (TensorFlow's clip_by_global_norm). Returns the norm measured before scaling;
// a non-finite norm leaves the arrays untouched.
double clip_by_global_norm(const GradientView* grads, std::size_t count, double max_norm,
                           int num_threads);

}  // namespace densekit
