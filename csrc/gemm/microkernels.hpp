// Microkernel families, one per ISA, each in its own translation unit compiled with that
// ISA's flags (kernels_avx512.cpp, kernels_avx2.cpp, kernels_portable.cpp).
//
// A tile call computes rows x cols of C, rows <= mr and cols <= nr of its family:
//   acc(i, j) = (load_c ? C(i, j) : 0), then acc(i, j) = fma(A(i, p), B(p, j), acc(i, j))
//   for p = 0, 1, ..., kc - 1 in that order, then (last k block only) v = acc + bias[j],
//   preact(i, j) = v, C(i, j) = act(v); otherwise C(i, j) = acc.
// Each element of C is thus one multiply-add chain over p in increasing order, and partial
// sums stored in C between k blocks are reloaded exactly: the bits of C do not depend on the
// tile shape, the tile's position, the packing, the k blocking or the thread that computes it.
// (The portable family has no fma: it rounds the product and the sum separately.)
#pragma once

#include "activation_table.hpp"
#include "common.hpp"
#include "gemm.hpp"
#include "isa.hpp"

namespace densekit::gemm {

template <typename T>
struct TileArgs {
  index_t kc = 0;
  // A(i, p) = a[p * a_stride + i] (packed panels, transposed A), or a[i * a_stride + p]
  // when a_rows (row-major A read in place).
  const T* a = nullptr;
  index_t a_stride = 0;
  bool a_rows = false;
  // B(p, j) = b[p * ldb + j]; the vectors covering [0, cols) must be readable (packed
  // panels are zero-padded to whole vectors). With edges (rows <= the family's wide_mr: B
  // read in place), b, c, bias and preact point `head` (< lanes) elements before the tile's
  // first column and the tile covers lanes [head, head + cols) of its vectors: the first and
  // last vectors are read and written with masks, so that the vectors between fall on whole
  // cache lines of B.
  const T* b = nullptr;
  index_t ldb = 0;
  bool edges = false;
  int head = 0;
  T* c = nullptr;
  index_t ldc = 0;
  int rows = 0;
  int cols = 0;
  bool load_c = false;  // start from C (accumulate, or a later k block)
  bool last = false;    // last k block: apply bias, preact and activation
  const T* bias = nullptr;  // at the tile's first column, or null
  T* preact = nullptr;      // at the tile's first element, or null
  index_t ld_preact = 0;
  TileActivation act = TileActivation::linear;
  T alpha = T(0);
};

template <typename T>
using TileFn = void (*)(const TileArgs<T>&);

// The packing view of gemm.hpp's Scaling: the factor for source element src[i] is read from
// from[i] (from is offset like src).
template <typename T>
struct PackScale {
  Scale kind = Scale::none;
  const T* from = nullptr;
  T alpha = T(0);
};

template <typename T>
struct KernelFamily {
  Isa isa = Isa::portable;
  const char* name = "";  // "<isa> <mr>x<nr>", e.g. "avx512 14x32"
  int lanes = 1;          // elements per vector register
  int mr = 1;             // main tile: up to mr rows, nr columns
  int nr = 1;
  static constexpr int kMaxWideMr = 4;
  int wide_mr = 1;        // for m <= wide_mr, one row tile of m rows and wide_nr[m] columns
  int wide_nr[kMaxWideMr + 1] = {};
  TileFn<T> tile = nullptr;
  // Packing, vectorised with the family's ISA (see microkernel_body.inc); `scale` multiplies
  // each element by a factor read at the same offset from scale.from (see gemm.hpp):
  // rows [0, kc) x cols of row-major (src, ld) as nr-column panels, zero-padded to vectors,
  // adding each column's sum over the rows into sums[j] (double, row order) when sums != null.
  void (*pack_panels)(const T* src, index_t ld, index_t kc, index_t cols, int nr, T* out,
                      const PackScale<T>& scale, double* sums) = nullptr;
  // `count` rows of kc contiguous elements transposed: out[p * out_stride + r] for r < width
  // (count <= width <= count rounded up to lanes; zero past count).
  void (*pack_transposed)(const T* src, index_t ld, index_t kc, int count, int width, T* out,
                          index_t out_stride, const PackScale<T>& scale) = nullptr;
  // Consecutive row tiles of a transposed A: tile t (rows[t] columns of src) at
  // out + t * kc * width, row stride width (a multiple of lanes).
  void (*pack_row_tiles)(const T* src, index_t ld, index_t kc, const int* rows, int tiles,
                         int width, T* out, const PackScale<T>& scale) = nullptr;
  // rows <= 4: c[i * ldc + j] = sum_p a[i * lda + p] * b[j * ldb + p], j < n (see the body).
  void (*dot)(const T* a, index_t lda, int rows, const T* b, index_t ldb, index_t n, index_t k,
              T* c, index_t ldc) = nullptr;
  // `steps` rounds of multiply-adds on independent register chains, nothing from memory:
  // the family's arithmetic peak, for the benchmarks. Returns the floating-point operations
  // done (2 per lane per multiply-add).
  double (*fma_probe)(index_t steps) = nullptr;
};

KernelFamily<float> portable_kernels_f32();
KernelFamily<double> portable_kernels_f64();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
KernelFamily<float> avx2_kernels_f32();
KernelFamily<double> avx2_kernels_f64();
KernelFamily<float> avx512_kernels_f32();
KernelFamily<double> avx512_kernels_f64();
#endif

}  // namespace densekit::gemm
