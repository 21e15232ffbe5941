// Blocking, packing, task split and epilogue of the matrix product (see gemm.hpp).
#include "gemm.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>

#include "microkernels.hpp"
#include "parallel.hpp"

namespace densekit::gemm {
namespace {

// kc is fixed by k alone (never by threads): it fixes the order of the k-sum for each element.
constexpr index_t kKc = 256;
constexpr index_t kMc = 96;
constexpr index_t kNc = 1024;
constexpr size_t kAlign = 64;

template <typename T>
const Microkernel<T>& active_microkernel();

template <>
const Microkernel<float>& active_microkernel<float>() {
  static const Microkernel<float> kernel = portable_microkernel_f32();
  return kernel;
}

template <>
const Microkernel<double>& active_microkernel<double>() {
  static const Microkernel<double> kernel = portable_microkernel_f64();
  return kernel;
}

struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};

template <typename T>
std::unique_ptr<T, AlignedFree> aligned_buffer(size_t count) {
  const size_t bytes = ((count * sizeof(T) + kAlign - 1) / kAlign) * kAlign;
  void* p = std::aligned_alloc(kAlign, std::max<size_t>(bytes, kAlign));
  if (p == nullptr) throw std::bad_alloc();
  return std::unique_ptr<T, AlignedFree>(static_cast<T*>(p));
}

template <typename T>
inline T element(const Operand<T>& x, index_t i, index_t j) {
  return x.transposed ? x.data[j * x.ld + i] : x.data[i * x.ld + j];
}

// Rows [i0, i0 + rows) x cols [p0, p0 + kc) of A into panels of mr rows, zero-padded.
template <typename T>
void pack_a(const Operand<T>& a, index_t i0, index_t rows, index_t p0, index_t kc, int mr,
            T* out) {
  for (index_t ir = 0; ir < rows; ir += mr) {
    const index_t h = std::min<index_t>(mr, rows - ir);
    if (!a.transposed) {
      for (index_t p = 0; p < kc; ++p) {
        T* dst = out + p * mr;
        for (index_t i = 0; i < h; ++i) dst[i] = a.data[(i0 + ir + i) * a.ld + p0 + p];
        for (index_t i = h; i < mr; ++i) dst[i] = T(0);
      }
    } else {
      for (index_t p = 0; p < kc; ++p) {
        const T* src = a.data + (p0 + p) * a.ld + i0 + ir;
        T* dst = out + p * mr;
        for (index_t i = 0; i < h; ++i) dst[i] = src[i];
        for (index_t i = h; i < mr; ++i) dst[i] = T(0);
      }
    }
    out += kc * mr;
  }
}

// Rows [p0, p0 + kc) x cols [j0, j0 + cols) of B into panels of nr columns, zero-padded.
template <typename T>
void pack_b(const Operand<T>& b, index_t p0, index_t kc, index_t j0, index_t cols, int nr,
            T* out) {
  for (index_t jr = 0; jr < cols; jr += nr) {
    const index_t w = std::min<index_t>(nr, cols - jr);
    if (!b.transposed) {
      for (index_t p = 0; p < kc; ++p) {
        const T* src = b.data + (p0 + p) * b.ld + j0 + jr;
        T* dst = out + p * nr;
        for (index_t j = 0; j < w; ++j) dst[j] = src[j];
        for (index_t j = w; j < nr; ++j) dst[j] = T(0);
      }
    } else {
      for (index_t p = 0; p < kc; ++p) {
        T* dst = out + p * nr;
        for (index_t j = 0; j < w; ++j) dst[j] = b.data[(j0 + jr + j) * b.ld + p0 + p];
        for (index_t j = w; j < nr; ++j) dst[j] = T(0);
      }
    }
    out += kc * nr;
  }
}

// Folds one computed tile into C; on the last k-block also applies bias and activation.
template <typename T>
void store_tile(const T* tile, int nr, index_t rows, index_t cols, index_t i0, index_t j0,
                bool load_c, bool last, T* c, index_t ldc, const Epilogue<T>& ep) {
  const T alpha = static_cast<T>(ep.activation.alpha);
  for (index_t i = 0; i < rows; ++i) {
    T* crow = c + (i0 + i) * ldc + j0;
    const T* trow = tile + i * nr;
    if (!last) {
      if (load_c) {
        for (index_t j = 0; j < cols; ++j) crow[j] += trow[j];
      } else {
        for (index_t j = 0; j < cols; ++j) crow[j] = trow[j];
      }
      continue;
    }
    for (index_t j = 0; j < cols; ++j) {
      T v = load_c ? crow[j] + trow[j] : trow[j];
      if (ep.bias != nullptr) v += ep.bias[j0 + j];
      if (ep.preact != nullptr) ep.preact[(i0 + i) * ep.ld_preact + j0 + j] = v;
      crow[j] = scalar::forward(ep.activation.kind, alpha, v);
    }
  }
}

// C = (accumulate ? C : 0) with the epilogue, for k == 0.
template <typename T>
void epilogue_only(index_t m, index_t n, T* c, index_t ldc, const Epilogue<T>& ep,
                   int num_threads) {
  const T alpha = static_cast<T>(ep.activation.alpha);
  parallel_for(m, threads_for_work(num_threads, double(m) * n, 1 << 15), [&](index_t i) {
    T* crow = c + i * ldc;
    for (index_t j = 0; j < n; ++j) {
      T v = ep.accumulate ? crow[j] : T(0);
      if (ep.bias != nullptr) v += ep.bias[j];
      if (ep.preact != nullptr) ep.preact[i * ep.ld_preact + j] = v;
      crow[j] = scalar::forward(ep.activation.kind, alpha, v);
    }
  });
}

}  // namespace

template <typename T>
const char* gemm_kernel_name() {
  return active_microkernel<T>().name;
}

template <typename T>
void gemm(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c, index_t ldc,
          const Epilogue<T>& ep, int num_threads) {
  if (ep.activation.kind == ActivationKind::softmax)
    throw ArgumentError("gemm epilogue: softmax is a row operation, not elementwise");
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    epilogue_only(m, n, c, ldc, ep, num_threads);
    return;
  }
  const Microkernel<T>& kernel = active_microkernel<T>();
  const int mr = kernel.mr;
  const int nr = kernel.nr;
  const index_t kc_max = std::min(k, kKc);
  const index_t mc = std::min(((kMc + mr - 1) / mr) * mr, ((m + mr - 1) / mr) * mr);

  // Tile widths only change which task computes an element, never its value, so they may
  // depend on the thread count: narrow the column blocks until every thread has work.
  const int threads = threads_for_work(num_threads, 2.0 * m * n * k, 1 << 20);
  const index_t m_blocks = (m + mc - 1) / mc;
  index_t nc = std::min(kNc, ((n + nr - 1) / nr) * nr);
  while (nc > nr && m_blocks * ((n + nc - 1) / nc) < 2 * threads)
    nc = std::max<index_t>(nr, ((nc / 2 + nr - 1) / nr) * nr);
  const index_t n_blocks = (n + nc - 1) / nc;

  parallel_for(m_blocks * n_blocks, threads, [&](index_t task) {
    const index_t i0 = (task / n_blocks) * mc;
    const index_t j0 = (task % n_blocks) * nc;
    const index_t rows = std::min(mc, m - i0);
    const index_t cols = std::min(nc, n - j0);
    const index_t rows_padded = ((rows + mr - 1) / mr) * mr;
    const index_t cols_padded = ((cols + nr - 1) / nr) * nr;
    auto a_pack = aligned_buffer<T>(static_cast<size_t>(rows_padded * kc_max));
    auto b_pack = aligned_buffer<T>(static_cast<size_t>(cols_padded * kc_max));
    T tile[64 * 64];
    for (index_t p0 = 0; p0 < k; p0 += kKc) {
      const index_t kc = std::min(kKc, k - p0);
      const bool load_c = ep.accumulate || p0 > 0;
      const bool last = p0 + kc >= k;
      pack_a(a, i0, rows, p0, kc, mr, a_pack.get());
      pack_b(b, p0, kc, j0, cols, nr, b_pack.get());
      for (index_t jr = 0; jr < cols; jr += nr) {
        const T* bp = b_pack.get() + (jr / nr) * kc * nr;
        for (index_t ir = 0; ir < rows; ir += mr) {
          const T* ap = a_pack.get() + (ir / mr) * kc * mr;
          kernel.fn(kc, ap, bp, tile);
          store_tile(tile, nr, std::min<index_t>(mr, rows - ir), std::min<index_t>(nr, cols - jr),
                     i0 + ir, j0 + jr, load_c, last, c, ldc, ep);
        }
      }
    }
  });
}

template <typename T>
void gemm_reference(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c,
                    index_t ldc, const Epilogue<T>& ep) {
  const T alpha = static_cast<T>(ep.activation.alpha);
  for (index_t i = 0; i < m; ++i) {
    for (index_t j = 0; j < n; ++j) {
      T v = T(0);
      for (index_t p = 0; p < k; ++p) v += element(a, i, p) * element(b, p, j);
      if (ep.accumulate) v += c[i * ldc + j];
      if (ep.bias != nullptr) v += ep.bias[j];
      if (ep.preact != nullptr) ep.preact[i * ep.ld_preact + j] = v;
      c[i * ldc + j] = scalar::forward(ep.activation.kind, alpha, v);
    }
  }
}

#define DENSEKIT_INSTANTIATE(T)                                                             \
  template void gemm<T>(index_t, index_t, index_t, Operand<T>, Operand<T>, T*, index_t,     \
                        const Epilogue<T>&, int);                                           \
  template void gemm_reference<T>(index_t, index_t, index_t, Operand<T>, Operand<T>, T*,    \
                                  index_t, const Epilogue<T>&);                             \
  template const char* gemm_kernel_name<T>();
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit::gemm
