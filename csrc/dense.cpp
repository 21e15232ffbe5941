// Dense layer kernels on top of the matrix-product engine.
#include "dense.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "gemm/gemm.hpp"
#include "gemm/scratch.hpp"
#include "lowp/bf16_dense.hpp"
#include "lowp/int8_gemm.hpp"
#include "parallel.hpp"
#include "vecmath/vecmath.hpp"

namespace densekit {
namespace {

// The bias-gradient sum's columns are split among the threads in runs of this many (64 bytes
// of float32).
constexpr index_t kColumnAlign = 16;

thread_local gemm::Scratch t_chain_scratch;  // two intermediate outputs of a chain
// dz of a backward whose derivative is not folded into the products: kept between calls, as
// a fresh buffer each call costs its page faults (8192 x 512 float32: ~3 ms of a 56 ms
// forward + backward with gelu).
thread_local gemm::Scratch t_dz_scratch;

}  // namespace

// Each column's sum runs over the rows in row order in double precision, so the result does
// not depend on the thread count. A thread takes one range of columns and walks the rows in
// order, adding each row's run into its sums (kept in cache): dz is read as it lies in memory
// (a task per 64 columns read 256 bytes of every row: dz of 4096 x 512, 1.6 against 0.55 ms on
// 1 thread, Intel Xeon).
template <typename T>
void dense_bias_gradient(T* db, const T* dz, index_t n, index_t m, bool accumulate, int num_threads) {
  if (m <= 0) return;
  const index_t runs = (m + kColumnAlign - 1) / kColumnAlign;
  const int threads = static_cast<int>(
      std::min<index_t>(threads_for_work(num_threads, double(n) * m, 1 << 15), runs));
  parallel_for(threads, threads, [&](index_t task) {
    const index_t c0 = std::min(m, runs * task / threads * kColumnAlign);
    const index_t c1 = std::min(m, runs * (task + 1) / threads * kColumnAlign);
    thread_local std::vector<double> t_sums;
    t_sums.assign(static_cast<size_t>(c1 - c0), 0.0);
    double* sums = t_sums.data();
    if (!vecmath::vector_column_sums(sums, dz + c0, n, c1 - c0, m))  // the ISA's vectors
      for (index_t r = 0; r < n; ++r) {
        const T* row = dz + r * m + c0;
        for (index_t c = 0; c < c1 - c0; ++c) sums[c] += static_cast<double>(row[c]);
      }
    for (index_t c = c0; c < c1; ++c) {
      const double total = accumulate ? static_cast<double>(db[c]) + sums[c - c0] : sums[c - c0];
      db[c] = static_cast<T>(total);
    }
  });
}


template <typename T>
void dense_forward(T* y, T* preact, const T* x, const T* w, const T* b, index_t n, index_t k,
                   index_t m, const Activation& act, int num_threads,
                   const gemm::PackedB<T>* packed_w) {
  gemm::Epilogue<T> ep;
  ep.bias = b;
  ep.preact = preact;
  ep.ld_preact = m;
  // A row activation (softmax, log_softmax) is applied to the stored rows afterwards.
  const bool row_wise = is_row_activation(act.kind);
  ep.activation = row_wise ? Activation{} : act;
  gemm::gemm<T>(n, m, k, {x, k, false}, {w, m, false, {}, packed_w}, y, m, ep, num_threads);
  if (row_wise) activation_forward(y, y, n, m, act, num_threads);
}

template <typename T>
gemm::PackedB<T> pack_weights(const T* w, index_t k, index_t m, int num_threads) {
  return gemm::pack_b<T>(w, m, k, m, num_threads);
}

// dz = dy * f'(.) folded into the packing of dy when f' costs a compare or two multiplies:
// returns false (dz must be stored) for the others.
template <typename T>
bool fold_derivative(const Activation& act, const T* y, const T* z, gemm::Scaling<T>* scale) {
  const bool use_y = derivative_from_output(act) && y != nullptr;
  switch (act.kind) {
    case ActivationKind::linear: scale->kind = gemm::Scale::none; return true;
    case ActivationKind::relu:
    case ActivationKind::leaky_relu:
      scale->kind = gemm::Scale::positive;
      scale->from = use_y ? y : z;
      scale->alpha = act.kind == ActivationKind::relu ? T(0) : static_cast<T>(act.alpha);
      return scale->from != nullptr;
    case ActivationKind::sigmoid:
    case ActivationKind::tanh:
      if (!use_y) return false;
      scale->kind = act.kind == ActivationKind::sigmoid ? gemm::Scale::sigmoid_y : gemm::Scale::tanh_y;
      scale->from = y;
      return true;
    default: return false;
  }
}

template <typename T>
void dense_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                    const T* preact, index_t n, index_t k, index_t m, const Activation& act,
                    bool accumulate, int num_threads) {
  // dz is dy scaled while it is packed (both products), or stored once when f' is costly.
  gemm::Scaling<T> scale;
  const T* dz = dy;
  auto store_dz = [&] {
    T* buffer = static_cast<T*>(t_dz_scratch.get(buffer_bytes(n, m, sizeof(T))));
    activation_backward(buffer, dy, y, preact, n, m, act, num_threads);
    dz = buffer;
  };
  if (!fold_derivative(act, y, preact, &scale)) {
    scale = gemm::Scaling<T>{};
    store_dz();
  }
  const gemm::Operand<T> dz_operand{dz, m, false, scale};

  // db in the weight gradient's sweep over dz: per column, in row order, in double.
  const bool db_in_sweep = db != nullptr && dw != nullptr && k > 0;
  std::vector<double> sums;
  if (db_in_sweep) sums.assign(static_cast<size_t>(m + 64), 0.0);
  if (dw != nullptr) {
    gemm::Epilogue<T> ep;
    ep.accumulate = accumulate;
    ep.b_sums = db_in_sweep ? sums.data() : nullptr;
    gemm::gemm<T>(k, m, n, {x, k, true}, dz_operand, dw, m, ep, num_threads);
  }
  if (db_in_sweep) {
    for (index_t c = 0; c < m; ++c) {
      const double total = accumulate ? static_cast<double>(db[c]) + sums[c] : sums[c];
      db[c] = static_cast<T>(total);
    }
  } else if (db != nullptr) {
    if (scale.kind != gemm::Scale::none) store_dz();
    dense_bias_gradient(db, dz, n, m, accumulate, num_threads);
  }
  if (dx != nullptr) {
    gemm::Epilogue<T> ep;
    gemm::gemm<T>(n, k, m, dz_operand, {w, m, true}, dx, k, ep, num_threads);
  }
  t_dz_scratch.trim();
}

