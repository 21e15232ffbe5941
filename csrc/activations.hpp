// Activations: the array kernels (forward, backward) for float and double. The registry
// (names, alpha, which derivative) is the table in activation_table.hpp; the scalar forms are
// in vecmath/scalar_activations.hpp, the vector forms in vecmath/.
//
// Softmax and log_softmax act on each row (the last axis); every other activation is
// elementwise. Derivatives come from the output y where it determines them (the table's
// from_output column) and from the pre-activation z otherwise.
#pragma once

#include "activation_table.hpp"
#include "common.hpp"
#include "vecmath/scalar_activations.hpp"

namespace densekit {

// y = f(z); z and y are (rows, cols), softmax and log_softmax over each row. y may equal z (in place).
template <typename T>
void activation_forward(T* y, const T* z, index_t rows, index_t cols, const Activation& act,
                        int num_threads);

// dz = dy * f'(.) (softmax: the row Jacobian-vector product). Needs y when
// derivative_from_output(act) and z is null; otherwise z. dz may equal dy (in place).
template <typename T>
void activation_backward(T* dz, const T* dy, const T* y, const T* z, index_t rows, index_t cols,
                         const Activation& act, int num_threads);

// Keras's relu with its three parameters (keras.activations.relu, the ReLU layer), for the
// combinations no table activation computes:
//   y = min(z, max_value)                     for z > threshold
//   y = 0 - negative_slope * (threshold - z)  for z < threshold (0 when the slope is 0)
//   y = 0                                     for z == threshold; NaN stays NaN
// max_value is +inf for no cap. The derivative (from z) is 1 for threshold < z <= max_value,
// negative_slope for z < threshold and 0 elsewhere (at the threshold, above the cap, NaN).
struct ReluParameters {
  double max_value = 0.0;
  double negative_slope = 0.0;
  double threshold = 0.0;
};

// y = relu(z) elementwise over count values. y may equal z (in place).
template <typename T>
void relu_forward(T* y, const T* z, index_t count, const ReluParameters& relu, int num_threads);

// dz = dy * relu'(z) elementwise. dz may equal dy (in place).
template <typename T>
void relu_backward(T* dz, const T* dy, const T* z, index_t count, const ReluParameters& relu,
                   int num_threads);

// Row softmax of a (rows, cols) block of `in` with leading dimension ld into `out` (out may
// be in), one thread.
template <typename T>
void softmax_rows(T* out, const T* in, index_t rows, index_t cols, index_t ld);

// Row log-softmax, (z - max) - log(sum exp(z - max)), likewise.
template <typename T>
void log_softmax_rows(T* out, const T* in, index_t rows, index_t cols, index_t ld);

}  // namespace densekit
