// The one matrix-product entry point under every dense kernel:
//   C (m, n) [+]= op(A) (m, k) @ op(B) (k, n), then bias and an elementwise activation.
//
// BLIS-style: B is packed in blocks of kc rows x nc columns (shared by the threads of a
// call, or owned by one thread when threads split the columns), A in micro-panels of up to
// mr rows, and a register-blocked microkernel of the ISA chosen at start-up (isa.hpp)
// computes each tile, applying bias and activation before the tile is stored.
// Each element of C is one multiply-add chain over k in increasing order (partial sums
// between k blocks go through C exactly), so its bits do not depend on the thread count,
// the tiling or the packing: only on the ISA (see microkernels.hpp).
#pragma once

#include <vector>

#include "activation_table.hpp"
#include "common.hpp"
#include "isa.hpp"
#include "vecmath/scalar_activations.hpp"

namespace densekit::gemm {

// An elementwise factor an operand is multiplied by as it is packed, read from `from` at the
// same place (same ld and layout as the operand): dense backward passes dy this way, with
// from = y or z, so that dz = dy * f'(.) is never stored. Only derivatives that cost a compare
// or two multiplies are offered; the arithmetic is that of scalar::derivative_from_*:
//   positive: from > 0 ? 1 : alpha (relu with alpha 0, leaky_relu)
//   sigmoid_y: from * (1 - from)    tanh_y: 1 - from * from
enum class Scale { none, positive, sigmoid_y, tanh_y };

template <typename T>
struct Scaling {
  Scale kind = Scale::none;
  const T* from = nullptr;
  T alpha = T(0);
};

// A matrix B (k, n) packed once in the layout the blocked product packs it into per call, for
// the kernels in use: for each k block, its nr-column panels (zero-padded to whole vectors).
// Made by pack_b; a product may read it instead of packing B again (see Operand::packed).
template <typename T>
struct PackedB {
  index_t k = 0, n = 0;
  index_t kc = 0;  // k block, as the product chooses it for this k
  int nr = 0;      // panel width of the main tile
  Isa isa = Isa::portable;
  std::vector<T> data;
  // Offset of panel `panel` of the k block starting at row pc (a multiple of kc, this block
  // kc_block rows deep): blocks follow each other, full ones kc x all panels.
  index_t offset(index_t pc, index_t panel, index_t kc_block) const {
    return (pc * ((n + nr - 1) / nr) + panel * kc_block) * nr;
  }
};

// B (k, n) of row-major (b, ld) packed for the kernels in use on up to num_threads threads.
template <typename T>
PackedB<T> pack_b(const T* b, index_t ld, index_t k, index_t n, int num_threads);

// A logical (rows, cols) view of a row-major matrix, optionally transposed:
// element (i, j) is data[i * ld + j], or data[j * ld + i] when transposed; optionally scaled.
// packed (B only, not transposed, not scaled): the same matrix packed by pack_b, read instead
// of packing it where that pays (a few row tiles against a weight of up to 16 MiB); data must
// still point to the matrix, for the products that read it in place.
template <typename T>
struct Operand {
  const T* data = nullptr;
  index_t ld = 0;
  bool transposed = false;
  Scaling<T> scale{};
  const PackedB<T>* packed = nullptr;
};

// What happens to each finished element v = (accumulate ? C : 0) + sum_p A(i,p) B(p,j):
// v += bias[j]; preact[i, j] = v; C[i, j] = act(v). Softmax is not elementwise and is
// rejected here (the dense kernel runs it as a row pass).
// b_sums, when given (B not transposed), receives b_sums[j] += sum_p op(B)(p, j) over p in
// increasing order, in double, after scaling: the bias gradient of a dense layer in the same
// sweep as its weight gradient.
template <typename T>
struct Epilogue {
  const T* bias = nullptr;
  T* preact = nullptr;
  index_t ld_preact = 0;
  Activation activation{};
  bool accumulate = false;
  double* b_sums = nullptr;
};

template <typename T>
void gemm(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c, index_t ldc,
          const Epilogue<T>& epilogue, int num_threads);

// The same with a given ISA instead of the process-wide choice (tests and benchmarks).
// Throws ArgumentError when the ISA is not usable on this CPU.
template <typename T>
void gemm_with_isa(Isa isa, index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c,
                   index_t ldc, const Epilogue<T>& epilogue, int num_threads);

// A slow, obvious triple loop with the same epilogue (v = sum over p in increasing order, then
// C if accumulating, then bias, preact, act), one thread; the tests compare every ISA with it
// (test hook _gemm_isa_test with isa "reference").
template <typename T>
void gemm_reference(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c,
                    index_t ldc, const Epilogue<T>& epilogue);

// Reads the engine's tuning knobs (DENSEKIT_GEMM_TUNE, for measurements) once; throws
// ArgumentError naming the variable, the key and the known keys for an unknown key or a value
// that is not a number. Call it before any product (the extension module does, at import).
void read_tuning();

// The arithmetic peak of the microkernel family in use for T on num_threads threads (>= 1):
// `steps` rounds of register-only multiply-adds shared among them (see KernelFamily::
// fma_probe). Returns the floating-point operations done; the caller times the call.
template <typename T>
double fma_peak_probe(index_t steps, int num_threads);

// The name of the microkernel family in use for T (e.g. "avx512 14x32"), or of an ISA's.
template <typename T>
const char* gemm_kernel_name();
template <typename T>
const char* gemm_kernel_name(Isa isa);

}  // namespace densekit::gemm
