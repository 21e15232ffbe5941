// The losses' row kernels, compiled once per ISA (losses_avx512.cpp, losses_avx2.cpp,
// losses_portable.cpp, each including loss_rows.inc with its own flags) and reached through
// a LossKernels table chosen by the engine's one ISA choice (see losses.cpp). Internal to the
// losses.
#pragma once

#include <cstddef>

#include "common.hpp"

namespace densekit {

// Values are computed into stack buffers of this many, then summed.
constexpr index_t kLossBlock = 256;
// Softmax rows longer than this take the online sweep (see loss_rows.inc).
constexpr index_t kOnlineColumns = 2 * kLossBlock;

// Entries of the online sweep's block_max: one per block of a long row with a gradient.
inline size_t online_blocks(index_t c, bool with_grad) {
  return with_grad && c > kOnlineColumns
             ? static_cast<size_t>((c + kLossBlock - 1) / kLossBlock)
             : 0;
}

// Smoothing of one row: t -> t keep + spread.
struct Smoothing {
  double keep;    // 1 - ls
  double spread;  // ls / c
};

// The arguments of a row kernel: rows [begin, end) of `width` elements (d, or c classes).
template <typename T>
struct LossRows {
  T* grad = nullptr;  // null: the value only
  T* per_sample = nullptr;
  const T* prediction = nullptr;  // or the logits
  const T* target = nullptr;      // null with labels
  const void* labels = nullptr;   // int32 or int64 class indices, per the kernel
  const T* sample_weight = nullptr;
  index_t width = 0;
  double scale = 1.0;      // d(returned loss) / d(w_i l_i)
  double parameter = 0.0;  // huber's delta, the sigmoid cross-entropies' label smoothing
  double alpha = 0.25;     // focal: the class balance
  double gamma = 2.0;      // focal: the focusing exponent
  bool balanced = false;   // focal: apply_class_balancing
  Smoothing smoothing{1.0, 0.0};  // softmax cross-entropy
  T* block_max = nullptr;         // online_blocks(width, grad != null) entries (softmax)
  T* scratch = nullptr;           // row_scratch(kernel, width, grad != null) entries
};

enum class RowKernel : int {
  mse,
  mae,
  huber,
  sigmoid_cross_entropy,
  softmax_labels_int32,
  softmax_labels_int64,
  softmax_probs,
  mape,
  msle,
  log_cosh,
  poisson,
  kl_divergence,
  hinge,
  squared_hinge,
  focal_sigmoid_cross_entropy,
  categorical_hinge,
  cosine_similarity,
  focal_softmax_cross_entropy,
  count,
};

// Entries of a row kernel's scratch (LossRows::scratch): one row for the categorical focal
// cross-entropy with a gradient.
inline size_t row_scratch(RowKernel kernel, index_t width, bool with_grad) {
  return with_grad && kernel == RowKernel::focal_softmax_cross_entropy
             ? static_cast<size_t>(width)
             : 0;
}

// rows[kernel][with_grad](args, begin, end): the sum of the rows' weighted losses.
// log[plus_one](out, x, count): out[j] = log(x[j]) (log1p) as the kernels compute it.
template <typename T>
struct LossKernels {
  double (*rows[static_cast<int>(RowKernel::count)][2])(const LossRows<T>&, index_t begin,
                                                         index_t end) = {};
  void (*log[2])(T* out, const T* x, index_t count) = {};
};

LossKernels<float> portable_loss_kernels_f32();
LossKernels<double> portable_loss_kernels_f64();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
LossKernels<float> avx2_loss_kernels_f32();
LossKernels<double> avx2_loss_kernels_f64();
LossKernels<float> avx512_loss_kernels_f32();
LossKernels<double> avx512_loss_kernels_f64();
#endif

}  // namespace densekit
