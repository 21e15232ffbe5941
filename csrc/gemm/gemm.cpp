// The matrix-product entry points (see gemm.hpp): ISA families, argument checks, k == 0, the
// paths for a transposed B (dot products for a short A; C^T = B^T A^T for a short A against a
// large B), and the blocked product (blocked.cpp) for everything else.
#include "gemm.hpp"

#include <algorithm>
#include <string>
#include <vector>

#include "blocked.hpp"
#include "microkernels.hpp"
#include "parallel.hpp"
#include "scratch.hpp"

namespace densekit::gemm {
namespace {

thread_local Scratch t_swap_scratch;  // C^T of a swapped product, or a scaled short A

// The kernel family of an ISA, built on first use. Only an ISA the CPU supports may be asked
// for: even building a family runs code compiled with that ISA's flags.
template <typename T>
const KernelFamily<T>& family(Isa isa);

template <>
const KernelFamily<float>& family<float>(Isa isa) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  if (isa == Isa::avx512) {
    static const KernelFamily<float> avx512 = avx512_kernels_f32();
    return avx512;
  }
  if (isa == Isa::avx2) {
    static const KernelFamily<float> avx2 = avx2_kernels_f32();
    return avx2;
  }
#endif
  (void)isa;
  static const KernelFamily<float> portable = portable_kernels_f32();
  return portable;
}

template <>
const KernelFamily<double>& family<double>(Isa isa) {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  if (isa == Isa::avx512) {
    static const KernelFamily<double> avx512 = avx512_kernels_f64();
    return avx512;
  }
  if (isa == Isa::avx2) {
    static const KernelFamily<double> avx2 = avx2_kernels_f64();
    return avx2;
  }
#endif
  (void)isa;
  static const KernelFamily<double> portable = portable_kernels_f64();
  return portable;
}

template <typename T>
inline T element(const Operand<T>& x, index_t i, index_t j) {
  return x.transposed ? x.data[j * x.ld + i] : x.data[i * x.ld + j];
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

template <typename T>
bool plain_epilogue(const Epilogue<T>& ep) {
  return ep.bias == nullptr && ep.preact == nullptr && !ep.accumulate && ep.b_sums == nullptr &&
         ep.activation.kind == ActivationKind::linear;
}

template <typename T>
void run_gemm(const KernelFamily<T>& kernels, index_t m, index_t n, index_t k,
              const Operand<T>& a, const Operand<T>& b, T* c, index_t ldc,
              const Epilogue<T>& ep, int num_threads) {
  if (is_row_activation(ep.activation.kind))
    throw ArgumentError(std::string("gemm epilogue: ") + activation_name(ep.activation.kind) +
                        " is a row operation, not elementwise");
  if (ep.b_sums != nullptr && b.transposed)
    throw ArgumentError("gemm: column sums of B need B not transposed");
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    epilogue_only(m, n, c, ldc, ep, num_threads);
    return;
  }
  // A short A against a transposed B (batch 1..4 of dx = dz @ w^T): dot products along the
  // rows of B, read once in place; columns split in chunks among threads. A scaled A (dz) is
  // scaled into a small buffer first.
  if (b.transposed && !a.transposed && m <= 4 && plain_epilogue(ep) && tuning().swap != 0) {
    const T* a_rows = a.data;
    index_t lda = a.ld;
    if (a.scale.kind != Scale::none) {
      // Each row is written rounded up to whole vectors; the next row overwrites the excess.
      const int width = static_cast<int>(round_up(k, kernels.lanes));
      T* scaled = static_cast<T*>(t_swap_scratch.get(sizeof(T) * size_t(m * k + width)));
      for (index_t i = 0; i < m; ++i)
        kernels.pack_panels(a.data + i * a.ld, a.ld, 1, k, width, scaled + i * k,
                            pack_scale(a.scale, i * a.ld), nullptr);
      a_rows = scaled;
      lda = k;
    }
    const index_t chunk = 64;
    const double stream_ns = double(k) * double(n) * double(sizeof(T)) / 80.0;
    parallel_for(ceil_div(n, chunk), threads_for_work(num_threads, stream_ns, tuning().grain),
                 [&](index_t task) {
                   const index_t j0 = task * chunk;
                   kernels.dot(a_rows, lda, static_cast<int>(m), b.data + j0 * b.ld, b.ld,
                               std::min(chunk, n - j0), k, c + j0, ldc);
                 });
    return;
  }
  // A transposed B must be transposed while packed (k x n elements). When A is much smaller
  // (a short batch times a large weight: dense backward's dx = dz @ w^T), compute
  // C^T = op(B)^T op(A)^T instead, reading B in place, and transpose C^T into C. Since
  // fma(a, b, c) == fma(b, a, c), every element gets the same bits either way.
  if (b.transposed && !a.transposed && ldc == n && plain_epilogue(ep) &&
      2 * m * (k + n) < k * n && tuning().swap != 0) {
    T* ct = static_cast<T*>(t_swap_scratch.get(sizeof(T) * size_t(m) * size_t(n)));
    const Operand<T> a_swapped{b.data, b.ld, false, b.scale};
    const Operand<T> b_swapped{a.data, a.ld, true, a.scale};
    run_gemm(kernels, n, m, k, a_swapped, b_swapped, ct, m, Epilogue<T>{}, num_threads);
    const index_t chunk = 256;
    parallel_for(ceil_div(n, chunk), threads_for_work(num_threads, double(m) * n, 1 << 16),
                 [&](index_t task) {
                   const index_t j0 = task * chunk;
                   const int rows = static_cast<int>(std::min(chunk, n - j0));
                   // Rows j0.. of C^T (m values each) become columns j0.. of C.
                   kernels.pack_transposed(ct + j0 * m, m, m, rows, rows, c + j0, ldc,
                                           PackScale<T>{});
                 });
    t_swap_scratch.trim();
    return;
  }
  blocked_gemm(kernels, m, n, k, a, b, c, ldc, ep, num_threads);
}

}  // namespace

