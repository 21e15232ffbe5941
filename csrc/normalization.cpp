// Batch, layer and feature normalization kernels (see normalization.hpp).
//
// Column reductions (over the rows) cut the rows into chunks whose size depends only on n;
// each chunk's partial sums (double) are written by one task and added in chunk order, so the
// bits do not depend on the thread count. Elementwise passes split rows into the same chunks.
// The row loops themselves are compiled per ISA (normalization_rows.inc) and give the same
// bits on every ISA.
#include "normalization.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm/isa.hpp"
#include "normalization_rows.hpp"
#include "parallel.hpp"

namespace densekit {
namespace {

// The row loops of the engine's one ISA choice (DENSEKIT_ISA lowers it here too).
template <typename T>
const NormalizationRows<T>& rows_for_isa();

template <>
const NormalizationRows<float>& rows_for_isa<float>() {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  const gemm::Isa isa = gemm::isa_choice().isa;
  if (isa == gemm::Isa::avx512) {
    static const NormalizationRows<float> avx512 = avx512_normalization_rows_f32();
    return avx512;
  }
  if (isa == gemm::Isa::avx2) {
    static const NormalizationRows<float> avx2 = avx2_normalization_rows_f32();
    return avx2;
  }
#endif
  static const NormalizationRows<float> portable = portable_normalization_rows_f32();
  return portable;
}

template <>
const NormalizationRows<double>& rows_for_isa<double>() {
#if defined(DENSEKIT_HAVE_X86_KERNELS)
  const gemm::Isa isa = gemm::isa_choice().isa;
  if (isa == gemm::Isa::avx512) {
    static const NormalizationRows<double> avx512 = avx512_normalization_rows_f64();
    return avx512;
  }
  if (isa == gemm::Isa::avx2) {
    static const NormalizationRows<double> avx2 = avx2_normalization_rows_f64();
    return avx2;
  }
#endif
  static const NormalizationRows<double> portable = portable_normalization_rows_f64();
  return portable;
}

// Rows per chunk: at least 64 (a chunk's partial row is worth its cost), at most ~256
// chunks (the partial sums stay small).
index_t rows_per_chunk(index_t n) { return std::max<index_t>(64, (n + 255) / 256); }

int threads_for(int num_threads, index_t n, index_t k) {
  return threads_for_work(num_threads, double(n) * double(k), 1 << 15);
}

// Column sums of `parts` quantities: row_sums(begin, end, acc) adds rows [begin, end) into
// acc[p * k + j]; the result holds, per quantity p and column j, the sum over all rows
// (parts == 0: nothing is summed, row_sums gets acc null and only its side effects count).
template <class RowSums>
std::vector<double> column_sums(index_t n, index_t k, int parts, int num_threads,
                                RowSums&& row_sums) {
  if (k == 0) return {};  // no columns: nothing to sum, however many rows
  const index_t chunk = rows_per_chunk(n);
  const index_t n_chunks = (n + chunk - 1) / chunk;
  const index_t width = k * parts;
  std::vector<double> totals(static_cast<size_t>(width), 0.0);
  if (n_chunks <= 1) {
    if (n > 0) row_sums(index_t{0}, n, parts > 0 ? totals.data() : nullptr);
    return totals;
  }
  std::vector<double> partials(buffer_bytes(n_chunks, width, sizeof(double)) / sizeof(double),
                               0.0);
  const int threads = threads_for(num_threads, n, k * std::max(parts, 1));
  parallel_for(n_chunks, threads, [&](index_t c) {
    double* acc = parts > 0 ? partials.data() + c * width : nullptr;
    row_sums(c * chunk, std::min(n, (c + 1) * chunk), acc);
  });
  for (index_t c = 0; c < n_chunks; ++c) {
    const double* part = partials.data() + c * width;
    for (index_t j = 0; j < width; ++j) totals[j] += part[j];
  }
  return totals;
}

// body(begin, end) over the rows in chunks, in parallel.
template <class Body>
void for_row_chunks(index_t n, index_t k, int num_threads, Body&& body) {
  if (k == 0) return;  // nothing to read or write, however many rows (a (2**40, 0) array)
  const index_t chunk = rows_per_chunk(n);
  const index_t n_chunks = (n + chunk - 1) / chunk;
  parallel_for(n_chunks, threads_for(num_threads, n, k),
               [&](index_t c) { body(c * chunk, std::min(n, (c + 1) * chunk)); });
}

// Column means and biased variances in double. Each row chunk takes its own mean and sum of
// squared deviations (two passes over the chunk while it is in cache), and the chunks are
// combined in chunk order (Chan et al.'s pairwise update), so x is read once from memory and
// the bits depend only on n and k.
template <typename T>
void moments(std::vector<double>* mean, std::vector<double>* variance, const T* x, index_t n,
             index_t k, int num_threads) {
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  const auto size = static_cast<size_t>(k);
  mean->assign(size, 0.0);
  variance->assign(size, 0.0);
  if (k == 0) return;
  if (n == 0) {
    mean->assign(size, std::nan(""));
    variance->assign(size, std::nan(""));
    return;
  }
  const index_t chunk = rows_per_chunk(n);
  const index_t n_chunks = (n + chunk - 1) / chunk;
  // partials[c]: the chunk's k means, then its k sums of squared deviations
  std::vector<double> partials(buffer_bytes(n_chunks, 2 * k, sizeof(double)) / sizeof(double),
                               0.0);
  parallel_for(n_chunks, threads_for(num_threads, n, k), [&](index_t c) {
    const index_t begin = c * chunk;
    const index_t end = std::min(n, begin + chunk);
    double* chunk_mean = partials.data() + c * 2 * k;
    rows.column_sums(chunk_mean, x, nullptr, begin, end, k);
    const double count = double(end - begin);
    for (index_t j = 0; j < k; ++j) chunk_mean[j] /= count;
    rows.column_sums(chunk_mean + k, x, chunk_mean, begin, end, k);
  });
  double* mu = mean->data();
  double* m2 = variance->data();
  double seen = 0.0;
  for (index_t c = 0; c < n_chunks; ++c) {
    const double count = double(std::min(n, (c + 1) * chunk) - c * chunk);
    const double total = seen + count;
    const double* chunk_mean = partials.data() + c * 2 * k;
    const double* chunk_m2 = chunk_mean + k;
    for (index_t j = 0; j < k; ++j) {
      const double delta = chunk_mean[j] - mu[j];
      mu[j] += delta * (count / total);
      m2[j] += chunk_m2[j] + delta * delta * (seen * count / total);
    }
    seen = total;
  }
  for (index_t j = 0; j < k; ++j) m2[j] /= double(n);
}

template <typename T>
std::vector<T> feature_stds(const T* variance, index_t k) {
  std::vector<T> stds(static_cast<size_t>(k));
  for (index_t j = 0; j < k; ++j) stds[j] = std::max(std::sqrt(variance[j]), T(1e-7));
  return stds;
}

}  // namespace

template <typename T>
void feature_moments(T* mean, T* variance, const T* x, index_t n, index_t k, int num_threads) {
  std::vector<double> mu, var;
  moments(&mu, &var, x, n, k, num_threads);
  for (index_t j = 0; j < k; ++j) {
    mean[j] = T(mu[j]);
    variance[j] = T(var[j]);
  }
}

template <typename T>
void batch_norm_forward(T* y, T* batch_mean, T* batch_variance, const T* x, const T* gamma,
                        const T* beta, const T* moving_mean, const T* moving_variance,
                        index_t n, index_t k, double epsilon, bool training, int num_threads) {
  // Per feature: the mean subtracted, the scale gamma / sqrt(variance + epsilon) and beta.
  const auto size = static_cast<size_t>(k);
  std::vector<T> shift(size), scale(size), offset(size);
  if (training) {
    std::vector<double> mu, var;
    moments(&mu, &var, x, n, k, num_threads);
    for (index_t j = 0; j < k; ++j) {
      batch_mean[j] = shift[j] = T(mu[j]);
      batch_variance[j] = T(var[j]);
      scale[j] = T(1.0 / std::sqrt(var[j] + epsilon));
    }
  } else {
    for (index_t j = 0; j < k; ++j) {
      shift[j] = moving_mean[j];
      scale[j] = T(1.0 / std::sqrt(double(moving_variance[j]) + epsilon));
    }
  }
  for (index_t j = 0; j < k; ++j) {
    if (gamma != nullptr) scale[j] = scale[j] * gamma[j];
    offset[j] = beta != nullptr ? beta[j] : T(0);
  }
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    rows.affine(y, x, shift.data(), scale.data(), offset.data(), begin, end, k);
  });
}

template <typename T>
void batch_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                         const T* mean, const T* variance, index_t n, index_t k, double epsilon,
                         bool training, int num_threads) {
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  const auto size = static_cast<size_t>(k);
  std::vector<T> inv_std(size);
  for (index_t j = 0; j < k; ++j) inv_std[j] = T(1.0 / std::sqrt(double(variance[j]) + epsilon));
  const T* is = inv_std.data();
  // sums[j] = sum of dy, sums[k + j] = sum of dy * xhat over the rows.
  std::vector<double> sums;
  if (dgamma != nullptr || dbeta != nullptr || (training && dx != nullptr)) {
    sums = column_sums(n, k, 2, num_threads, [&](index_t begin, index_t end, double* acc) {
      rows.batch_norm_sums(acc, dy, x, mean, is, begin, end, k);
    });
    for (index_t j = 0; j < k; ++j) {
      if (dbeta != nullptr) dbeta[j] = T(sums[j]);
      if (dgamma != nullptr) dgamma[j] = T(sums[k + j]);
    }
  }
  if (dx == nullptr) return;
  // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)) in training; the
  // statistics are constants in inference and dx = gamma * inv_std * dy (an affine map of dy
  // with shift 0 and offset 0).
  std::vector<T> scale(size), mean_dy(size, T(0)), mean_dy_xhat(size, T(0));
  for (index_t j = 0; j < k; ++j) {
    scale[j] = gamma != nullptr ? gamma[j] * is[j] : is[j];
    if (training) {
      mean_dy[j] = T(sums[j] / double(n));
      mean_dy_xhat[j] = T(sums[k + j] / double(n));
    }
  }
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    if (training) {
      rows.batch_norm_dx(dx, dy, x, mean, is, scale.data(), mean_dy.data(), mean_dy_xhat.data(),
                         begin, end, k);
    } else {
      rows.affine(dx, dy, mean_dy.data(), scale.data(), mean_dy_xhat.data(), begin, end, k);
    }
  });
}

template <typename T>
void moving_average_update(T* moving, const T* value, index_t k, double momentum) {
  const T keep = T(momentum);
  const T take = T(1.0 - momentum);
  for (index_t j = 0; j < k; ++j) moving[j] = moving[j] * keep + value[j] * take;
}

template <typename T>
void layer_norm_forward(T* y, T* mean, T* inv_std, const T* x, const T* gamma, const T* beta,
                        index_t n, index_t k, double epsilon, int num_threads) {
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    rows.layer_norm_forward(y, mean, inv_std, x, gamma, beta, epsilon, begin, end, k);
  });
}

template <typename T>
void layer_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                         const T* mean, const T* inv_std, index_t n, index_t k,
                         int num_threads) {
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  const bool params = dgamma != nullptr || dbeta != nullptr;
  // One pass over the rows: dx and the chunk's sums of dy and dy * xhat (dbeta, dgamma).
  const std::vector<double> sums = column_sums(
      n, k, params ? 2 : 0, num_threads, [&](index_t begin, index_t end, double* acc) {
        rows.layer_norm_backward(dx, acc, dy, x, gamma, mean, inv_std, begin, end, k);
      });
  if (!params) return;
  for (index_t j = 0; j < k; ++j) {
    if (dbeta != nullptr) dbeta[j] = T(sums[j]);
    if (dgamma != nullptr) dgamma[j] = T(sums[k + j]);
  }
}

template <typename T>
void normalization_forward(T* y, const T* x, const T* mean, const T* variance, index_t n,
                           index_t k, bool invert, int num_threads) {
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  const std::vector<T> stds = feature_stds(variance, k);
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    rows.standardize(y, x, mean, stds.data(), invert, begin, end, k);
  });
}

template <typename T>
void normalization_backward(T* dx, const T* dy, const T* variance, index_t n, index_t k,
                            bool invert, int num_threads) {
  const NormalizationRows<T>& rows = rows_for_isa<T>();
  const std::vector<T> stds = feature_stds(variance, k);
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    rows.standardize(dx, dy, nullptr, stds.data(), invert, begin, end, k);
  });
}

#define DENSEKIT_NORMALIZATION(T)                                                              \
  template void feature_moments<T>(T*, T*, const T*, index_t, index_t, int);                 \
  template void batch_norm_forward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,    \
                                      const T*, index_t, index_t, double, bool, int);        \
  template void batch_norm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,   \
                                       const T*, index_t, index_t, double, bool, int);       \
  template void moving_average_update<T>(T*, const T*, index_t, double);                     \
  template void layer_norm_forward<T>(T*, T*, T*, const T*, const T*, const T*, index_t,     \
                                      index_t, double, int);                                 \
  template void layer_norm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,   \
                                       const T*, index_t, index_t, int);                     \
  template void normalization_forward<T>(T*, const T*, const T*, const T*, index_t, index_t, \
                                         bool, int);                                         \
  template void normalization_backward<T>(T*, const T*, const T*, index_t, index_t, bool, int);
DENSEKIT_NORMALIZATION(float)
DENSEKIT_NORMALIZATION(double)
#undef DENSEKIT_NORMALIZATION

}  // namespace densekit
