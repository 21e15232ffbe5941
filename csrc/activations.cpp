// Array kernels for the activations: vector math where the ISA in use has it (vecmath/),
// the scalar forms (vecmath/scalar_activations.hpp) otherwise.
#include "activations.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "float_bits.hpp"
#include "parallel.hpp"
#include "vecmath/vecmath.hpp"

namespace densekit {
namespace {

// Elementwise work is cut into fixed blocks; each element is independent, so any split
// gives the same bits, and the block size only keeps small arrays on one thread.
constexpr index_t kElementBlock = 1 << 14;

index_t row_block_for(index_t cols) {
  return std::max<index_t>(1, kElementBlock / std::max<index_t>(cols, 1));
}

// dz = dy * (y > 0 ? 1 : slope), as scalar::derivative_from_y for relu and leaky_relu (NaN
// takes the slope); with dy = y, leaky_relu itself. y > 0 is tested on y's bits (0 < bits <=
// +inf's, see float_bits.hpp): a branch on the sign of y mispredicts half the time, the
// test on bits vectorises.
template <typename T>
void positive_slopes(T* dz, const T* dy, const T* y, index_t count, T slope) {
  if (vecmath::vector_positive_slopes(dz, dy, y, count, slope)) return;  // the ISA's vectors
  for (index_t i = 0; i < count; ++i) {
    const Bits<T> bits = bit_cast<Bits<T>>(y[i]);
    dz[i] = dy[i] * select<T>(mask_if<T>((bits > 0) & (bits <= kInfinityBits<T>)), T(1), slope);
  }
}

// dz = dy * f'(y) for an activation known at compile time, so that the loop has no
// per-element switch (scalar::derivative_from_y folds to the one formula). f'(y) is a
// statement of its own: folded into one expression, dy * (c ? 1 : 0) becomes a branch
// (c ? dy : dy * 0) that keeps relu6's loop from vectorising.
template <ActivationKind Kind, typename T>
void derivative_from_y_loop(T* dz, const T* dy, const T* y, index_t count, T alpha) {
  for (index_t i = 0; i < count; ++i) {
    const T slope = scalar::derivative_from_y(Kind, alpha, y[i]);
    dz[i] = dy[i] * slope;
  }
}

// dz = dy * f'(y) for an activation whose derivative follows from its output (relu and
// leaky_relu have positive_slopes), by its own loop.
template <typename T>
void derivative_from_y_loops(ActivationKind kind, T* dz, const T* dy, const T* y, index_t count,
                             T alpha) {
  switch (kind) {
    case ActivationKind::sigmoid:
      return derivative_from_y_loop<ActivationKind::sigmoid>(dz, dy, y, count, alpha);
    case ActivationKind::tanh:
      return derivative_from_y_loop<ActivationKind::tanh>(dz, dy, y, count, alpha);
    case ActivationKind::relu6:
      return derivative_from_y_loop<ActivationKind::relu6>(dz, dy, y, count, alpha);
    case ActivationKind::hard_sigmoid:
      return derivative_from_y_loop<ActivationKind::hard_sigmoid>(dz, dy, y, count, alpha);
    case ActivationKind::exponential:
      return derivative_from_y_loop<ActivationKind::exponential>(dz, dy, y, count, alpha);
    default:
      for (index_t i = 0; i < count; ++i)
        dz[i] = dy[i] * scalar::derivative_from_y(kind, alpha, y[i]);
  }
}

}  // namespace

template <typename T>
void softmax_rows(T* out, const T* in, index_t rows, index_t cols, index_t ld) {
  if (vecmath::vector_softmax(out, in, rows, cols, ld)) return;
  for (index_t r = 0; r < rows; ++r) {
    const T* src = in + r * ld;
    T* row = out + r * ld;
    T max_value = src[0];
    for (index_t j = 1; j < cols; ++j) max_value = std::max(max_value, src[j]);
    T sum = T(0);
    for (index_t j = 0; j < cols; ++j) {
      row[j] = std::exp(src[j] - max_value);
      sum += row[j];
    }
    const T inv = T(1) / sum;
    for (index_t j = 0; j < cols; ++j) row[j] *= inv;
  }
}

template <typename T>
void log_softmax_rows(T* out, const T* in, index_t rows, index_t cols, index_t ld) {
  if (vecmath::vector_log_softmax(out, in, rows, cols, ld)) return;
  for (index_t r = 0; r < rows; ++r) {
    const T* src = in + r * ld;
    T* row = out + r * ld;
    T max_value = src[0];
    for (index_t j = 1; j < cols; ++j) max_value = std::max(max_value, src[j]);
    // float rows sum in double: a long row's serial float sum would carry cols roundings
    // into log(sum)
    using Sum = std::conditional_t<sizeof(T) == 4, double, T>;
    Sum sum = Sum(0);
    for (index_t j = 0; j < cols; ++j) sum += static_cast<Sum>(std::exp(src[j] - max_value));
    const T log_sum = static_cast<T>(std::log(sum));
    for (index_t j = 0; j < cols; ++j) row[j] = (src[j] - max_value) - log_sum;
  }
}

template <typename T>
void activation_forward(T* y, const T* z, index_t rows, index_t cols, const Activation& act,
                        int num_threads) {
  if (rows <= 0 || cols <= 0) return;
  const T alpha = static_cast<T>(act.alpha);
  const index_t row_block = row_block_for(cols);
  const index_t n_tasks = (rows + row_block - 1) / row_block;
  parallel_for(n_tasks, num_threads, [&](index_t task) {
    const index_t r0 = task * row_block;
    const index_t r1 = std::min(rows, r0 + row_block);
    const T* zin = z + r0 * cols;
    T* yout = y + r0 * cols;
    const index_t count = (r1 - r0) * cols;
    if (is_row_activation(act.kind)) {  // from z's rows into y's: no copy of z first
      if (act.kind == ActivationKind::softmax)
        softmax_rows(yout, zin, r1 - r0, cols, cols);
      else
        log_softmax_rows(yout, zin, r1 - r0, cols, cols);
      return;
    }
    switch (act.kind) {
      case ActivationKind::linear:
        if (yout != zin) std::memcpy(yout, zin, sizeof(T) * static_cast<size_t>(count));
        break;
      case ActivationKind::relu:
        for (index_t i = 0; i < count; ++i) yout[i] = scalar::relu(zin[i]);
        break;
      case ActivationKind::leaky_relu:  // z * (z > 0 ? 1 : alpha): alpha z or z, exactly
        positive_slopes(yout, zin, zin, count, alpha);
        break;
      default:
        if (!vecmath::vector_activation<T>(yout, nullptr, zin, count, act))
          for (index_t i = 0; i < count; ++i) yout[i] = scalar::forward(act.kind, alpha, zin[i]);
    }
  });
}

template <typename T>
void activation_backward(T* dz, const T* dy, const T* y, const T* z, index_t rows, index_t cols,
                         const Activation& act, int num_threads) {
  if (rows <= 0 || cols <= 0) return;
  const T alpha = static_cast<T>(act.alpha);
  const bool use_y = derivative_from_output(act) && y != nullptr;
  if (!use_y && z == nullptr && !derivative_is_one(act))
    throw ArgumentError(std::string("activation '") + activation_name(act.kind) +
                        "' needs the pre-activation z for its derivative");
  const index_t row_block = row_block_for(cols);
  const index_t n_tasks = (rows + row_block - 1) / row_block;
  parallel_for(n_tasks, num_threads, [&](index_t task) {
    const index_t r0 = task * row_block;
    const index_t r1 = std::min(rows, r0 + row_block);
    if (act.kind == ActivationKind::softmax) {
      // p: the block's probabilities, y itself or softmax(z) computed as the forward computes
      // it, so that the backward from z and from y give the same bits
      const index_t begin = r0 * cols, count = (r1 - r0) * cols;
      std::vector<T> probs;
      const T* p = use_y ? y + begin : nullptr;
      if (!use_y) {
        probs.resize(static_cast<size_t>(count));
        softmax_rows(probs.data(), z + begin, r1 - r0, cols, cols);
        p = probs.data();
      }
      if (vecmath::vector_softmax_backward(dz + begin, dy + begin, p, r1 - r0, cols, cols))
        return;
      for (index_t r = 0; r < r1 - r0; ++r) {
        const T* dyr = dy + begin + r * cols;
        const T* pr = p + r * cols;
        T* dzr = dz + begin + r * cols;
        T dot = T(0);
        for (index_t j = 0; j < cols; ++j) dot += dyr[j] * pr[j];
        for (index_t j = 0; j < cols; ++j) dzr[j] = pr[j] * (dyr[j] - dot);
      }
      return;
    }
    if (act.kind == ActivationKind::log_softmax) {
      if (use_y && vecmath::vector_log_softmax_backward(dz + r0 * cols, dy + r0 * cols,
                                                        y + r0 * cols, r1 - r0, cols, cols))
        return;
      // dz = dy - softmax(z) * sum(dy), softmax(z) = exp(y) from the output (the vector
      // math's exponential where the ISA has it), or computed from z. probs holds the row,
      // since dz may be dy.
      std::vector<T> probs(static_cast<size_t>(cols));
      const Activation exponential{ActivationKind::exponential, 0.0};
      for (index_t r = r0; r < r1; ++r) {
        const T* dyr = dy + r * cols;
        T* dzr = dz + r * cols;
        T total = T(0);
        for (index_t j = 0; j < cols; ++j) total += dyr[j];
        if (use_y) {
          const T* yr = y + r * cols;
          if (!vecmath::vector_activation<T>(probs.data(), nullptr, yr, cols, exponential))
            for (index_t j = 0; j < cols; ++j) probs[size_t(j)] = std::exp(yr[j]);
        } else {
          softmax_rows(probs.data(), z + r * cols, 1, cols, cols);
        }
        for (index_t j = 0; j < cols; ++j) dzr[j] = dyr[j] - probs[size_t(j)] * total;
      }
      return;
    }
    const index_t begin = r0 * cols;
    const index_t end = r1 * cols;
    if (derivative_is_one(act)) {
      if (dz != dy)
        std::memcpy(dz + begin, dy + begin, sizeof(T) * static_cast<size_t>(end - begin));
    } else if (act.kind == ActivationKind::relu || act.kind == ActivationKind::leaky_relu) {
      // f' is 1 for y > 0 and for z > 0 alike (+inf included, NaN and zeros not), so y or z
      // serves the same branch-free loop.
      const T* from = use_y ? y : z;
      positive_slopes(dz + begin, dy + begin, from + begin, end - begin,
                      act.kind == ActivationKind::relu ? T(0) : alpha);
    } else if (use_y) {
      derivative_from_y_loops(act.kind, dz + begin, dy + begin, y + begin, end - begin, alpha);
    } else if (!vecmath::vector_activation(dz + begin, dy + begin, z + begin, end - begin, act)) {
      for (index_t i = begin; i < end; ++i)
        dz[i] = dy[i] * scalar::derivative_from_z(act.kind, alpha, z[i]);
    }
  });
}

namespace {

// Runs body(begin, end) over fixed element blocks (see kElementBlock) on the pool.
template <typename Body>
void for_element_blocks(index_t count, int num_threads, const Body& body) {
  if (count <= 0) return;
  const index_t n_tasks = (count + kElementBlock - 1) / kElementBlock;
  parallel_for(n_tasks, num_threads, [&](index_t task) {
    const index_t begin = task * kElementBlock;
    body(begin, std::min(count, begin + kElementBlock));
  });
}

}  // namespace

// Keras's operations in its order (torch backend), so float32 gives its bits: clip(z, 0,
// max_value) above the threshold, 0 - slope * (threshold - z) below, 0 at the threshold, NaN
// kept. Every value is computed for every element and the comparisons pick one, so the loop
// vectorises without a branch on the data.
template <typename T>
void relu_forward(T* y, const T* z, index_t count, const ReluParameters& relu, int num_threads) {
  const T cap = static_cast<T>(relu.max_value);
  const T slope = static_cast<T>(relu.negative_slope);
  const T threshold = static_cast<T>(relu.threshold);
  for_element_blocks(count, num_threads, [&](index_t begin, index_t end) {
    if (vecmath::vector_relu(y + begin, z + begin, end - begin, cap, slope, threshold)) return;
    for (index_t i = begin; i < end; ++i)
      y[i] = scalar::relu_parametric(z[i], cap, slope, threshold);
  });
}

// The derivative picks 1, the slope or 0 by selects (relu_parametric_derivative), which the
// vector-math loop compiles to the ISA's compares and blends; the fallback loop is the same
// function, so the same bits.
template <typename T>
void relu_backward(T* dz, const T* dy, const T* z, index_t count, const ReluParameters& relu,
                   int num_threads) {
  const T cap = static_cast<T>(relu.max_value);
  const T slope = static_cast<T>(relu.negative_slope);
  const T threshold = static_cast<T>(relu.threshold);
  for_element_blocks(count, num_threads, [&](index_t begin, index_t end) {
    if (vecmath::vector_relu_backward(dz + begin, dy + begin, z + begin, end - begin, cap, slope,
                                      threshold))
      return;
    for (index_t i = begin; i < end; ++i)
      dz[i] = dy[i] * scalar::relu_parametric_derivative(z[i], cap, slope, threshold);
  });
}

#define DENSEKIT_INSTANTIATE(T)                                                              \
  template void activation_forward<T>(T*, const T*, index_t, index_t, const Activation&, int); \
  template void activation_backward<T>(T*, const T*, const T*, const T*, index_t, index_t,     \
                                       const Activation&, int);                               \
  template void softmax_rows<T>(T*, const T*, index_t, index_t, index_t);                    \
  template void log_softmax_rows<T>(T*, const T*, index_t, index_t, index_t);                \
  template void relu_forward<T>(T*, const T*, index_t, const ReluParameters&, int);            \
  template void relu_backward<T>(T*, const T*, const T*, index_t, const ReluParameters&, int);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit
