// Optimizer-step and gradient-clipping kernels.
//
// Each step kernel is a loop over one block of elements, instantiated for the options that
// change which operations run (so the loop has no per-element branches and vectorizes), and
// driven over fixed blocks by parallel_for. The operation order inside the loops is torch's.
#include "optim.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "parallel.hpp"

namespace densekit {
namespace {

// Elementwise blocks: any split gives the same bits; the size only keeps small arrays on one
// thread and gives each task enough work to pay for waking a thread.
constexpr index_t kElementBlock = 1 << 14;

template <class Body>
void for_each_block(index_t n, int num_threads, Body&& body) {
  if (n <= 0) return;
  const index_t n_blocks = (n + kElementBlock - 1) / kElementBlock;
  const int threads =
      threads_for_work(num_threads, static_cast<double>(n), static_cast<double>(kElementBlock));
  parallel_for(n_blocks, threads, [&](index_t block) {
    const index_t begin = block * kElementBlock;
    body(begin, std::min(n, begin + kElementBlock) - begin);
  });
}

// Calls f with std::true_type or std::false_type, turning a run-time option into a template
// argument of the loop.
template <class F>
void with_flag(bool flag, F&& f) {
  if (flag) {
    f(std::true_type{});
  } else {
    f(std::false_type{});
  }
}

// torch's lerp(start, end, w) is start + w*(end - start) for |w| < 0.5 and
// end - (end - start)*(1 - w) otherwise; both are base + coef*(end - start) with the base and
// coefficient picked once per call (coef = w - 1 in the second form, exact in T).
template <typename T>
struct Lerp {
  bool from_start;
  T coef;
  explicit Lerp(double weight) {
    const T w = static_cast<T>(weight);
    from_start = std::abs(w) < T(0.5);
    coef = from_start ? w : w - T(1);
  }
  T operator()(T start, T end) const { return (from_start ? start : end) + coef * (end - start); }
};

// NaN-propagating maximum, as torch.maximum.
template <typename T>
T nan_max(T a, T b) {
  return (a > b || a != a) ? a : b;
}

// The scalars of one SGD call in the array's type (torch casts its Python floats the same way).
template <typename T>
struct SgdScalars {
  T sign;  // -1 with maximize; multiplying by +-1 is exact
  T weight_decay, momentum, grad_scale, neg_lr;
};

template <typename T, bool kDecay, bool kMomentum, bool kNesterov, bool kFirstStep>
void sgd_block(T* __restrict param, T* __restrict velocity, const T* __restrict grad,
               index_t count, const SgdScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    T g = s.sign * grad[i];
    if constexpr (kDecay) g = g + s.weight_decay * param[i];
    if constexpr (kMomentum) {
      T buf;
      if constexpr (kFirstStep) {
        buf = g;
      } else {
        buf = velocity[i] * s.momentum + s.grad_scale * g;
      }
      velocity[i] = buf;
      if constexpr (kNesterov) {
        g = g + s.momentum * buf;
      } else {
        g = buf;
      }
    }
    param[i] = param[i] + s.neg_lr * g;
  }
}

template <typename T>
struct AdamScalars {
  T sign, weight_decay, decay_factor;  // decay_factor = 1 - lr*wd for AdamW, else exactly 1
  Lerp<T> first_moment;                // m.lerp_(g, 1 - beta1)
  T beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
};

template <typename T, bool kDecay, bool kAmsgrad>
void adam_block(T* __restrict param, T* __restrict m, T* __restrict v, T* __restrict v_max,
                const T* __restrict grad, index_t count, const AdamScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    T g = s.sign * grad[i];
    T p = param[i] * s.decay_factor;
    if constexpr (kDecay) g = g + s.weight_decay * p;
    const T m_new = s.first_moment(m[i], g);
    T v_new = v[i] * s.beta2;
    v_new = v_new + s.one_minus_beta2 * g * g;
    m[i] = m_new;
    v[i] = v_new;
    T second = v_new;
    if constexpr (kAmsgrad) {
      second = nan_max(v_max[i], v_new);
      v_max[i] = second;
    }
    const T denom = std::sqrt(second) / s.bias_correction2_sqrt + s.eps;
    param[i] = p + s.neg_step_size * m_new / denom;
  }
}

