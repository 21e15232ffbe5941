// Dense (fully connected) layer, forward and backward, in Keras layout.
//   x is (n, k): n samples of k input features; w is (k, m); b is (m,); y is (n, m).
// Forward computes y = act(x @ w + b) with bias and activation applied in the product's
// output pass. Backward computes dz = dy * act'(.), dx = dz @ w^T, dw = x^T @ dz and
// db = sum over rows of dz; dw/db may accumulate into existing values.
#pragma once

#include "activations.hpp"
#include "common.hpp"
#include "gemm/gemm.hpp"

namespace densekit {

// preact (n, m) may be null; when given it receives x @ w + b.
// packed_w, when given, is w packed by pack_weights (read instead of packing w where that
// pays; w must still be given); the result has the same bits either way.
template <typename T>
void dense_forward(T* y, T* preact, const T* x, const T* w, const T* b, index_t n, index_t k,
                   index_t m, const Activation& act, int num_threads,
                   const gemm::PackedB<T>* packed_w = nullptr);

// w (k, m) packed for dense_forward on the kernels in use (gemm::pack_b): for inference on
// batches of up to ~300 rows with weights up to 16 MiB (see csrc/gemm/README.md); it is a
// copy, to be made again when w changes.
template <typename T>
gemm::PackedB<T> pack_weights(const T* w, index_t k, index_t m, int num_threads);

// dx (n, k), dw (k, m), db (m,) may each be null (not computed). y and preact (n, m) may be
// null where the activation does not need them (see derivative_from_output).
template <typename T>
void dense_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                    const T* preact, index_t n, index_t k, index_t m, const Activation& act,
                    bool accumulate, int num_threads);

// db (m,) = the column sums of dz (n, m), [+]= into db: per column in row order, in double,
// so the result does not depend on the thread count.
template <typename T>
void dense_bias_gradient(T* db, const T* dz, index_t n, index_t m, bool accumulate,
                         int num_threads);

namespace lowp {
struct PackedInt8;
struct Bf16DenseWeights;
}  // namespace lowp

// One step of an inference chain: y = act(x @ w + b) with w (k, m); or, in a float32 chain,
// with int8 set, the int8 layer of those packed weights (lowp::dense_int8), or with bf16 set,
// the bf16 layer (lowp::dense_forward_bf16); or, with none, the activation alone (m == k).
// b may be null.
template <typename T>
struct DenseStep {
  const T* w = nullptr;
  const lowp::PackedInt8* int8 = nullptr;
  const lowp::Bf16DenseWeights* bf16 = nullptr;
  const T* b = nullptr;
  index_t k = 0;
  index_t m = 0;
  Activation act;
};

// y (n, steps[count - 1].m) = the steps applied in order to x (n, steps[0].k): a model's
// inference in one call. Intermediate outputs live in scratch memory of the calling thread
// (kept between calls), so a batch-1 predict pays no allocation and no crossing per layer.
// Every step gives the bits its own kernel gives (dense_forward, dense_forward_int8,
// dense_forward_bf16, activation_forward).
template <typename T>
void dense_chain_forward(T* y, const T* x, index_t n, const DenseStep<T>* steps, int count,
                         int num_threads);

}  // namespace densekit
