// Normalization layers, forward and backward, in Keras layout: x is (n, k), n samples of k
// features. Batch normalization normalizes each feature over the rows (training: the batch's
// mean and biased variance; inference: the moving statistics), layer normalization each row
// over its features, Keras's Normalization layer each feature by fixed statistics.
// Reductions over rows go through fixed row chunks summed in chunk order (accumulated in
// double), reductions over a row stay on one thread, so results do not depend on threads.
// gamma and beta may be null (no scale, no center); outputs that are null are not computed.
#pragma once

#include "common.hpp"

namespace densekit {

// mean (k,) and biased variance (k,) of the columns of x (n, k); two passes (mean first,
// then the squared deviations). n == 0 gives NaN.
template <typename T>
void feature_moments(T* mean, T* variance, const T* x, index_t n, index_t k, int num_threads);

// y = (x - mean) / sqrt(variance + epsilon) * gamma + beta per feature. Training: mean and
// variance are the batch's, written to batch_mean / batch_variance (k,); inference: they are
// the moving statistics (batch_mean / batch_variance unused).
template <typename T>
void batch_norm_forward(T* y, T* batch_mean, T* batch_variance, const T* x, const T* gamma,
                        const T* beta, const T* moving_mean, const T* moving_variance,
                        index_t n, index_t k, double epsilon, bool training, int num_threads);

// Gradients of batch_norm_forward. mean and variance are the statistics the forward pass
// normalized with (the batch's in training, the moving ones in inference; in inference the
// statistics are constants, so dx = dy * gamma / sqrt(variance + epsilon)).
template <typename T>
void batch_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                         const T* mean, const T* variance, index_t n, index_t k, double epsilon,
                         bool training, int num_threads);

// moving = moving * momentum + value * (1 - momentum) for k values (Keras's update of the
// moving statistics).
template <typename T>
void moving_average_update(T* moving, const T* value, index_t k, double momentum);

// y = (x - mean_i) / sqrt(var_i + epsilon) * gamma + beta, mean_i and var_i (biased) over
// row i's k features. mean (n,) and inv_std (n,), when given, receive the row's mean and
// 1 / sqrt(var_i + epsilon) for the backward pass.
template <typename T>
void layer_norm_forward(T* y, T* mean, T* inv_std, const T* x, const T* gamma, const T* beta,
                        index_t n, index_t k, double epsilon, int num_threads);

// Gradients of layer_norm_forward from the saved mean and inv_std (n,).
template <typename T>
void layer_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                         const T* mean, const T* inv_std, index_t n, index_t k,
                         int num_threads);

// Keras's Normalization: y = (x - mean) / max(sqrt(variance), 1e-7) per feature, or with
// invert, y = mean + x * max(sqrt(variance), 1e-7).
template <typename T>
void normalization_forward(T* y, const T* x, const T* mean, const T* variance, index_t n,
                           index_t k, bool invert, int num_threads);

// dx = dy / max(sqrt(variance), 1e-7) (invert: dy * max(sqrt(variance), 1e-7)).
template <typename T>
void normalization_backward(T* dx, const T* dy, const T* variance, index_t n, index_t k,
                            bool invert, int num_threads);

}  // namespace densekit
