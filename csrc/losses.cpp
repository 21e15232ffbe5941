// Loss kernels: the drivers. Rows (samples) are grouped into fixed chunks, each handled by one
// thread from start to end, whose partial sums chunked_sum adds in order; within a chunk the
// row kernels (loss_rows.inc, compiled per ISA) sum over kLanes interleaved double partial
// sums folded in a fixed order, so that they vectorise without -ffast-math and the value-only
// and fused paths perform the same additions.
#include "losses.hpp"

#include <string>
#include <vector>

#include "gemm/isa.hpp"
#include "loss_rows.hpp"
#include "parallel.hpp"

namespace densekit {
namespace {

// Rows per chunk are chosen so a chunk holds about this many elements: large enough to
// amortise a task, small enough to spread rows over threads. Depends on the shape only.
constexpr index_t kChunkElements = index_t{1} << 14;
// Below about two chunks' worth of elements a call stays on the calling thread.
constexpr double kGrainElements = 32768.0;

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

// The row kernels of the engine's one ISA choice (DENSEKIT_ISA lowers it for the losses
// too), for loops over `loop_bytes` of data: AVX-512 from two 64-byte vectors (on shorter
// loops its remainders cost more than its width saves), AVX2 below. Every ISA gives the same
// bits (see loss_rows.inc).
template <typename T>
LossKernels<T> isa_loss_kernels(gemm::Isa isa) {
  constexpr bool is_float = sizeof(T) == 4;
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  if (isa == gemm::Isa::avx512) {
    if constexpr (is_float) return avx512_loss_kernels_f32();
    else return avx512_loss_kernels_f64();
  }
  if (isa == gemm::Isa::avx2) {
    if constexpr (is_float) return avx2_loss_kernels_f32();
    else return avx2_loss_kernels_f64();
  }
#endif
  (void)isa;
  if constexpr (is_float) return portable_loss_kernels_f32();
  else return portable_loss_kernels_f64();
}

template <typename T>
const LossKernels<T>& loss_kernels(index_t loop_bytes) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  const gemm::Isa isa = gemm::isa_choice().isa;
  if (isa == gemm::Isa::avx512 && loop_bytes >= 128) {
    static const LossKernels<T> avx512 = isa_loss_kernels<T>(gemm::Isa::avx512);
    return avx512;
  }
  if (isa == gemm::Isa::avx512 || isa == gemm::Isa::avx2) {
    static const LossKernels<T> avx2 = isa_loss_kernels<T>(gemm::Isa::avx2);
    return avx2;
  }
#endif
  (void)loop_bytes;
  static const LossKernels<T> portable = isa_loss_kernels<T>(gemm::Isa::portable);
  return portable;
}

// Rows with no elements (d = 0 or no classes): every per-sample loss is 0, the empty sum
// (or the empty mean, 0 as with Keras's divide_no_nan).
template <typename T>
double empty_rows(T* per_sample, index_t n) {
  if (per_sample != nullptr)
    for (index_t i = 0; i < n; ++i) per_sample[i] = T(0);
  return 0.0;
}

// What every loss runs: nothing for rows without elements, else reduce_rows's chunks, each
// computed by the row kernel `kernel` of the ISA for loops over loop_bytes (see
// loss_kernels), with or without the gradient. args.block_max and args.scratch are set per
// chunk.
template <typename T>
double loss_rows(RowKernel kernel, LossRows<T> args, index_t n, index_t loop_bytes,
                 const LossOptions& options, int num_threads) {
  if (args.width == 0) return empty_rows(args.per_sample, n);
  const bool with_grad = args.grad != nullptr;
  const auto rows = loss_kernels<T>(loop_bytes).rows[static_cast<int>(kernel)][with_grad ? 1 : 0];
  const bool softmax = kernel == RowKernel::softmax_labels_int32 ||
                       kernel == RowKernel::softmax_labels_int64 ||
                       kernel == RowKernel::softmax_probs;
  const size_t blocks = softmax ? online_blocks(args.width, with_grad) : 0;
  const size_t scratch_size = row_scratch(kernel, args.width, with_grad);
  return reduce_rows(n, args.width, options, num_threads, [&](index_t begin, index_t end) {
    std::vector<T> block_max(blocks);
    std::vector<T> scratch(scratch_size);
    LossRows<T> chunk = args;
    chunk.block_max = block_max.data();
    chunk.scratch = scratch.data();
    return rows(chunk, begin, end);
  });
}

Smoothing smoothing_for(double label_smoothing, index_t classes) {
  return {1.0 - label_smoothing, label_smoothing / static_cast<double>(classes)};
}

}  // namespace

const char* loss_name(LossKind kind) {
  switch (kind) {
    case LossKind::mse: return "mse";
    case LossKind::mae: return "mae";
    case LossKind::huber: return "huber";
    case LossKind::softmax_cross_entropy: return "softmax_cross_entropy";
    case LossKind::sigmoid_binary_cross_entropy: return "sigmoid_binary_cross_entropy";
    case LossKind::mape: return "mape";
    case LossKind::msle: return "msle";
    case LossKind::log_cosh: return "log_cosh";
    case LossKind::poisson: return "poisson";
    case LossKind::kl_divergence: return "kl_divergence";
    case LossKind::hinge: return "hinge";
    case LossKind::squared_hinge: return "squared_hinge";
    case LossKind::categorical_hinge: return "categorical_hinge";
    case LossKind::cosine_similarity: return "cosine_similarity";
    case LossKind::sigmoid_focal_cross_entropy: return "sigmoid_focal_cross_entropy";
    case LossKind::softmax_focal_cross_entropy: return "softmax_focal_cross_entropy";
  }
  return "?";
}

template <typename T>
double elementwise_loss(T* grad, T* per_sample, const T* prediction, const T* target,
                        const T* sample_weight, index_t n, index_t d, LossKind kind,
                        const LossOptions& options, int num_threads) {
  RowKernel kernel = RowKernel::mse;
  LossRows<T> args;
  switch (kind) {
    case LossKind::mse: kernel = RowKernel::mse; break;
    case LossKind::mae: kernel = RowKernel::mae; break;
    case LossKind::huber:
      if (!(options.delta > 0.0)) throw ArgumentError("delta: expected a number > 0");
      kernel = RowKernel::huber;
      args.parameter = options.delta;
      break;
    case LossKind::sigmoid_binary_cross_entropy:
      kernel = RowKernel::sigmoid_cross_entropy;
      args.parameter = options.label_smoothing;
      break;
    case LossKind::mape: kernel = RowKernel::mape; break;
    case LossKind::msle: kernel = RowKernel::msle; break;
    case LossKind::log_cosh: kernel = RowKernel::log_cosh; break;
    case LossKind::poisson: kernel = RowKernel::poisson; break;
    case LossKind::kl_divergence: kernel = RowKernel::kl_divergence; break;
    case LossKind::hinge: kernel = RowKernel::hinge; break;
    case LossKind::squared_hinge: kernel = RowKernel::squared_hinge; break;
    case LossKind::categorical_hinge: kernel = RowKernel::categorical_hinge; break;
    case LossKind::cosine_similarity: kernel = RowKernel::cosine_similarity; break;
    case LossKind::sigmoid_focal_cross_entropy:
      if (!(options.gamma >= 0.0)) throw ArgumentError("gamma: expected a number >= 0");
      kernel = RowKernel::focal_sigmoid_cross_entropy;
      args.parameter = options.label_smoothing;
      args.alpha = options.alpha;
      args.gamma = options.gamma;
      args.balanced = options.apply_class_balancing;
      break;
    case LossKind::softmax_focal_cross_entropy:
      if (!(options.gamma >= 0.0)) throw ArgumentError("gamma: expected a number >= 0");
      kernel = RowKernel::focal_softmax_cross_entropy;
      args.parameter = options.label_smoothing;
      args.alpha = options.alpha;
      args.gamma = options.gamma;
      break;
    case LossKind::softmax_cross_entropy:
      throw ArgumentError("elementwise_loss: softmax_cross_entropy is not an elementwise loss");
  }
  args.grad = grad;
  args.per_sample = per_sample;
  args.prediction = prediction;
  args.target = target;
  args.sample_weight = sample_weight;
  args.width = d;
  args.scale = reduction_scale(n, options);
  const index_t loop_bytes = (d == 1 ? kLossBlock : d) * static_cast<index_t>(sizeof(T));
  return loss_rows(kernel, args, n, loop_bytes, options, num_threads);
}

template <typename T>
void loss_log_with_isa(gemm::Isa isa, T* out, const T* x, index_t count, bool plus_one) {
  isa_loss_kernels<T>(isa).log[plus_one ? 1 : 0](out, x, count);
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
  LossRows<T> args;
  args.grad = grad;
  args.per_sample = per_sample;
  args.prediction = logits;
  args.labels = labels;
  args.sample_weight = sample_weight;
  args.width = c;
  args.scale = reduction_scale(n, options);
  args.smoothing = smoothing_for(options.label_smoothing, c);
  const RowKernel kernel = sizeof(Label) == 4 ? RowKernel::softmax_labels_int32
                                              : RowKernel::softmax_labels_int64;
  return loss_rows(kernel, args, n, c * index_t(sizeof(T)), options, num_threads);
}

template <typename T>
double softmax_cross_entropy_probs(T* grad, T* per_sample, const T* logits, const T* target,
                                   const T* sample_weight, index_t n, index_t c,
                                   const LossOptions& options, int num_threads) {
  LossRows<T> args;
  args.grad = grad;
  args.per_sample = per_sample;
  args.prediction = logits;
  args.target = target;
  args.sample_weight = sample_weight;
  args.width = c;
  args.scale = reduction_scale(n, options);
  args.smoothing = smoothing_for(options.label_smoothing, c);
  return loss_rows(RowKernel::softmax_probs, args, n, c * index_t(sizeof(T)), options,
                   num_threads);
}

#define DENSEKIT_INSTANTIATE_LABEL(T, L)                                                     \
  template double softmax_cross_entropy_labels<T, L>(T*, T*, const T*, const L*, const T*,   \
                                                     index_t, index_t, const LossOptions&, int);
#define DENSEKIT_INSTANTIATE(T)                                                              \
  template double elementwise_loss<T>(T*, T*, const T*, const T*, const T*, index_t, index_t, \
                                      LossKind, const LossOptions&, int);                    \
  template double softmax_cross_entropy_probs<T>(T*, T*, const T*, const T*, const T*,        \
                                                 index_t, index_t, const LossOptions&, int); \
  template void loss_log_with_isa<T>(gemm::Isa, T*, const T*, index_t, bool);                \
  DENSEKIT_INSTANTIATE_LABEL(T, std::int32_t)                                                \
  DENSEKIT_INSTANTIATE_LABEL(T, std::int64_t)
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
template index_t first_label_out_of_range<std::int32_t>(const std::int32_t*, index_t, index_t);
template index_t first_label_out_of_range<std::int64_t>(const std::int64_t*, index_t, index_t);
#undef DENSEKIT_INSTANTIATE
#undef DENSEKIT_INSTANTIATE_LABEL

}  // namespace densekit
