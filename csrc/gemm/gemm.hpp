// The one matrix-product entry point under every dense kernel:
//   C (m, n) [+]= op(A) (m, k) @ op(B) (k, n), then bias and an elementwise activation.
//
// BLIS-style: panels of A and B are packed into contiguous buffers (per task), a register-
// blocked microkernel computes an mr x nr tile, and an epilogue folds the tile into C.
// The reduction over k runs in fixed blocks of kc in a fixed order, and every tile uses the
// same microkernel (edges are zero-padded), so each element of C gets the same bits for any
// thread count and any split of the output into tasks.
#pragma once

#include "activations.hpp"
#include "common.hpp"

namespace densekit::gemm {

// A logical (rows, cols) view of a row-major matrix, optionally transposed:
// element (i, j) is data[i * ld + j], or data[j * ld + i] when transposed.
template <typename T>
struct Operand {
  const T* data = nullptr;
  index_t ld = 0;
  bool transposed = false;
};

// What happens to each finished element v = (accumulate ? C : 0) + sum_p A(i,p) B(p,j):
// v += bias[j]; preact[i, j] = v; C[i, j] = act(v). Softmax is not elementwise and is
// rejected here (the dense kernel runs it as a row pass).
template <typename T>
struct Epilogue {
  const T* bias = nullptr;
  T* preact = nullptr;
  index_t ld_preact = 0;
  Activation activation{};
  bool accumulate = false;
};

template <typename T>
void gemm(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c, index_t ldc,
          const Epilogue<T>& epilogue, int num_threads);

// A slow, obvious triple loop with the same epilogue, for tests and as a reference.
template <typename T>
void gemm_reference(index_t m, index_t n, index_t k, Operand<T> a, Operand<T> b, T* c,
                    index_t ldc, const Epilogue<T>& epilogue);

// The name of the microkernel family in use for T (e.g. "portable 6x8").
template <typename T>
const char* gemm_kernel_name();

}  // namespace densekit::gemm
