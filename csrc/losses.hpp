// Loss kernels: the reduced loss and its gradient with respect to the prediction in one pass.
//   Samples are rows: prediction and target are (n, d) for the elementwise losses (mse, mae,
//   huber, sigmoid binary and focal cross-entropy, mape, msle, log_cosh, poisson, hinge,
//   squared_hinge), whose per-sample loss is the mean over the d columns (Keras), the row
//   losses (kl_divergence: the sum over the row; categorical_hinge, cosine_similarity), and
//   logits are (n, c) for softmax cross-entropy, whose per-sample loss sums over the c
//   classes. sample_weight (n,) scales per-sample losses; "mean" divides the weighted
//   sum by n (not by the sum of weights, as Keras does).
// The total is accumulated in double over fixed chunks of rows added in order, so it is
// bitwise the same for every thread count; gradients are per element and need no reduction.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common.hpp"
#include "gemm/isa.hpp"

namespace densekit {

// The order here is the order of the LOSSES registry exposed to Python.
enum class LossKind {
  mse,
  mae,
  huber,
  softmax_cross_entropy,
  sigmoid_binary_cross_entropy,
  mape,
  msle,
  log_cosh,
  poisson,
  kl_divergence,
  hinge,
  squared_hinge,
  categorical_hinge,
  cosine_similarity,
  sigmoid_focal_cross_entropy,
  softmax_focal_cross_entropy,
};
constexpr LossKind kLossKinds[] = {
    LossKind::mse,           LossKind::mae,
    LossKind::huber,         LossKind::softmax_cross_entropy,
    LossKind::sigmoid_binary_cross_entropy,
    LossKind::mape,          LossKind::msle,
    LossKind::log_cosh,      LossKind::poisson,
    LossKind::kl_divergence, LossKind::hinge,
    LossKind::squared_hinge, LossKind::categorical_hinge,
    LossKind::cosine_similarity, LossKind::sigmoid_focal_cross_entropy,
    LossKind::softmax_focal_cross_entropy};
const char* loss_name(LossKind kind);

enum class Reduction { mean, sum, none };

struct LossOptions {
  Reduction reduction = Reduction::mean;
  double delta = 1.0;            // huber: quadratic for |error| <= delta, linear beyond
  double label_smoothing = 0.0;  // cross-entropies: t -> t (1 - ls) + ls / classes
  double alpha = 0.25;           // focal: the class balance (with apply_class_balancing)
  double gamma = 2.0;            // focal: the focusing exponent, >= 0
  bool apply_class_balancing = false;
};

// Every kernel below returns the reduced loss: sum_i w_i l_i, divided by n for "mean" (0 when
// n is 0). For "none" the return value is the sum and per_sample (n,) receives w_i l_i;
// per_sample is unused otherwise and may be null. grad (shaped like the prediction) receives
// the gradient of the returned loss ("none": of the sum); null computes the value only.
// sample_weight may be null (all ones).

// prediction, target and grad are (n, d); kind is any loss but softmax_cross_entropy.
template <typename T>
double elementwise_loss(T* grad, T* per_sample, const T* prediction, const T* target,
                        const T* sample_weight, index_t n, index_t d, LossKind kind,
                        const LossOptions& options, int num_threads);

// logits and grad are (n, c); labels (n,) are class indices in [0, c).
template <typename T, typename Label>
double softmax_cross_entropy_labels(T* grad, T* per_sample, const T* logits, const Label* labels,
                                    const T* sample_weight, index_t n, index_t c,
                                    const LossOptions& options, int num_threads);

// logits, target (class probabilities or one-hot rows) and grad are (n, c).
template <typename T>
double softmax_cross_entropy_probs(T* grad, T* per_sample, const T* logits, const T* target,
                                   const T* sample_weight, index_t n, index_t c,
                                   const LossOptions& options, int num_threads);

// out[j] = log(x[j]) (plus_one: log(1 + x[j])) for j < count, as the loss kernels of `isa`
// compute them (vecmath's vector_log over its vector type, the fma rounded twice): a test hook.
template <typename T>
void loss_log_with_isa(gemm::Isa isa, T* out, const T* x, index_t count, bool plus_one);

// Index of the first label outside [0, c), or -1 when all are valid.
template <typename Label>
index_t first_label_out_of_range(const Label* labels, index_t n, index_t c);

}  // namespace densekit