template <typename T>
PackedB<T> pack_b(const T* b, index_t ld, index_t k, index_t n, int num_threads) {
  if (k <= 0 || n <= 0) {
    PackedB<T> empty;
    empty.k = std::max<index_t>(k, 0);
    empty.n = std::max<index_t>(n, 0);
    return empty;  // never read: a product with k or n 0 packs nothing
  }
  return pack_b_for(family<T>(isa_choice().isa), b, ld, k, n, num_threads);
}

template <typename T>
double fma_peak_probe(index_t steps, int num_threads) {
  const KernelFamily<T>& kernels = family<T>(isa_choice().isa);
  // 16 chunks per thread: however late a thread starts, the others take its share.
  const int threads = std::max(num_threads, 1);
  const index_t chunks = index_t(threads) * 16;
  std::vector<double> flops(static_cast<size_t>(chunks), 0.0);
  parallel_for(chunks, threads, [&](index_t i) {
    flops[size_t(i)] = kernels.fma_probe(steps * (i + 1) / chunks - steps * i / chunks);
  });
  double total = 0.0;
  for (const double f : flops) total += f;
  return total;
}

template <typename T>
const char* gemm_kernel_name() {
  return family<T>(isa_choice().isa).name;
}

template <typename T>
const char* gemm_kernel_name(Isa isa) {
  if (!isa_supported(isa)) return "";
  return family<T>(isa).name;
}

template <typename T>
void gemm(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c, index_t ldc,
          const Epilogue<T>& ep, int num_threads) {
  run_gemm(family<T>(isa_choice().isa), m, n, k, a, b, c, ldc, ep, num_threads);
}

template <typename T>
void gemm_with_isa(Isa isa, index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c,
                   index_t ldc, const Epilogue<T>& ep, int num_threads) {
  if (!isa_supported(isa))
    throw ArgumentError(std::string("gemm: ISA '") + isa_name(isa) +
                        "' is not supported by this CPU/build");
  run_gemm(family<T>(isa), m, n, k, a, b, c, ldc, ep, num_threads);
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
  template void gemm_with_isa<T>(Isa, index_t, index_t, index_t, Operand<T>, Operand<T>, T*, \
                                 index_t, const Epilogue<T>&, int);                         \
  template void gemm_reference<T>(index_t, index_t, index_t, Operand<T>, Operand<T>, T*,    \
                                  index_t, const Epilogue<T>&);                             \
  template PackedB<T> pack_b<T>(const T*, index_t, index_t, index_t, int);                 \
  template double fma_peak_probe<T>(index_t, int);                                         \
  template const char* gemm_kernel_name<T>();                                               \
  template const char* gemm_kernel_name<T>(Isa);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit::gemm