template <typename T>
struct RmspropScalars {
  T sign, weight_decay, alpha, one_minus_alpha;
  Lerp<T> grad_average;  // grad_avg.lerp_(g, 1 - alpha)
  T eps, momentum, neg_lr;
};

template <typename T, bool kDecay, bool kCentered, bool kMomentum>
void rmsprop_block(T* __restrict param, T* __restrict square_avg, T* __restrict grad_avg,
                   T* __restrict velocity, const T* __restrict grad, index_t count,
                   const RmspropScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    T g = s.sign * grad[i];
    if constexpr (kDecay) g = g + s.weight_decay * param[i];
    T sq = square_avg[i] * s.alpha;
    sq = sq + s.one_minus_alpha * g * g;
    square_avg[i] = sq;
    T avg;
    if constexpr (kCentered) {
      const T mean = s.grad_average(grad_avg[i], g);
      grad_avg[i] = mean;
      avg = std::sqrt(sq - mean * mean);
    } else {
      avg = std::sqrt(sq);
    }
    avg = avg + s.eps;
    if constexpr (kMomentum) {
      const T buf = velocity[i] * s.momentum + g / avg;
      velocity[i] = buf;
      param[i] = param[i] + s.neg_lr * buf;
    } else {
      param[i] = param[i] + s.neg_lr * g / avg;
    }
  }
}

}  // namespace

template <typename T>
void sgd_step(T* param, T* velocity, const T* grad, index_t n, const SgdHyper& hyper,
              int num_threads) {
  const bool use_momentum = hyper.momentum != 0.0;
  if (use_momentum && velocity == nullptr)
    throw ArgumentError("sgd_step: momentum != 0 needs a velocity buffer");
  if (hyper.nesterov && (!use_momentum || hyper.dampening != 0.0))
    throw ArgumentError("sgd_step: Nesterov momentum needs momentum > 0 and zero dampening");
  const SgdScalars<T> s{hyper.maximize ? T(-1) : T(1), static_cast<T>(hyper.weight_decay),
                        static_cast<T>(hyper.momentum), static_cast<T>(1.0 - hyper.dampening),
                        static_cast<T>(-hyper.lr)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    with_flag(use_momentum, [&](auto momentum) {
      with_flag(hyper.nesterov, [&](auto nesterov) {
        with_flag(hyper.first_step, [&](auto first) {
          for_each_block(n, num_threads, [&](index_t begin, index_t count) {
            sgd_block<T, decltype(decay)::value, decltype(momentum)::value,
                      decltype(nesterov)::value, decltype(first)::value>(
                param + begin, use_momentum ? velocity + begin : nullptr, grad + begin, count,
                s);
          });
        });
      });
    });
  });
}

