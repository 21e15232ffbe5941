// The normalization kernels' row loops, compiled once per ISA (normalization_portable.cpp,
// normalization_avx2.cpp, normalization_avx512.cpp, each including normalization_rows.inc with
// its own flags) and reached through a NormalizationRows table chosen by the engine's one ISA
// choice (see normalization.cpp). Each loop works on rows [begin, end) of x (n, k); the loops
// reassociate nothing, so every ISA gives the same bits. Internal to normalization.cpp.
#pragma once

#include "common.hpp"

namespace densekit {

template <typename T>
struct NormalizationRows {
  // acc[j] += x[i, j] (center null) or (x[i, j] - center[j])^2, in double.
  void (*column_sums)(double* acc, const T* x, const double* center, index_t begin,
                      index_t end, index_t k) = nullptr;
  // y = (x - shift) * scale + offset per feature.
  void (*affine)(T* y, const T* x, const T* shift, const T* scale, const T* offset,
                 index_t begin, index_t end, index_t k) = nullptr;
  // acc[j] += dy, acc[k + j] += dy * (x - mean[j]) * inv_std[j].
  void (*batch_norm_sums)(double* acc, const T* dy, const T* x, const T* mean,
                          const T* inv_std, index_t begin, index_t end, index_t k) = nullptr;
  // dx = scale * (dy - mean_dy - xhat * mean_dy_xhat).
  void (*batch_norm_dx)(T* dx, const T* dy, const T* x, const T* mean, const T* inv_std,
                        const T* scale, const T* mean_dy, const T* mean_dy_xhat, index_t begin,
                        index_t end, index_t k) = nullptr;
  // Layer norm of each row; mean and inv_std (per row) may be null.
  void (*layer_norm_forward)(T* y, T* mean, T* inv_std, const T* x, const T* gamma,
                             const T* beta, double epsilon, index_t begin, index_t end,
                             index_t k) = nullptr;
  // dx per row (dx may be null) and, with acc, acc[j] += dy, acc[k + j] += dy * xhat.
  void (*layer_norm_backward)(T* dx, double* acc, const T* dy, const T* x, const T* gamma,
                              const T* mean, const T* inv_std, index_t begin, index_t end,
                              index_t k) = nullptr;
  // y = (x - mean) / sd, or with invert mean + x * sd; mean null: y = x / sd (x * sd).
  void (*standardize)(T* y, const T* x, const T* mean, const T* sd, bool invert, index_t begin,
                      index_t end, index_t k) = nullptr;
};

NormalizationRows<float> portable_normalization_rows_f32();
NormalizationRows<double> portable_normalization_rows_f64();
#if defined(DENSEKIT_HAVE_X86_KERNELS)
NormalizationRows<float> avx2_normalization_rows_f32();
NormalizationRows<double> avx2_normalization_rows_f64();
NormalizationRows<float> avx512_normalization_rows_f32();
NormalizationRows<double> avx512_normalization_rows_f64();
#endif

}  // namespace densekit