template <typename T>
void dense_chain_forward(T* y, const T* x, index_t n, const DenseStep<T>* steps, int count,
                         int num_threads) {
  if (count <= 0) return;
  index_t widest = 0;
  for (int s = 0; s + 1 < count; ++s) widest = std::max(widest, steps[s].m);
  // Two intermediates of (n, widest), each rounded to whole cache lines; a size that
  // overflows throws std::bad_alloc instead of wrapping to a small buffer.
  const size_t buffer = (buffer_bytes(n, widest, 1) + 15) / 16 * 16;
  T* scratch = count > 1 ? static_cast<T*>(t_chain_scratch.get(buffer_bytes(2, buffer, sizeof(T))))
                         : nullptr;
  const T* source = x;
  for (int s = 0; s < count; ++s) {
    const DenseStep<T>& step = steps[s];
    T* target = s + 1 == count ? y : scratch + size_t(s % 2) * buffer;
    if (step.bf16 != nullptr || step.int8 != nullptr) {
      if constexpr (std::is_same_v<T, float>) {
        if (step.bf16 != nullptr) {
          lowp::dense_forward_bf16(target, nullptr, source, *step.bf16, step.b, n, step.act,
                                   num_threads);
        } else {
          lowp::Int8Epilogue ep;
          ep.bias = step.b;
          ep.activation = step.act;
          lowp::dense_int8(n, source, *step.int8, target, ep, num_threads);
        }
      } else {
        throw ArgumentError("dense_chain_forward: an int8 or bf16 step in a float64 chain");
      }
    } else if (step.w != nullptr) {
      dense_forward<T>(target, nullptr, source, step.w, step.b, n, step.k, step.m, step.act,
                       num_threads);
    } else {
      activation_forward<T>(target, source, n, step.m, step.act, num_threads);
    }
    source = target;
  }
  t_chain_scratch.trim();
}

#define DENSEKIT_INSTANTIATE(T)                                                               \
  template void dense_forward<T>(T*, T*, const T*, const T*, const T*, index_t, index_t,      \
                                 index_t, const Activation&, int, const gemm::PackedB<T>*);  \
  template gemm::PackedB<T> pack_weights<T>(const T*, index_t, index_t, int);                \
  template void dense_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,         \
                                  const T*, index_t, index_t, index_t, const Activation&,     \
                                  bool, int);                                                 \
  template void dense_bias_gradient<T>(T*, const T*, index_t, index_t, bool, int);          \
  template void dense_chain_forward<T>(T*, const T*, index_t, const DenseStep<T>*, int, int);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit
