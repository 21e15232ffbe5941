// The scalar form of every activation: y = f(z) and f'(z) from z or from y, in T. The
// reference the vector math follows (vecmath/vector_math.inc), the fallback where a family
// has none, and the epilogue of the matrix-product paths that do not vectorise.
#pragma once

#include <algorithm>
#include <cmath>

#include "activation_table.hpp"

namespace densekit {

namespace scalar {

template <typename T>
inline T sigmoid(T z) {
  if (z >= T(0)) return T(1) / (T(1) + std::exp(-z));
  const T e = std::exp(z);
  return e / (T(1) + e);
}

template <typename T>
inline T softplus(T z) {
  return std::max(z, T(0)) + std::log1p(std::exp(-std::abs(z)));
}

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kGeluCubic = 0.044715;

// The Gaussian CDF through erfc keeps full relative accuracy in the negative tail, where
// 1 + erf(x) cancels.
template <typename T>
inline T gelu(T z) {
  return T(0.5) * z * std::erfc(-z * T(kInvSqrt2));
}

template <typename T>
inline T gelu_derivative(T z) {
  const T cdf = T(0.5) * std::erfc(-z * T(kInvSqrt2));
  const T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * z * z);
  return cdf + z * pdf;
}

// 0.5 (1 + tanh(u)) written as sigmoid(2u), again to avoid cancellation in the tail.
template <typename T>
inline T gelu_tanh(T z) {
  const T inner = T(kSqrt2OverPi) * (z + T(kGeluCubic) * z * z * z);
  return z * sigmoid(T(2) * inner);
}

template <typename T>
inline T gelu_tanh_derivative(T z) {
  const T inner = T(kSqrt2OverPi) * (z + T(kGeluCubic) * z * z * z);
  const T s = sigmoid(T(2) * inner);
  const T dinner = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * z * z);
  return s + T(2) * z * s * (T(1) - s) * dinner;
}

// max(z, 0) that keeps NaN (as torch.relu does): a NaN pre-activation must not vanish into a
// finite output. -0 and negatives give +0.
template <typename T>
inline T relu(T z) {
  return z > T(0) || z != z ? z : T(0);
}

// y = f(z) for every elementwise activation (softmax is handled per row elsewhere).
template <typename T>
inline T forward(ActivationKind kind, T alpha, T z) {
  switch (kind) {
    case ActivationKind::linear: return z;
    case ActivationKind::relu: return relu(z);
    case ActivationKind::leaky_relu: return z > T(0) ? z : alpha * z;
    case ActivationKind::elu: return z > T(0) ? z : alpha * std::expm1(z);
    case ActivationKind::sigmoid: return sigmoid(z);
    case ActivationKind::tanh: return std::tanh(z);
    case ActivationKind::softplus: return softplus(z);
    case ActivationKind::gelu: return gelu(z);
    case ActivationKind::gelu_tanh: return gelu_tanh(z);
    case ActivationKind::softmax: return z;  // not elementwise
  }
  return z;
}

// f'(z) from the pre-activation.
template <typename T>
inline T derivative_from_z(ActivationKind kind, T alpha, T z) {
  switch (kind) {
    case ActivationKind::linear: return T(1);
    case ActivationKind::relu: return z > T(0) ? T(1) : T(0);
    case ActivationKind::leaky_relu: return z > T(0) ? T(1) : alpha;
    case ActivationKind::elu: return z > T(0) ? T(1) : alpha * std::exp(z);
    case ActivationKind::sigmoid: {
      const T s = sigmoid(z);
      return s * (T(1) - s);
    }
    case ActivationKind::tanh: {
      const T t = std::tanh(z);
      return T(1) - t * t;
    }
    case ActivationKind::softplus: return sigmoid(z);
    case ActivationKind::gelu: return gelu_derivative(z);
    case ActivationKind::gelu_tanh: return gelu_tanh_derivative(z);
    case ActivationKind::softmax: return T(1);  // not elementwise
  }
  return T(1);
}

// f'(z) from the output, valid where derivative_from_output() is true.
template <typename T>
inline T derivative_from_y(ActivationKind kind, T alpha, T y) {
  switch (kind) {
    case ActivationKind::relu: return y > T(0) ? T(1) : T(0);
    case ActivationKind::leaky_relu: return y > T(0) ? T(1) : alpha;
    case ActivationKind::sigmoid: return y * (T(1) - y);
    case ActivationKind::tanh: return T(1) - y * y;
    default: return T(1);
  }
}

}  // namespace scalar

}  // namespace densekit