template <typename T>
void adam_step(T* param, T* m, T* v, T* v_max, const T* grad, index_t n, const AdamHyper& hyper,
               int num_threads) {
  if (hyper.step < 1)
    throw ArgumentError("adam_step: step must be >= 1, got " + std::to_string(hyper.step));
  // torch evaluates these in Python floats (double) from the step count.
  const double step = static_cast<double>(hyper.step);
  const double bias_correction1 = 1.0 - std::pow(hyper.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(hyper.beta2, step);
  const double step_size = hyper.lr / bias_correction1;
  const bool decoupled = hyper.decoupled_weight_decay;
  const AdamScalars<T> s{hyper.maximize ? T(-1) : T(1),
                         static_cast<T>(hyper.weight_decay),
                         decoupled ? static_cast<T>(1.0 - hyper.lr * hyper.weight_decay) : T(1),
                         Lerp<T>(1.0 - hyper.beta1),
                         static_cast<T>(hyper.beta2),
                         static_cast<T>(1.0 - hyper.beta2),
                         static_cast<T>(std::sqrt(bias_correction2)),
                         static_cast<T>(hyper.eps),
                         static_cast<T>(-step_size)};
  const bool coupled_decay = hyper.weight_decay != 0.0 && !decoupled;
  with_flag(coupled_decay, [&](auto decay) {
    with_flag(v_max != nullptr, [&](auto amsgrad) {
      for_each_block(n, num_threads, [&](index_t begin, index_t count) {
        adam_block<T, decltype(decay)::value, decltype(amsgrad)::value>(
            param + begin, m + begin, v + begin, v_max != nullptr ? v_max + begin : nullptr,
            grad + begin, count, s);
      });
    });
  });
}

template <typename T>
void rmsprop_step(T* param, T* square_avg, T* grad_avg, T* velocity, const T* grad, index_t n,
                  const RmspropHyper& hyper, int num_threads) {
  const bool use_momentum = hyper.momentum > 0.0;
  if (hyper.centered && grad_avg == nullptr)
    throw ArgumentError("rmsprop_step: centered needs a grad_avg buffer");
  if (use_momentum && velocity == nullptr)
    throw ArgumentError("rmsprop_step: momentum > 0 needs a velocity buffer");
  const RmspropScalars<T> s{hyper.maximize ? T(-1) : T(1),
                            static_cast<T>(hyper.weight_decay),
                            static_cast<T>(hyper.alpha),
                            static_cast<T>(1.0 - hyper.alpha),
                            Lerp<T>(1.0 - hyper.alpha),
                            static_cast<T>(hyper.eps),
                            static_cast<T>(hyper.momentum),
                            static_cast<T>(-hyper.lr)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    with_flag(hyper.centered, [&](auto centered) {
      with_flag(use_momentum, [&](auto momentum) {
        for_each_block(n, num_threads, [&](index_t begin, index_t count) {
          rmsprop_block<T, decltype(decay)::value, decltype(centered)::value,
                        decltype(momentum)::value>(
              param + begin, square_avg + begin, hyper.centered ? grad_avg + begin : nullptr,
              use_momentum ? velocity + begin : nullptr, grad + begin, count, s);
        });
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Global norm and clipping.

namespace {

// The norm's chunks depend only on the arrays' sizes, never on the thread count, and their
// partial sums are added in list order: the norm is bitwise the same for any num_threads.
constexpr index_t kNormChunk = 1 << 14;

struct Chunk {
  const GradientView* grad;
  index_t begin;
  index_t end;
};

std::vector<Chunk> norm_chunks(const GradientView* grads, std::size_t count, index_t* total) {
  std::vector<Chunk> chunks;
  *total = 0;
  for (std::size_t a = 0; a < count; ++a) {
    *total += grads[a].size;
    for (index_t begin = 0; begin < grads[a].size; begin += kNormChunk)
      chunks.push_back({&grads[a], begin, std::min(grads[a].size, begin + kNormChunk)});
  }
  return chunks;
}

// Applies op(pointer, begin, end) of the chunk's dtype; the partials land in chunk order.
template <class Op>
std::vector<double> per_chunk(const std::vector<Chunk>& chunks, index_t total, int num_threads,
                              Op&& op) {
  std::vector<double> partials(chunks.size(), 0.0);
  const int threads =
      threads_for_work(num_threads, static_cast<double>(total), static_cast<double>(kNormChunk));
  parallel_for(static_cast<index_t>(chunks.size()), threads, [&](index_t c) {
    const Chunk& chunk = chunks[static_cast<std::size_t>(c)];
    partials[static_cast<std::size_t>(c)] =
        chunk.grad->float32 != nullptr ? op(chunk.grad->float32, chunk.begin, chunk.end)
                                       : op(chunk.grad->float64, chunk.begin, chunk.end);
  });
  return partials;
}

// Sum of (x * scale)^2 in double. Four running sums break the dependency chain of the adds;
// how they are combined is fixed, so the result depends on the data alone.
template <typename T>
double sum_of_squares(const T* x, index_t begin, index_t end, double scale) {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  index_t i = begin;
  for (; i + 4 <= end; i += 4) {
    const double v0 = static_cast<double>(x[i]) * scale;
    const double v1 = static_cast<double>(x[i + 1]) * scale;
    const double v2 = static_cast<double>(x[i + 2]) * scale;
    const double v3 = static_cast<double>(x[i + 3]) * scale;
    s0 += v0 * v0;
    s1 += v1 * v1;
    s2 += v2 * v2;
    s3 += v3 * v3;
  }
  for (; i < end; ++i) {
    const double v = static_cast<double>(x[i]) * scale;
    s0 += v * v;
  }
  return (s0 + s1) + (s2 + s3);
}

template <typename T>
double max_abs(const T* x, index_t begin, index_t end) {
  double result = 0.0;
  for (index_t i = begin; i < end; ++i)
    result = nan_max(result, std::abs(static_cast<double>(x[i])));
  return result;
}

}  // namespace

double global_norm(const GradientView* grads, std::size_t count, int num_threads) {
  index_t total = 0;
  const std::vector<Chunk> chunks = norm_chunks(grads, count, &total);
  if (chunks.empty()) return 0.0;
  auto squares = [](double scale) {
    return [scale](const auto* x, index_t begin, index_t end) {
      return sum_of_squares(x, begin, end, scale);
    };
  };
  double sum = 0.0;
  for (double partial : per_chunk(chunks, total, num_threads, squares(1.0))) sum += partial;
  if (!std::isinf(sum)) return std::sqrt(sum);

  // Squares of float64 values above ~1e154 overflow. Unless an element is itself inf or NaN,
  // sum again with every element scaled by a power of two (exact) that brings the largest to
  // [0.5, 1), as LAPACK's nrm2 does, and scale the root back.
  auto largest_abs = [](const auto* x, index_t begin, index_t end) {
    return max_abs(x, begin, end);
  };
  double largest = 0.0;
  for (double partial : per_chunk(chunks, total, num_threads, largest_abs))
    largest = nan_max(largest, partial);
  if (!std::isfinite(largest)) return largest;
  int exponent = 0;
  std::frexp(largest, &exponent);
  double scaled = 0.0;
  for (double partial :
       per_chunk(chunks, total, num_threads, squares(std::ldexp(1.0, -exponent))))
    scaled += partial;
  return std::ldexp(std::sqrt(scaled), exponent);
}

double clip_by_global_norm(const GradientView* grads, std::size_t count, double max_norm,
                           int num_threads) {
  if (!(max_norm > 0.0) || !std::isfinite(max_norm))
    throw ArgumentError("clip_by_global_norm: max_norm must be finite and > 0");
  const double norm = global_norm(grads, count, num_threads);
  if (!std::isfinite(norm) || norm <= max_norm) return norm;
  const double scale = max_norm / norm;
  index_t total = 0;
  const std::vector<Chunk> chunks = norm_chunks(grads, count, &total);
  // float32 values are scaled in double and rounded once. The chunks are the norm's; the
  // returned partials are unused.
  per_chunk(chunks, total, num_threads, [scale](auto* x, index_t begin, index_t end) {
    using T = std::remove_pointer_t<decltype(x)>;
    for (index_t i = begin; i < end; ++i)
      x[i] = static_cast<T>(static_cast<double>(x[i]) * scale);
    return 0.0;
  });
  return norm;
}

#define DENSEKIT_INSTANTIATE(T)                                                               \
  template void sgd_step<T>(T*, T*, const T*, index_t, const SgdHyper&, int);                 \
  template void adam_step<T>(T*, T*, T*, T*, const T*, index_t, const AdamHyper&, int);       \
  template void rmsprop_step<T>(T*, T*, T*, T*, const T*, index_t, const RmspropHyper&, int);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit
