// Optimizer-step and gradient-clipping kernels.
//
// The steps' loops (optim_steps.inc) are built once per ISA and picked by the float32 engine's
// ISA choice (gemm/isa.cpp); the global norm stays at the baseline ISA, its sums in a fixed
// order.
#include "optim.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "gemm/isa.hpp"
#include "optim_kernels.hpp"
#include "parallel.hpp"

namespace densekit {
namespace {

template <typename T>
OptimKernels<T> isa_optim_kernels() {
  constexpr bool is_float = std::is_same_v<T, float>;
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  const gemm::Isa isa = gemm::isa_choice().isa;
  if (isa == gemm::Isa::avx512) {
    if constexpr (is_float) return avx512_optim_kernels_f32();
    else return avx512_optim_kernels_f64();
  }
  if (isa == gemm::Isa::avx2) {
    if constexpr (is_float) return avx2_optim_kernels_f32();
    else return avx2_optim_kernels_f64();
  }
#endif
  if constexpr (is_float) return portable_optim_kernels_f32();
  else return portable_optim_kernels_f64();
}

template <typename T>
const OptimKernels<T>& optim_kernels() {
  static const OptimKernels<T> kernels = isa_optim_kernels<T>();
  return kernels;
}

}  // namespace

template <typename T>
void sgd_step(T* param, T* velocity, const T* grad, index_t n, const SgdHyper& hyper,
              int num_threads) {
  optim_kernels<T>().sgd(param, velocity, grad, n, hyper, num_threads);
}

template <typename T>
void adam_step(T* param, T* m, T* v, T* v_max, const T* grad, index_t n, const AdamHyper& hyper,
               int num_threads) {
  optim_kernels<T>().adam(param, m, v, v_max, grad, n, hyper, num_threads);
}

template <typename T>
void rmsprop_step(T* param, T* square_avg, T* grad_avg, T* velocity, const T* grad, index_t n,
                  const RmspropHyper& hyper, int num_threads) {
  optim_kernels<T>().rmsprop(param, square_avg, grad_avg, velocity, grad, n, hyper, num_threads);
}

template <typename T>
double nadam_step(T* param, T* m, T* v, const T* grad, index_t n, const NadamHyper& hyper,
                  int num_threads) {
  return optim_kernels<T>().nadam(param, m, v, grad, n, hyper, num_threads);
}

template <typename T>
void adamax_step(T* param, T* m, T* u, const T* grad, index_t n, const AdamaxHyper& hyper,
                 int num_threads) {
  optim_kernels<T>().adamax(param, m, u, grad, n, hyper, num_threads);
}

template <typename T>
void adagrad_step(T* param, T* sum, const T* grad, index_t n, const AdagradHyper& hyper,
                  int num_threads) {
  optim_kernels<T>().adagrad(param, sum, grad, n, hyper, num_threads);
}

template <typename T>
void lion_step(T* param, T* m, const T* grad, index_t n, const LionHyper& hyper,
               int num_threads) {
  optim_kernels<T>().lion(param, m, grad, n, hyper, num_threads);
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
