// Optimizer-step and gradient-clipping kernels.
//
// Each step kernel is a loop over one block of elements, instantiated for the options that
// change which operations run (so the loop has no per-element branches and vectorizes), and
// driven over fixed blocks by parallel_for. A rule that torch and Keras compute differently has
// one loop per convention, each in its own library's operation order.
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
  T decay_factor;  // Keras: 1 - lr * weight_decay
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

// Keras: velocity = momentum * velocity - lr * g; param += velocity, or with Nesterov
// param += -lr * g + momentum * velocity (Keras's torch backend, in its order).
template <typename T, bool kDecay, bool kMomentum, bool kNesterov>
void sgd_keras_block(T* __restrict param, T* __restrict velocity, const T* __restrict grad,
                     index_t count, const SgdScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    T p = param[i];
    if constexpr (kDecay) p = p * s.decay_factor;
    if constexpr (kMomentum) {
      const T buf = velocity[i] * s.momentum + s.neg_lr * g;
      velocity[i] = buf;
      if constexpr (kNesterov) {
        p = (p + s.neg_lr * g) + s.momentum * buf;
      } else {
        p = p + buf;
      }
    } else {
      p = p + s.neg_lr * g;
    }
    param[i] = p;
  }
}

template <typename T>
struct AdamScalars {
  T sign, weight_decay, decay_factor;  // decay_factor = 1 - lr*wd when decoupled, else exactly 1
  Lerp<T> first_moment;                // m.lerp_(g, 1 - beta1)
  T beta1, one_minus_beta1;            // Keras: m = m * beta1 + (1 - beta1) * g
  T beta2, one_minus_beta2, bias_correction2_sqrt, eps, neg_step_size;
  T alpha;  // Keras: lr * sqrt(1 - beta2^t) / (1 - beta1^t)
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

// Keras: epsilon is added to sqrt(v) before the bias corrections, which are folded into alpha.
template <typename T, bool kAmsgrad>
void adam_keras_block(T* __restrict param, T* __restrict m, T* __restrict v, T* __restrict v_max,
                      const T* __restrict grad, index_t count, const AdamScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    const T p = param[i] * s.decay_factor;
    const T m_new = m[i] * s.beta1 + s.one_minus_beta1 * g;
    const T v_new = v[i] * s.beta2 + s.one_minus_beta2 * (g * g);
    m[i] = m_new;
    v[i] = v_new;
    T second = v_new;
    if constexpr (kAmsgrad) {
      second = nan_max(v_max[i], v_new);
      v_max[i] = second;
    }
    param[i] = p - (m_new * s.alpha) / (std::sqrt(second) + s.eps);
  }
}

template <typename T>
struct RmspropScalars {
  T sign, weight_decay, alpha, one_minus_alpha;
  Lerp<T> grad_average;  // grad_avg.lerp_(g, 1 - alpha)
  T eps, momentum, neg_lr;
  T lr, decay_factor;  // Keras
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

// Keras: the step is lr * g / sqrt(avg + eps) (centered: sqrt(avg + eps - mean^2)), and the
// momentum buffer accumulates these lr-scaled steps.
template <typename T, bool kDecay, bool kCentered, bool kMomentum>
void rmsprop_keras_block(T* __restrict param, T* __restrict square_avg, T* __restrict grad_avg,
                         T* __restrict velocity, const T* __restrict grad, index_t count,
                         const RmspropScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    T p = param[i];
    if constexpr (kDecay) p = p * s.decay_factor;
    const T sq = square_avg[i] * s.alpha + s.one_minus_alpha * (g * g);
    square_avg[i] = sq;
    T denom = sq + s.eps;
    if constexpr (kCentered) {
      const T mean = grad_avg[i] * s.alpha + s.one_minus_alpha * g;
      grad_avg[i] = mean;
      denom = denom - mean * mean;
    }
    const T increment = (g * s.lr) / std::sqrt(denom);
    if constexpr (kMomentum) {
      const T buf = velocity[i] * s.momentum + increment;
      velocity[i] = buf;
      param[i] = p - buf;
    } else {
      param[i] = p - increment;
    }
  }
}

template <typename T>
struct NadamScalars {
  T sign, weight_decay, decay_factor;
  Lerp<T> first_moment;
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T bias_correction2, eps;
  T grad_coef, moment_coef;  // torch: -lr * (1 - mu) / (1 - prod), -lr * mu_next / (1 - prod_next)
  T lr, mu_next, one_minus_mu, one_minus_product, one_minus_product_next;  // Keras
};

template <typename T, bool kDecay>
void nadam_block(T* __restrict param, T* __restrict m, T* __restrict v, const T* __restrict grad,
                 index_t count, const NadamScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    T g = s.sign * grad[i];
    T p = param[i] * s.decay_factor;
    if constexpr (kDecay) g = g + s.weight_decay * p;
    const T m_new = s.first_moment(m[i], g);
    T v_new = v[i] * s.beta2;
    v_new = v_new + s.one_minus_beta2 * g * g;
    m[i] = m_new;
    v[i] = v_new;
    const T denom = std::sqrt(v_new / s.bias_correction2) + s.eps;
    p = p + s.grad_coef * g / denom;
    param[i] = p + s.moment_coef * m_new / denom;
  }
}

// Keras: m_hat = m * mu_next / (1 - prod_next) + g * (1 - mu) / (1 - prod);
// param -= m_hat * lr / (sqrt(v / (1 - beta2^t)) + eps).
template <typename T>
void nadam_keras_block(T* __restrict param, T* __restrict m, T* __restrict v,
                       const T* __restrict grad, index_t count, const NadamScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    const T p = param[i] * s.decay_factor;
    const T m_new = m[i] * s.beta1 + s.one_minus_beta1 * g;
    const T v_new = v[i] * s.beta2 + s.one_minus_beta2 * (g * g);
    m[i] = m_new;
    v[i] = v_new;
    const T m_hat = (m_new * s.mu_next) / s.one_minus_product_next +
                    (g * s.one_minus_mu) / s.one_minus_product;
    const T v_hat = v_new / s.bias_correction2;
    param[i] = p - (m_hat * s.lr) / (std::sqrt(v_hat) + s.eps);
  }
}

template <typename T>
struct AdamaxScalars {
  T sign, weight_decay, decay_factor;
  Lerp<T> first_moment;
  T beta1, one_minus_beta1, beta2, eps;
  T neg_step_size;      // torch: -lr / (1 - beta1^t)
  T lr, bias_correction1;  // Keras
};

template <typename T, bool kDecay>
void adamax_block(T* __restrict param, T* __restrict m, T* __restrict u, const T* __restrict grad,
                  index_t count, const AdamaxScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    T g = s.sign * grad[i];
    if constexpr (kDecay) g = g + s.weight_decay * param[i];
    const T m_new = s.first_moment(m[i], g);
    m[i] = m_new;
    const T u_new = nan_max(u[i] * s.beta2, std::abs(g) + s.eps);
    u[i] = u_new;
    param[i] = param[i] + s.neg_step_size * m_new / u_new;
  }
}

// Keras: u = max(beta2 * u, |g|); param -= lr * m / ((u + eps) * (1 - beta1^t)).
template <typename T, bool kDecay>
void adamax_keras_block(T* __restrict param, T* __restrict m, T* __restrict u,
                        const T* __restrict grad, index_t count, const AdamaxScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    T p = param[i];
    if constexpr (kDecay) p = p * s.decay_factor;
    const T m_new = m[i] * s.beta1 + s.one_minus_beta1 * g;
    m[i] = m_new;
    const T u_new = nan_max(u[i] * s.beta2, std::abs(g));
    u[i] = u_new;
    param[i] = p - (m_new * s.lr) / ((u_new + s.eps) * s.bias_correction1);
  }
}

template <typename T>
struct AdagradScalars {
  T sign, weight_decay, decay_factor, eps;
  T neg_lr;  // torch: -lr / (1 + (t - 1) * lr_decay)
  T lr;      // Keras
};

template <typename T, bool kDecay>
void adagrad_block(T* __restrict param, T* __restrict sum, const T* __restrict grad,
                   index_t count, const AdagradScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    T g = s.sign * grad[i];
    if constexpr (kDecay) g = g + s.weight_decay * param[i];
    const T total = sum[i] + g * g;
    sum[i] = total;
    param[i] = param[i] + s.neg_lr * g / (std::sqrt(total) + s.eps);
  }
}

// Keras: epsilon inside the square root.
template <typename T, bool kDecay>
void adagrad_keras_block(T* __restrict param, T* __restrict sum, const T* __restrict grad,
                         index_t count, const AdagradScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    T p = param[i];
    if constexpr (kDecay) p = p * s.decay_factor;
    const T total = sum[i] + g * g;
    sum[i] = total;
    param[i] = p - (g * s.lr) / std::sqrt(total + s.eps);
  }
}

template <typename T>
struct LionScalars {
  T sign, decay_factor, beta1, one_minus_beta1, beta2, one_minus_beta2, lr;
};

// c = beta1 * m + (1 - beta1) * g; param -= lr * sign(c); m = beta2 * m + (1 - beta2) * g. The
// sign of 0 and of NaN is 0, as torch.sign's (Keras's torch backend).
template <typename T, bool kDecay>
void lion_block(T* __restrict param, T* __restrict m, const T* __restrict grad, index_t count,
                const LionScalars<T>& s) {
  for (index_t i = 0; i < count; ++i) {
    const T g = s.sign * grad[i];
    T p = param[i];
    if constexpr (kDecay) p = p * s.decay_factor;
    const T c = m[i] * s.beta1 + s.one_minus_beta1 * g;
    const T direction = static_cast<T>(c > T(0)) - static_cast<T>(c < T(0));
    param[i] = p - s.lr * direction;
    m[i] = m[i] * s.beta2 + s.one_minus_beta2 * g;
  }
}

// 1 - lr * weight_decay, the factor of decoupled weight decay (exactly 1 without decay): torch
// evaluates it in double, Keras in the parameters' type.
template <typename T>
T decay_factor(double lr, double weight_decay, Convention convention = Convention::torch) {
  if (weight_decay == 0.0) return T(1);
  if (convention == Convention::keras)
    return T(1) - static_cast<T>(weight_decay) * static_cast<T>(lr);
  return static_cast<T>(1.0 - lr * weight_decay);
}

// Keras computes its scalars (beta powers, bias corrections) in the parameters' type, from
// betas cast to it: beta^t as Keras's ops.power(cast(beta), cast(t)).
template <typename T>
T keras_power(double base, std::int64_t step) {
  return std::pow(static_cast<T>(base), static_cast<T>(step));
}

// Keras's NAdam momentum mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)), in T.
template <typename T>
T keras_nadam_mu(double beta1, double momentum_decay, std::int64_t step) {
  const T decayed = std::pow(T(0.96), static_cast<T>(static_cast<double>(step) * momentum_decay));
  return static_cast<T>(beta1) * (T(1) - T(0.5) * decayed);
}

// 1-based step counts set bias corrections; step 0 would divide by zero.
void require_step(std::int64_t step, const char* kernel) {
  if (step < 1)
    throw ArgumentError(std::string(kernel) + ": step must be >= 1, got " +
                        std::to_string(step));
}

// NAdam's momentum schedule mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)).
double nadam_mu(double beta1, double momentum_decay, std::int64_t step) {
  return beta1 * (1.0 - 0.5 * std::pow(0.96, static_cast<double>(step) * momentum_decay));
}

// mu_1 * ... * mu_step as each convention keeps it, one rounded multiplication per step:
// torch multiplies a float32 product by its double mu, Keras a product of type T by mu in T.
template <typename T>
double mu_product_through(std::int64_t step, double beta1, double momentum_decay, bool keras) {
  if (keras) {
    T product = T(1);
    for (std::int64_t t = 1; t <= step; ++t)
      product = product * keras_nadam_mu<T>(beta1, momentum_decay, t);
    return static_cast<double>(product);
  }
  float product = 1.0f;
  for (std::int64_t t = 1; t <= step; ++t)
    product = product * static_cast<float>(nadam_mu(beta1, momentum_decay, t));
  return static_cast<double>(product);
}

}  // namespace

template <typename T>
void sgd_step(T* param, T* velocity, const T* grad, index_t n, const SgdHyper& hyper,
              int num_threads) {
  const bool use_momentum = hyper.momentum != 0.0;
  const bool keras = hyper.convention == Convention::keras;
  if (use_momentum && velocity == nullptr)
    throw ArgumentError("sgd_step: momentum != 0 needs a velocity buffer");
  if (hyper.nesterov && (!use_momentum || hyper.dampening != 0.0))
    throw ArgumentError("sgd_step: Nesterov momentum needs momentum > 0 and zero dampening");
  if (keras && hyper.dampening != 0.0)
    throw ArgumentError("sgd_step: Keras's SGD has no dampening");
  const SgdScalars<T> s{hyper.maximize ? T(-1) : T(1),
                        static_cast<T>(hyper.weight_decay),
                        static_cast<T>(hyper.momentum),
                        static_cast<T>(1.0 - hyper.dampening),
                        static_cast<T>(-hyper.lr),
                        decay_factor<T>(hyper.lr, hyper.weight_decay, hyper.convention)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    with_flag(use_momentum, [&](auto momentum) {
      with_flag(hyper.nesterov, [&](auto nesterov) {
        constexpr bool kDecay = decltype(decay)::value, kMomentum = decltype(momentum)::value,
                       kNesterov = decltype(nesterov)::value;
        T* buf = use_momentum ? velocity : nullptr;
        if (keras) {
          for_each_block(n, num_threads, [&](index_t begin, index_t count) {
            sgd_keras_block<T, kDecay, kMomentum, kNesterov>(
                param + begin, kMomentum ? buf + begin : nullptr, grad + begin, count, s);
          });
          return;
        }
        with_flag(hyper.first_step, [&](auto first) {
          for_each_block(n, num_threads, [&](index_t begin, index_t count) {
            sgd_block<T, kDecay, kMomentum, kNesterov, decltype(first)::value>(
                param + begin, kMomentum ? buf + begin : nullptr, grad + begin, count, s);
          });
        });
      });
    });
  });
}

template <typename T>
void adam_step(T* param, T* m, T* v, T* v_max, const T* grad, index_t n, const AdamHyper& hyper,
               int num_threads) {
  require_step(hyper.step, "adam_step");
  const bool keras = hyper.convention == Convention::keras;
  if (keras && hyper.weight_decay != 0.0 && !hyper.decoupled_weight_decay)
    throw ArgumentError("adam_step: Keras's weight decay is decoupled");
  // torch evaluates these in Python floats (double) from the step count.
  const double step = static_cast<double>(hyper.step);
  const double bias_correction1 = 1.0 - std::pow(hyper.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(hyper.beta2, step);
  const double step_size = hyper.lr / bias_correction1;
  const bool decoupled = hyper.decoupled_weight_decay;
  const AdamScalars<T> s{hyper.maximize ? T(-1) : T(1),
                         static_cast<T>(hyper.weight_decay),
                         decoupled
                             ? decay_factor<T>(hyper.lr, hyper.weight_decay, hyper.convention)
                             : T(1),
                         Lerp<T>(1.0 - hyper.beta1),
                         static_cast<T>(hyper.beta1),
                         static_cast<T>(1.0 - hyper.beta1),
                         static_cast<T>(hyper.beta2),
                         static_cast<T>(1.0 - hyper.beta2),
                         static_cast<T>(std::sqrt(bias_correction2)),
                         static_cast<T>(hyper.eps),
                         static_cast<T>(-step_size),
                         static_cast<T>(hyper.lr) *
                             std::sqrt(T(1) - keras_power<T>(hyper.beta2, hyper.step)) /
                             (T(1) - keras_power<T>(hyper.beta1, hyper.step))};
  const bool coupled_decay = hyper.weight_decay != 0.0 && !decoupled;
  T* v_max_or_null = v_max;
  with_flag(v_max != nullptr, [&](auto amsgrad) {
    constexpr bool kAmsgrad = decltype(amsgrad)::value;
    if (keras) {
      for_each_block(n, num_threads, [&](index_t begin, index_t count) {
        adam_keras_block<T, kAmsgrad>(param + begin, m + begin, v + begin,
                                      kAmsgrad ? v_max_or_null + begin : nullptr, grad + begin,
                                      count, s);
      });
      return;
    }
    with_flag(coupled_decay, [&](auto decay) {
      for_each_block(n, num_threads, [&](index_t begin, index_t count) {
        adam_block<T, decltype(decay)::value, kAmsgrad>(
            param + begin, m + begin, v + begin, kAmsgrad ? v_max_or_null + begin : nullptr,
            grad + begin, count, s);
      });
    });
  });
}

template <typename T>
void rmsprop_step(T* param, T* square_avg, T* grad_avg, T* velocity, const T* grad, index_t n,
                  const RmspropHyper& hyper, int num_threads) {
  const bool use_momentum = hyper.momentum > 0.0;
  const bool keras = hyper.convention == Convention::keras;
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
                            static_cast<T>(-hyper.lr),
                            static_cast<T>(hyper.lr),
                            decay_factor<T>(hyper.lr, hyper.weight_decay, hyper.convention)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    with_flag(hyper.centered, [&](auto centered) {
      with_flag(use_momentum, [&](auto momentum) {
        constexpr bool kDecay = decltype(decay)::value, kCentered = decltype(centered)::value,
                       kMomentum = decltype(momentum)::value;
        for_each_block(n, num_threads, [&](index_t begin, index_t count) {
          T* mean = kCentered ? grad_avg + begin : nullptr;
          T* buf = kMomentum ? velocity + begin : nullptr;
          if (keras) {
            rmsprop_keras_block<T, kDecay, kCentered, kMomentum>(
                param + begin, square_avg + begin, mean, buf, grad + begin, count, s);
          } else {
            rmsprop_block<T, kDecay, kCentered, kMomentum>(param + begin, square_avg + begin,
                                                           mean, buf, grad + begin, count, s);
          }
        });
      });
    });
  });
}

template <typename T>
double nadam_step(T* param, T* m, T* v, const T* grad, index_t n, const NadamHyper& hyper,
                  int num_threads) {
  require_step(hyper.step, "nadam_step");
  const bool keras = hyper.convention == Convention::keras;
  if (keras && hyper.weight_decay != 0.0 && !hyper.decoupled_weight_decay)
    throw ArgumentError("nadam_step: Keras's weight decay is decoupled");
  const double beta1 = hyper.beta1, momentum_decay = hyper.momentum_decay, lr = hyper.lr;
  const std::int64_t step = hyper.step;
  const double previous = std::isnan(hyper.mu_product)
                              ? mu_product_through<T>(step - 1, beta1, momentum_decay, keras)
                              : hyper.mu_product;
  const bool decoupled = hyper.decoupled_weight_decay;
  // The scalars both rules share; each branch sets its own below.
  NadamScalars<T> s{hyper.maximize ? T(-1) : T(1),
                    static_cast<T>(hyper.weight_decay),
                    decoupled ? decay_factor<T>(lr, hyper.weight_decay, hyper.convention) : T(1),
                    Lerp<T>(1.0 - beta1),
                    static_cast<T>(beta1),
                    static_cast<T>(1.0 - beta1),
                    static_cast<T>(hyper.beta2),
                    static_cast<T>(1.0 - hyper.beta2),
                    T(1),  // bias_correction2
                    static_cast<T>(hyper.eps),
                    T(0),  // grad_coef
                    T(0),  // moment_coef
                    static_cast<T>(lr),
                    T(0),  // mu_next
                    T(0),  // one_minus_mu
                    T(1),  // one_minus_product
                    T(1)};  // one_minus_product_next
  double product;
  if (keras) {
    // Keras's torch backend, its scalars in T.
    const T mu = keras_nadam_mu<T>(beta1, momentum_decay, step);
    const T mu_next = keras_nadam_mu<T>(beta1, momentum_decay, step + 1);
    const T product_t = static_cast<T>(previous) * mu;
    s.mu_next = mu_next;
    s.one_minus_mu = T(1) - mu;
    s.one_minus_product = T(1) - product_t;
    s.one_minus_product_next = T(1) - product_t * mu_next;
    s.bias_correction2 = T(1) - keras_power<T>(hyper.beta2, step);
    for_each_block(n, num_threads, [&](index_t begin, index_t count) {
      nadam_keras_block<T>(param + begin, m + begin, v + begin, grad + begin, count, s);
    });
    product = static_cast<double>(product_t);
  } else {
    // torch's: mu in double, the product in a float32 tensor (its default scalar dtype).
    const double mu = nadam_mu(beta1, momentum_decay, step);
    const double mu_next = nadam_mu(beta1, momentum_decay, step + 1);
    product = static_cast<double>(static_cast<float>(previous) * static_cast<float>(mu));
    const double product_next = product * mu_next;
    s.bias_correction2 =
        static_cast<T>(1.0 - std::pow(hyper.beta2, static_cast<double>(step)));
    s.grad_coef = static_cast<T>(-lr * (1.0 - mu) / (1.0 - product));
    s.moment_coef = static_cast<T>(-lr * mu_next / (1.0 - product_next));
    with_flag(hyper.weight_decay != 0.0 && !decoupled, [&](auto decay) {
      for_each_block(n, num_threads, [&](index_t begin, index_t count) {
        nadam_block<T, decltype(decay)::value>(param + begin, m + begin, v + begin, grad + begin,
                                               count, s);
      });
    });
  }
  return product;
}

template <typename T>
void adamax_step(T* param, T* m, T* u, const T* grad, index_t n, const AdamaxHyper& hyper,
                 int num_threads) {
  require_step(hyper.step, "adamax_step");
  const bool keras = hyper.convention == Convention::keras;
  const double bias_correction1 = 1.0 - std::pow(hyper.beta1, static_cast<double>(hyper.step));
  const AdamaxScalars<T> s{hyper.maximize ? T(-1) : T(1),
                           static_cast<T>(hyper.weight_decay),
                           decay_factor<T>(hyper.lr, hyper.weight_decay, hyper.convention),
                           Lerp<T>(1.0 - hyper.beta1),
                           static_cast<T>(hyper.beta1),
                           static_cast<T>(1.0 - hyper.beta1),
                           static_cast<T>(hyper.beta2),
                           static_cast<T>(hyper.eps),
                           static_cast<T>(-(hyper.lr / bias_correction1)),
                           static_cast<T>(hyper.lr),
                           T(1) - keras_power<T>(hyper.beta1, hyper.step)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    constexpr bool kDecay = decltype(decay)::value;
    for_each_block(n, num_threads, [&](index_t begin, index_t count) {
      if (keras) {
        adamax_keras_block<T, kDecay>(param + begin, m + begin, u + begin, grad + begin, count,
                                      s);
      } else {
        adamax_block<T, kDecay>(param + begin, m + begin, u + begin, grad + begin, count, s);
      }
    });
  });
}

template <typename T>
void adagrad_step(T* param, T* sum, const T* grad, index_t n, const AdagradHyper& hyper,
                  int num_threads) {
  require_step(hyper.step, "adagrad_step");
  const bool keras = hyper.convention == Convention::keras;
  if (keras && hyper.lr_decay != 0.0)
    throw ArgumentError("adagrad_step: Keras's Adagrad has no lr_decay");
  const double rate =
      hyper.lr / (1.0 + static_cast<double>(hyper.step - 1) * hyper.lr_decay);
  const AdagradScalars<T> s{hyper.maximize ? T(-1) : T(1),
                            static_cast<T>(hyper.weight_decay),
                            decay_factor<T>(hyper.lr, hyper.weight_decay, hyper.convention),
                            static_cast<T>(hyper.eps),
                            static_cast<T>(-rate),
                            static_cast<T>(hyper.lr)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    constexpr bool kDecay = decltype(decay)::value;
    for_each_block(n, num_threads, [&](index_t begin, index_t count) {
      if (keras) {
        adagrad_keras_block<T, kDecay>(param + begin, sum + begin, grad + begin, count, s);
      } else {
        adagrad_block<T, kDecay>(param + begin, sum + begin, grad + begin, count, s);
      }
    });
  });
}

template <typename T>
void lion_step(T* param, T* m, const T* grad, index_t n, const LionHyper& hyper,
               int num_threads) {
  const LionScalars<T> s{hyper.maximize ? T(-1) : T(1),
                         decay_factor<T>(hyper.lr, hyper.weight_decay, Convention::keras),
                         static_cast<T>(hyper.beta1),
                         static_cast<T>(1.0 - hyper.beta1),
                         static_cast<T>(hyper.beta2),
                         static_cast<T>(1.0 - hyper.beta2),
                         static_cast<T>(hyper.lr)};
  with_flag(hyper.weight_decay != 0.0, [&](auto decay) {
    for_each_block(n, num_threads, [&](index_t begin, index_t count) {
      lion_block<T, decltype(decay)::value>(param + begin, m + begin, grad + begin, count, s);
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
  template void rmsprop_step<T>(T*, T*, T*, T*, const T*, index_t, const RmspropHyper&, int);  \
  template double nadam_step<T>(T*, T*, T*, const T*, index_t, const NadamHyper&, int);       \
  template void adamax_step<T>(T*, T*, T*, const T*, index_t, const AdamaxHyper&, int);       \
  template void adagrad_step<T>(T*, T*, const T*, index_t, const AdagradHyper&, int);         \
  template void lion_step<T>(T*, T*, const T*, index_t, const LionHyper&, int);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit
