// Loss kernels. Each row (sample) is handled by one thread from start to end; rows are grouped
// into fixed chunks whose partial sums chunked_sum adds in order. Inside a row, sums run over
// kLanes interleaved partial sums folded in a fixed order: the compiler can vectorise them
// without -ffast-math, and the value-only and fused paths perform the same additions.
#include "losses.hpp"

#include <limits>
#include <string>

#include "activations.hpp"
#include "parallel.hpp"

namespace densekit {
namespace {

constexpr int kLanes = 8;
// Rows per chunk are chosen so a chunk holds about this many elements: large enough to
// amortise a task, small enough to spread rows over threads. Depends on the shape only.
constexpr index_t kChunkElements = index_t{1} << 14;
// Below about two chunks' worth of elements a call stays on the calling thread.
constexpr double kGrainElements = 32768.0;

// Sum of f(j) for j in [0, count) in kLanes interleaved partial sums folded pairwise.
template <class F>
inline double lane_sum(index_t count, F&& f) {
  if (count == 1) return f(index_t{0});
  double lanes[kLanes] = {};
  index_t j = 0;
  for (; j + kLanes <= count; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] += f(j + k);
  for (int k = 0; j + k < count; ++k) lanes[k] += f(j + k);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

// Reduced loss over n rows of `cols` elements; rows(begin, end) returns the rows' sum.
template <class Rows>
double reduce_rows(index_t n, index_t cols, const LossOptions& options, int num_threads,
                   Rows&& rows) {
  if (n <= 0) return 0.0;
  const index_t width = std::max<index_t>(cols, 1);
  const index_t chunk = std::max<index_t>(1, kChunkElements / width);
  const int threads =
      threads_for_work(num_threads, static_cast<double>(n) * static_cast<double>(width),
                       kGrainElements);
  const double total = chunked_sum(n, chunk, threads, rows);
  return options.reduction == Reduction::mean ? total / static_cast<double>(n) : total;
}

// The factor turning a weight w_i into d(returned loss)/d(w_i l_i).
double reduction_scale(index_t n, const LossOptions& options) {
  return options.reduction == Reduction::mean && n > 0 ? 1.0 / static_cast<double>(n) : 1.0;
}

// ---- Elementwise losses: value(p, t) and, fused, its derivative with respect to p. ----

struct SquaredError {
  double value(double p, double t) const {
    const double e = p - t;
    return e * e;
  }
  double value_and_derivative(double p, double t, double* derivative) const {
    const double e = p - t;
    *derivative = 2.0 * e;
    return e * e;
  }
};

// The derivative of |e| is sign(e), 0 at 0 (as torch and Keras), NaN for NaN.
inline double sign_of(double e) { return e > 0.0 ? 1.0 : (e < 0.0 ? -1.0 : e); }

struct AbsoluteError {
  double value(double p, double t) const { return std::abs(p - t); }
  double value_and_derivative(double p, double t, double* derivative) const {
    const double e = p - t;
    *derivative = sign_of(e);
    return std::abs(e);
  }
};

struct Huber {
  double delta;
  double value(double p, double t) const {
    const double a = std::abs(p - t);
    return a <= delta ? 0.5 * a * a : delta * (a - 0.5 * delta);
  }
  double value_and_derivative(double p, double t, double* derivative) const {
    const double e = p - t;
    *derivative = std::min(std::max(e, -delta), delta);  // NaN stays NaN
    return value(p, t);
  }
};

// Logit z, target t smoothed to t (1 - ls) + ls / 2. The loss is written so that exp never
// overflows: max(z, 0) - z t + log1p(exp(-|z|)); its derivative is sigmoid(z) - t.
struct SigmoidCrossEntropy {
  double keep;   // 1 - ls
  double shift;  // ls / 2
  double value(double z, double t) const {
    const double tt = t * keep + shift;
    return std::max(z, 0.0) - z * tt + std::log1p(std::exp(-std::abs(z)));
  }
  double value_and_derivative(double z, double t, double* derivative) const {
    const double tt = t * keep + shift;
    const double e = std::exp(-std::abs(z));
    const double sigmoid = z >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
    *derivative = sigmoid - tt;
    return std::max(z, 0.0) - z * tt + std::log1p(e);
  }
};

template <typename T, bool with_grad, class Op>
double elementwise_rows(T* grad, T* per_sample, const T* prediction, const T* target,
                        const T* sample_weight, index_t begin, index_t end, index_t d,
                        double scale, const Op& op) {
  const double inv_d = 1.0 / static_cast<double>(d);
  double total = 0.0;
  for (index_t i = begin; i < end; ++i) {
    const T* p = prediction + i * d;
    const T* t = target + i * d;
    const double w = sample_weight != nullptr ? static_cast<double>(sample_weight[i]) : 1.0;
    double row;
    if constexpr (with_grad) {
      T* g = grad + i * d;
      const double factor = w * scale * inv_d;
      row = lane_sum(d, [&](index_t j) {
        double derivative;
        const double v = op.value_and_derivative(p[j], t[j], &derivative);
        g[j] = static_cast<T>(factor * derivative);
        return v;
      });
    } else {
      row = lane_sum(d, [&](index_t j) { return op.value(p[j], t[j]); });
    }
    const double loss = w * (row * inv_d);
    if (per_sample != nullptr) per_sample[i] = static_cast<T>(loss);
    total += loss;
  }
  return total;
}

template <typename T, class Op>
double elementwise_run(T* grad, T* per_sample, const T* prediction, const T* target,
                       const T* sample_weight, index_t n, index_t d, const Op& op,
                       const LossOptions& options, int num_threads) {
  if (d == 0) {  // an empty mean: every per-sample loss is 0, as with divide_no_nan
    if (per_sample != nullptr) std::fill(per_sample, per_sample + n, T(0));
    return 0.0;
  }
  const double scale = reduction_scale(n, options);
  return reduce_rows(n, d, options, num_threads, [&](index_t begin, index_t end) {
    if (grad != nullptr)
      return elementwise_rows<T, true>(grad, per_sample, prediction, target, sample_weight,
                                       begin, end, d, scale, op);
    return elementwise_rows<T, false>(grad, per_sample, prediction, target, sample_weight, begin,
                                      end, d, scale, op);
  });
}

// ---- Softmax cross-entropy: one row at a time, the row staying in cache between sweeps. ----
// Sweep 1 finds the row maximum m; sweep 2 computes e_j = exp(z_j - m), their sum s (and the
// target sums), storing e_j in the gradient row; sweep 3 turns e_j into the gradient in place.
// With t the smoothed target and T = sum_j t_j, the loss is sum_j t_j (m - z_j) + T log s and
// the gradient scale * (T e_j / s - t_j).

template <typename T>
inline T row_max(const T* z, index_t c) {
  T lanes[kLanes];
  for (T& lane : lanes) lane = -std::numeric_limits<T>::infinity();
  index_t j = 0;
  for (; j + kLanes <= c; j += kLanes)
    for (int k = 0; k < kLanes; ++k) lanes[k] = z[j + k] > lanes[k] ? z[j + k] : lanes[k];
  for (int k = 0; j + k < c; ++k) lanes[k] = z[j + k] > lanes[k] ? z[j + k] : lanes[k];
  T m = lanes[0];
  for (int k = 1; k < kLanes; ++k) m = lanes[k] > m ? lanes[k] : m;
  return m;
}

// s = sum_j exp(z_j - m); with a gradient row, e_j is stored there for sweep 3.
template <typename T, bool with_grad>
inline double exp_sum(T* e, const T* z, T m, index_t c) {
  return lane_sum(c, [&](index_t j) {
    const T value = std::exp(z[j] - m);
    if constexpr (with_grad) e[j] = value;
    return static_cast<double>(value);
  });
}

// Smoothing of one row: t -> t keep + spread.
struct Smoothing {
  double keep;    // 1 - ls
  double spread;  // ls / c
};

template <typename T, bool with_grad, typename Label>
double softmax_label_rows(T* grad, T* per_sample, const T* logits, const Label* labels,
                          const T* sample_weight, index_t begin, index_t end, index_t c,
                          double scale, Smoothing smoothing) {
  double total = 0.0;
  for (index_t i = begin; i < end; ++i) {
    const T* z = logits + i * c;
    T* g = with_grad ? grad + i * c : nullptr;
    const index_t label = static_cast<index_t>(labels[i]);
    const T m = row_max(z, c);
    const double s = exp_sum<T, with_grad>(g, z, m, c);
    const double log_s = std::log(s);
    const double md = static_cast<double>(m);
    // sum_j t_j (m - z_j) with t = keep one_hot(label) + spread.
    double gap = smoothing.keep * (md - static_cast<double>(z[label]));
    if (smoothing.spread != 0.0)
      gap += smoothing.spread * lane_sum(c, [&](index_t j) { return md - double(z[j]); });
    const double target_sum = smoothing.keep + smoothing.spread * static_cast<double>(c);
    const double w = sample_weight != nullptr ? static_cast<double>(sample_weight[i]) : 1.0;
    const double loss = w * (gap + target_sum * log_s);
    if constexpr (with_grad) {
      const double factor = w * scale;
      const T softmax_factor = static_cast<T>(factor * target_sum / s);
      const T offset = static_cast<T>(factor * smoothing.spread);
      for (index_t j = 0; j < c; ++j) g[j] = g[j] * softmax_factor - offset;
      g[label] -= static_cast<T>(factor * smoothing.keep);
    }
    if (per_sample != nullptr) per_sample[i] = static_cast<T>(loss);
    total += loss;
  }
  return total;
}

template <typename T, bool with_grad>
double softmax_prob_rows(T* grad, T* per_sample, const T* logits, const T* target,
                         const T* sample_weight, index_t begin, index_t end, index_t c,
                         double scale, Smoothing smoothing) {
  double total = 0.0;
  for (index_t i = begin; i < end; ++i) {
    const T* z = logits + i * c;
    const T* t = target + i * c;
    T* g = with_grad ? grad + i * c : nullptr;
    const T m = row_max(z, c);
    const double s = exp_sum<T, with_grad>(g, z, m, c);
    const double log_s = std::log(s);
    const double md = static_cast<double>(m);
    const double target_sum = lane_sum(c, [&](index_t j) {
      return static_cast<double>(t[j]) * smoothing.keep + smoothing.spread;
    });
    const double gap = lane_sum(c, [&](index_t j) {
      const double tj = static_cast<double>(t[j]) * smoothing.keep + smoothing.spread;
      return tj * (md - static_cast<double>(z[j]));
    });
    const double w = sample_weight != nullptr ? static_cast<double>(sample_weight[i]) : 1.0;
    const double loss = w * (gap + target_sum * log_s);
    if constexpr (with_grad) {
      const double factor = w * scale;
      const T softmax_factor = static_cast<T>(factor * target_sum / s);
      const T keep = static_cast<T>(factor * smoothing.keep);
      const T offset = static_cast<T>(factor * smoothing.spread);
      for (index_t j = 0; j < c; ++j) g[j] = g[j] * softmax_factor - (t[j] * keep + offset);
    }
    if (per_sample != nullptr) per_sample[i] = static_cast<T>(loss);
    total += loss;
  }
  return total;
}

Smoothing smoothing_for(double label_smoothing, index_t classes) {
  return {1.0 - label_smoothing, label_smoothing / static_cast<double>(classes)};
}

// No classes: every per-sample loss is an empty sum.
template <typename T>
double no_classes(T* per_sample, index_t n) {
  if (per_sample != nullptr) std::fill(per_sample, per_sample + n, T(0));
  return 0.0;
}

}  // namespace

const char* loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::mse: return "mse";
    case LossKind::mae: return "mae";
    case LossKind::huber: return "huber";
    case LossKind::softmax_cross_entropy: return "softmax_cross_entropy";
    case LossKind::sigmoid_binary_cross_entropy: return "sigmoid_binary_cross_entropy";
  }
  return "?";
}

template <typename T>
double elementwise_loss(T* grad, T* per_sample, const T* prediction, const T* target,
                        const T* sample_weight, index_t n, index_t d, LossKind kind,
                        const LossOptions& options, int num_threads) {
  switch (kind) {
    case LossKind::mse:
      return elementwise_run(grad, per_sample, prediction, target, sample_weight, n, d,
                             SquaredError{}, options, num_threads);
    case LossKind::mae:
      return elementwise_run(grad, per_sample, prediction, target, sample_weight, n, d,
                             AbsoluteError{}, options, num_threads);
    case LossKind::huber:
      if (!(options.delta > 0.0)) throw ArgumentError("huber: delta must be > 0");
      return elementwise_run(grad, per_sample, prediction, target, sample_weight, n, d,
                             Huber{options.delta}, options, num_threads);
    case LossKind::sigmoid_binary_cross_entropy: {
      const double ls = options.label_smoothing;
      return elementwise_run(grad, per_sample, prediction, target, sample_weight, n, d,
                             SigmoidCrossEntropy{1.0 - ls, 0.5 * ls}, options, num_threads);
    }
    case LossKind::softmax_cross_entropy: break;
  }
  throw ArgumentError("elementwise_loss: softmax_cross_entropy is not an elementwise loss");
}

template <typename Label>
index_t first_label_out_of_range(const Label* labels, index_t n, index_t c) {
  for (index_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::int64_t>(labels[i]);
    if (label < 0 || label >= c) return i;
  }
  return -1;
}

template <typename T, typename Label>
double softmax_cross_entropy_labels(T* grad, T* per_sample, const T* logits, const Label* labels,
                                    const T* sample_weight, index_t n, index_t c,
                                    const LossOptions& options, int num_threads) {
  const index_t bad = first_label_out_of_range(labels, n, c);
  if (bad >= 0)
    throw ArgumentError("target: label " + std::to_string(static_cast<int64_t>(labels[bad])) +
                        " at index " + std::to_string(bad) + " is outside [0, " +
                        std::to_string(c) + ")");
  if (c == 0) return no_classes(per_sample, n);
  const double scale = reduction_scale(n, options);
  const Smoothing smoothing = smoothing_for(options.label_smoothing, c);
  return reduce_rows(n, c, options, num_threads, [&](index_t begin, index_t end) {
    if (grad != nullptr)
      return softmax_label_rows<T, true>(grad, per_sample, logits, labels, sample_weight, begin,
                                         end, c, scale, smoothing);
    return softmax_label_rows<T, false>(grad, per_sample, logits, labels, sample_weight, begin,
                                        end, c, scale, smoothing);
  });
}

template <typename T>
double softmax_cross_entropy_probs(T* grad, T* per_sample, const T* logits, const T* target,
                                   const T* sample_weight, index_t n, index_t c,
                                   const LossOptions& options, int num_threads) {
  if (c == 0) return no_classes(per_sample, n);
  const double scale = reduction_scale(n, options);
  const Smoothing smoothing = smoothing_for(options.label_smoothing, c);
  return reduce_rows(n, c, options, num_threads, [&](index_t begin, index_t end) {
    if (grad != nullptr)
      return softmax_prob_rows<T, true>(grad, per_sample, logits, target, sample_weight, begin,
                                        end, c, scale, smoothing);
    return softmax_prob_rows<T, false>(grad, per_sample, logits, target, sample_weight, begin,
                                       end, c, scale, smoothing);
  });
}

#define DENSEKIT_INSTANTIATE_LABEL(T, L)                                                     \
  template double softmax_cross_entropy_labels<T, L>(T*, T*, const T*, const L*, const T*,   \
                                                     index_t, index_t, const LossOptions&, int);
#define DENSEKIT_INSTANTIATE(T)                                                              \
  template double elementwise_loss<T>(T*, T*, const T*, const T*, const T*, index_t, index_t, \
                                      LossKind, const LossOptions&, int);                    \
  template double softmax_cross_entropy_probs<T>(T*, T*, const T*, const T*, const T*,        \
                                                 index_t, index_t, const LossOptions&, int); \
  DENSEKIT_INSTANTIATE_LABEL(T, std::int32_t)                                                \
  DENSEKIT_INSTANTIATE_LABEL(T, std::int64_t)
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
template index_t first_label_out_of_range<std::int32_t>(const std::int32_t*, index_t, index_t);
template index_t first_label_out_of_range<std::int64_t>(const std::int64_t*, index_t, index_t);
#undef DENSEKIT_INSTANTIATE
#undef DENSEKIT_INSTANTIATE_LABEL

}  // namespace densekit
