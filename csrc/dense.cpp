// Dense layer kernels on top of the matrix-product engine.
#include "dense.hpp"

#include <algorithm>
#include <vector>

#include "gemm/gemm.hpp"
#include "parallel.hpp"

namespace densekit {
namespace {

// Columns per task of the bias-gradient sum; each task sums its columns over all rows in
// row order, so the result does not depend on the thread count.
constexpr index_t kColumnBlock = 64;

template <typename T>
void column_sums(T* db, const T* dz, index_t n, index_t m, bool accumulate, int num_threads) {
  const index_t n_tasks = (m + kColumnBlock - 1) / kColumnBlock;
  const int threads = threads_for_work(num_threads, double(n) * m, 1 << 15);
  parallel_for(n_tasks, threads, [&](index_t task) {
    const index_t c0 = task * kColumnBlock;
    const index_t c1 = std::min(m, c0 + kColumnBlock);
    double sums[kColumnBlock] = {};
    for (index_t r = 0; r < n; ++r) {
      const T* row = dz + r * m;
      for (index_t c = c0; c < c1; ++c) sums[c - c0] += static_cast<double>(row[c]);
    }
    for (index_t c = c0; c < c1; ++c) {
      const double total = accumulate ? static_cast<double>(db[c]) + sums[c - c0] : sums[c - c0];
      db[c] = static_cast<T>(total);
    }
  });
}

}  // namespace

template <typename T>
void dense_forward(T* y, T* preact, const T* x, const T* w, const T* b, index_t n, index_t k,
                   index_t m, const Activation& act, int num_threads) {
  gemm::Epilogue<T> ep;
  ep.bias = b;
  ep.preact = preact;
  ep.ld_preact = m;
  const bool row_softmax = act.kind == ActivationKind::softmax;
  ep.activation = row_softmax ? Activation{} : act;
  gemm::gemm<T>(n, m, k, {x, k, false}, {w, m, false}, y, m, ep, num_threads);
  if (row_softmax) activation_forward(y, y, n, m, act, num_threads);
}

template <typename T>
void dense_backward(T* dx, T* dw, T* db, const T* dy, const T* x, const T* w, const T* y,
                    const T* preact, index_t n, index_t k, index_t m, const Activation& act,
                    bool accumulate, int num_threads) {
  const T* dz = dy;
  std::vector<T> dz_buffer;
  if (!derivative_is_one(act)) {
    dz_buffer.resize(static_cast<size_t>(n * m));
    activation_backward(dz_buffer.data(), dy, y, preact, n, m, act, num_threads);
    dz = dz_buffer.data();
  }
  if (db != nullptr) column_sums(db, dz, n, m, accumulate, num_threads);
  if (dw != nullptr) {
    gemm::Epilogue<T> ep;
    ep.accumulate = accumulate;
    gemm::gemm<T>(k, m, n, {x, k, true}, {dz, m, false}, dw, m, ep, num_threads);
  }
  if (dx != nullptr) {
    gemm::Epilogue<T> ep;
    gemm::gemm<T>(n, k, m, {dz, m, false}, {w, m, true}, dx, k, ep, num_threads);
  }
}

template <typename T>
void dense_forward_reference(T* y, T* preact, const T* x, const T* w, const T* b, index_t n,
                             index_t k, index_t m, const Activation& act) {
  gemm::Epilogue<T> ep;
  ep.bias = b;
  ep.preact = preact;
  ep.ld_preact = m;
  const bool row_softmax = act.kind == ActivationKind::softmax;
  ep.activation = row_softmax ? Activation{} : act;
  gemm::gemm_reference<T>(n, m, k, {x, k, false}, {w, m, false}, y, m, ep);
  if (row_softmax) softmax_rows_inplace(y, n, m, m);
}

#define DENSEKIT_INSTANTIATE(T)                                                               \
  template void dense_forward<T>(T*, T*, const T*, const T*, const T*, index_t, index_t,      \
                                 index_t, const Activation&, int);                           \
  template void dense_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,         \
                                  const T*, index_t, index_t, index_t, const Activation&,     \
                                  bool, int);                                                 \
  template void dense_forward_reference<T>(T*, T*, const T*, const T*, const T*, index_t,     \
                                           index_t, index_t, const Activation&);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit
