// The blocked product under gemm(): plan (tile class, blocking, packing, tasks, threads) and
// the task loop (see blocked.cpp). Internal to csrc/gemm.
#pragma once

#include "gemm.hpp"
#include "microkernels.hpp"

namespace densekit::gemm {

// Knobs for measurements, not API: read once from DENSEKIT_GEMM_TUNE, e.g.
// "kc=384,nc=1024,grain=2000,packa=0,packb=1,swap=0,tasks=1,align=2" (grain in ns; -1 means
// automatic). The extension module reads them at import (read_tuning, gemm.hpp), so that an
// unknown key or a bad value fails there, never in a kernel call.
struct Tuning {
  index_t kc_max = 256;
  index_t nc_max = 1024;  // float32 columns per task (half as many float64): B block ~1 MiB
  double grain = 5000;  // ns of work per thread
  int pack_b = -1;   // -1 auto, 0 never, 1 always
  int pack_a = -1;
  int swap = 1;
  int tasks_per_thread = 4;  // at most
  int align = 1;             // 0 off, 1 B read in place, 2 also C (B packed)
  int split_columns = 0;     // ties between task grids: 0 fewer, 1 more column blocks
  int even_tiles = 1;        // row tiles in a multiple of the thread count
};

const Tuning& tuning();

inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
inline index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// The packing view of an operand's scaling, for the element at `offset` of its data.
template <typename T>
PackScale<T> pack_scale(const Scaling<T>& scale, index_t offset) {
  PackScale<T> out;
  out.kind = scale.kind;
  out.from = scale.kind == Scale::none ? nullptr : scale.from + offset;
  out.alpha = scale.alpha;
  return out;
}

// The k block of a product with this k: near-equal blocks of at most kc_max (float64: 3/4 of
// it; see make_plan).
inline index_t k_block(index_t k, size_t element_size) {
  const Tuning& tune = tuning();
  const index_t kc_max = element_size == 8 ? tune.kc_max * 3 / 4 : tune.kc_max;
  return ceil_div(k, ceil_div(k, kc_max));
}

// B (k, n) packed for `kernels` as blocked_gemm packs it (see PackedB); k, n > 0.
template <typename T>
PackedB<T> pack_b_for(const KernelFamily<T>& kernels, const T* b, index_t ld, index_t k,
                      index_t n, int num_threads);

// C (m, n) [+]= op(A) op(B) with the epilogue, on `kernels`; m, n, k > 0, no softmax.
template <typename T>
void blocked_gemm(const KernelFamily<T>& kernels, index_t m, index_t n, index_t k,
                  const Operand<T>& a, const Operand<T>& b, T* c, index_t ldc,
                  const Epilogue<T>& ep, int num_threads);

}  // namespace densekit::gemm
