// The scalar form of every activation: y = f(z) and f'(z) from z or from y, in T. The
// reference the vector math follows (vecmath/vector_math.inc), the fallback where a family
// has none, and the epilogue of the matrix-product paths that do not vectorise.
#pragma once

#include <algorithm>
#include <cmath>

#include "activation_table.hpp"

namespace densekit {

namespace scalar {

// The ReLU layer's function (Keras's ReLU(max_value, negative_slope, threshold)): z above the
// threshold, capped at cap; slope * (z - threshold) below it (0 for a zero slope, even at z =
// -inf); 0 at the threshold; NaN kept. Selects only, no branch: the loops over it vectorise.
template <typename T>
inline T relu_parametric(T v, T cap, T slope, T threshold) {
  const T above = v < cap ? v : cap;
  const T below = slope != T(0) ? T(0) - slope * (threshold - v) : T(0);
  const T rest = v == v ? T(0) : v;  // at the threshold 0, NaN kept
  return v > threshold ? above : (v < threshold ? below : rest);
}

// relu_parametric's derivative: 1 above the threshold up to the cap (1 at the cap itself),
// slope below the threshold, 0 at it, above the cap and at NaN (every comparison false).
// Selects only, as relu_parametric: the loops over it vectorise.
template <typename T>
inline T relu_parametric_derivative(T v, T cap, T slope, T threshold) {
  const T inside = v <= cap ? T(1) : T(0);
  const T below = v < threshold ? slope : T(0);
  return v > threshold ? inside : below;
}

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

// selu's constants (Klambauer et al. 2017, as torch and Keras): selu(z) = scale z for z > 0,
// scale alpha expm1(z) otherwise, with scale alpha formed once as torch does.
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluScaleAlpha = kSeluScale * kSeluAlpha;

// min(max(z, 0), 6), NaN kept (as torch.relu6).
template <typename T>
inline T relu6(T z) {
  const T r = relu(z);
  return r < T(6) || r != r ? r : T(6);
}

// mish(z) = z tanh(softplus(z)), with tanh(log(1 + e)) = n / (n + 2), n = e (e + 2), e =
// exp(z): no cancellation at either end. z is capped at 20 (float64 40), where n / (n + 2)
// already rounds to 1 and its derivative's second term is below 1e-15 (1e-32) of the first,
// so n never overflows; above the cap that term is 0.
template <typename T>
constexpr T mish_cap() {
  return T(sizeof(T) == 8 ? 40 : 20);
}

template <typename T>
inline T mish_ratio(T z, T* n_out) {
  const T e = std::exp(std::min(z, mish_cap<T>()));
  const T n = e * (e + T(2));
  *n_out = n;
  return n / (n + T(2));
}

// mish'(z) = t + z sigmoid(z) (1 - t^2), t = n / (n + 2), 1 - t^2 = 4 (n + 1) / (n + 2)^2.
template <typename T>
inline T mish_derivative(T z) {
  T n;
  const T t = mish_ratio(z, &n);
  if (z > mish_cap<T>()) return t;
  const T d = n + T(2);
  return t + z * sigmoid(z) * (T(4) * (n + T(1)) / (d * d));
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
    case ActivationKind::silu: return z * sigmoid(z);
    case ActivationKind::selu:
      return z > T(0) ? T(kSeluScale) * z : T(kSeluScaleAlpha) * std::expm1(z);
    case ActivationKind::relu6: return relu6(z);
    case ActivationKind::hard_sigmoid: return relu6(z + T(3)) / T(6);
    case ActivationKind::softsign: return z / (T(1) + std::abs(z));
    case ActivationKind::mish: {
      T n;
      return z * mish_ratio(z, &n);
    }
    case ActivationKind::log_softmax: return z;  // not elementwise
    case ActivationKind::exponential: return std::exp(z);
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
    case ActivationKind::silu: {
      const T s = sigmoid(z);
      return s * (T(1) + z * sigmoid(-z));  // sigmoid(-z) = 1 - s without cancellation
    }
    case ActivationKind::selu:
      return z > T(0) ? T(kSeluScale) : T(kSeluScaleAlpha) * std::exp(z);
    case ActivationKind::relu6: return static_cast<T>((z > T(0)) & (z < T(6)));
    case ActivationKind::hard_sigmoid:
      return static_cast<T>((z > T(-3)) & (z < T(3))) * (T(1) / T(6));
    case ActivationKind::softsign: {
      const T u = T(1) + std::abs(z);
      return T(1) / (u * u);
    }
    case ActivationKind::mish: return mish_derivative(z);
    case ActivationKind::log_softmax: return T(1);  // not elementwise
    case ActivationKind::exponential: return std::exp(z);
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
    // The flat ends are exactly 0 and 6 (1): inside them the slope is 1 (1/6), as torch's
    // strict bounds on z.
    // (bitwise & and a selection: no branch and no bool-to-double conversion, which SSE2
    // lacks, so the loops vectorise in both dtypes)
    case ActivationKind::relu6: return (y > T(0)) & (y < T(6)) ? T(1) : T(0);
    case ActivationKind::hard_sigmoid: return (y > T(0)) & (y < T(1)) ? T(1) / T(6) : T(0);
    case ActivationKind::exponential: return y;
    default: return T(1);
  }
}

}  // namespace scalar

}  // namespace densekit
