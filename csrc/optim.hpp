// Optimizer steps (SGD, Adam/AdamW/AMSGrad, RMSprop, NAdam, Adamax, Adagrad, Lion) and
// global-norm gradient clipping.
//
// Each step is one elementwise pass that updates a parameter and its state in place. Where
// torch.optim and Keras 3 disagree, a step follows either rule exactly, chosen by its
// Convention: torch's single-tensor formulas operation by operation, or Keras's (its torch
// backend's operation order, weight decay always decoupled and applied first). Scalars (bias
// corrections, step sizes) are computed once in double, cast to the array's type, and the
// elementwise arithmetic runs in that type, so float32 results track the float32 ones of both.
// Every element is independent, so results are bitwise the same for any thread count. All
// arrays of one call hold n elements and must not overlap (the bindings check).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common.hpp"

namespace densekit {

// Whose update rule a step follows where torch.optim and Keras 3 differ.
//   torch: torch.optim's formulas; weight_decay is coupled (added to the gradient) except where
//          decoupled_weight_decay says otherwise.
//   keras: Keras 3's formulas; weight_decay is decoupled (param *= 1 - lr * weight_decay before
//          the update), the only form Keras has.
enum class Convention { torch, keras };

struct SgdHyper {
  Convention convention = Convention::torch;
  double lr = 0.0;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
  // torch starts the momentum buffer as a copy of the first gradient (ignoring dampening);
  // with first_step the velocity is overwritten that way instead of updated (torch only: Keras's
  // velocity holds -lr * g and starts at zeros, which its rule needs no special case for).
  bool first_step = false;
};

struct AdamHyper {
  Convention convention = Convention::torch;
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
  Convention convention = Convention::torch;
  double lr = 0.0;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  bool maximize = false;
};

// NAdam (Dozat's Nesterov Adam with the momentum schedule mu_t = beta1 * (1 - 0.5 *
// 0.96^(t * momentum_decay)); Keras's schedule is momentum_decay = 1, torch's default 0.004).
struct NadamHyper {
  Convention convention = Convention::torch;
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool decoupled_weight_decay = false;  // always true with Convention::keras
  double momentum_decay = 0.004;
  bool maximize = false;
  std::int64_t step = 1;
  // mu_1 * ... * mu_{step-1}, as the caller kept it from the previous call's return value; NaN
  // recomputes it from the step count (nadam_mu_product).
  double mu_product = 1.0;
};

struct AdamaxHyper {
  Convention convention = Convention::torch;
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool maximize = false;
  std::int64_t step = 1;
};

struct AdagradHyper {
  Convention convention = Convention::torch;
  double lr = 0.0;
  double lr_decay = 0.0;  // torch only: the rate at step t is lr / (1 + (t - 1) * lr_decay)
  double eps = 1e-10;
  double weight_decay = 0.0;
  bool maximize = false;
  std::int64_t step = 1;
};

// Lion (Chen et al. 2023): one rule (Keras's; torch has no Lion), weight decay decoupled.
struct LionHyper {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.99;
  double weight_decay = 0.0;
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

// NAdam: m and v are the first and second moments. Returns mu_1 * ... * mu_step, rounded as
// the convention keeps it (torch: float32, its default scalar dtype; Keras: T), for the next
// call.
template <typename T>
double nadam_step(T* param, T* m, T* v, const T* grad, index_t n, const NadamHyper& hyper,
                  int num_threads);

// Adamax: m is the first moment, u the exponentially weighted infinity norm.
template <typename T>
void adamax_step(T* param, T* m, T* u, const T* grad, index_t n, const AdamaxHyper& hyper,
                 int num_threads);

// Adagrad: sum accumulates the squared gradients (the caller sets its initial value).
template <typename T>
void adagrad_step(T* param, T* sum, const T* grad, index_t n, const AdagradHyper& hyper,
                  int num_threads);

// Lion: m is the momentum.
template <typename T>
void lion_step(T* param, T* m, const T* grad, index_t n, const LionHyper& hyper,
               int num_threads);

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
