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

#include "common.hpp"
#include "isa.hpp"

namespace densekit::gemm {

// Activations a tile applies on registers; the others are applied by the driver to the
// tile in cache right after it is stored (the tile then applies `linear`).
enum class TileActivation : int { linear = 0, relu = 1, leaky_relu = 2 };

template <typename T>
struct TileArgs {
  index_t kc = 0;
  // A(i, p) = a[p * a_stride + i] (packed panels, transposed A), or a[i * a_stride + p]
  // when a_rows (row-major A read in place).
  const T* a = nullptr;
  index_t a_stride = 0;
  bool a_rows = false;
  // B(p, j) = b[p * ldb + j]; the vectors covering [0, cols) must be readable (packed
  // panels are zero-padded to whole vectors).
  const T* b = nullptr;
  index_t ldb = 0;
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

template <typename T>
struct KernelFamily {
  Isa isa = Isa::portable;
  const char* name = "";  // "<isa> <mr>x<nr>", e.g. "avx512 12x32"
  int lanes = 1;          // elements per vector register
  int mr = 1;             // main tile: up to mr rows, nr columns
  int nr = 1;
  int wide_mr = 1;        // tile for m <= wide_mr: up to wide_nr columns
  int wide_nr = 1;
  TileFn<T> tile = nullptr;
  // Packing, vectorised with the family's ISA (see microkernel_body.inc):
  // rows [0, kc) x cols of row-major (src, ld) as nr-column panels, zero-padded to vectors.
  void (*pack_panels)(const T* src, index_t ld, index_t kc, index_t cols, int nr,
                      T* out) = nullptr;
  // `count` rows of kc contiguous elements transposed: out[p * width + r].
  void (*pack_transposed)(const T* src, index_t ld, index_t kc, int count, int width,
                          T* out) = nullptr;
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
