// Batch, layer and feature normalization kernels (see normalization.hpp).
//
// Column reductions (over the rows) cut the rows into chunks whose size depends only on n;
// each chunk's partial sums (double) are written by one task and added in chunk order, so the
// bits do not depend on the thread count. Elementwise passes split rows into the same chunks.
#include "normalization.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "parallel.hpp"

namespace densekit {
namespace {

// Rows per chunk: at least 64 (a chunk's partial row is worth its cost), at most ~256
// chunks (the partial sums stay small).
index_t rows_per_chunk(index_t n) { return std::max<index_t>(64, (n + 255) / 256); }

int threads_for(int num_threads, index_t n, index_t k) {
  return threads_for_work(num_threads, double(n) * double(k), 1 << 15);
}

// Column sums of `parts` quantities: row_sums(begin, end, acc) adds rows [begin, end) into
// acc[p * k + j]; the result holds, per quantity p and column j, the sum over all rows.
template <class RowSums>
std::vector<double> column_sums(index_t n, index_t k, int parts, int num_threads,
                                RowSums&& row_sums) {
  const index_t chunk = rows_per_chunk(n);
  const index_t n_chunks = (n + chunk - 1) / chunk;
  const index_t width = k * parts;
  std::vector<double> totals(static_cast<size_t>(width), 0.0);
  if (n_chunks <= 1) {
    if (n > 0) row_sums(index_t{0}, n, totals.data());
    return totals;
  }
  std::vector<double> partials(buffer_bytes(n_chunks, width, sizeof(double)) / sizeof(double),
                               0.0);
  parallel_for(n_chunks, threads_for(num_threads, n, k * std::max(parts, 1)), [&](index_t c) {
    row_sums(c * chunk, std::min(n, (c + 1) * chunk), partials.data() + c * width);
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
  const index_t chunk = rows_per_chunk(n);
  const index_t n_chunks = (n + chunk - 1) / chunk;
  parallel_for(n_chunks, threads_for(num_threads, n, k),
               [&](index_t c) { body(c * chunk, std::min(n, (c + 1) * chunk)); });
}

// Column means and biased variances in double (two passes).
template <typename T>
void moments(std::vector<double>* mean, std::vector<double>* variance, index_t n, index_t k,
             int num_threads, const T* x) {
  *mean = column_sums(n, k, 1, num_threads, [&](index_t begin, index_t end, double* acc) {
    for (index_t i = begin; i < end; ++i) {
      const T* row = x + i * k;
      for (index_t j = 0; j < k; ++j) acc[j] += double(row[j]);
    }
  });
  const double count = double(n);
  for (double& m : *mean) m /= count;  // n == 0: NaN
  const double* mu = mean->data();
  *variance = column_sums(n, k, 1, num_threads, [&](index_t begin, index_t end, double* acc) {
    for (index_t i = begin; i < end; ++i) {
      const T* row = x + i * k;
      for (index_t j = 0; j < k; ++j) {
        const double d = double(row[j]) - mu[j];
        acc[j] += d * d;
      }
    }
  });
  for (double& v : *variance) v /= count;
}

// The sum over j < k of term(j) in double, kept in 8 interleaved lanes added in a fixed order:
// the compiler can vectorize it without reassociating, and the bits depend only on k.
template <class Term>
double lane_sum(index_t k, Term&& term) {
  constexpr int kLanes = 8;
  double lanes[kLanes] = {};
  index_t j = 0;
  for (; j + kLanes <= k; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += term(j + l);
  double tail = 0.0;
  for (; j < k; ++j) tail += term(j);
  return ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) +
         ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7])) + tail;
}

template <typename T>
T feature_std(T variance) {
  return std::max(std::sqrt(variance), T(1e-7));
}

}  // namespace

template <typename T>
void feature_moments(T* mean, T* variance, const T* x, index_t n, index_t k, int num_threads) {
  std::vector<double> mu, var;
  moments(&mu, &var, n, k, num_threads, x);
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
  std::vector<T> shift(static_cast<size_t>(k)), scale(static_cast<size_t>(k)),
      offset(static_cast<size_t>(k));
  if (training) {
    std::vector<double> mu, var;
    moments(&mu, &var, n, k, num_threads, x);
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
  const T* mu = shift.data();
  const T* s = scale.data();
  const T* b = offset.data();
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const T* row = x + i * k;
      T* out = y + i * k;
      for (index_t j = 0; j < k; ++j) out[j] = (row[j] - mu[j]) * s[j] + b[j];
    }
  });
}

template <typename T>
void batch_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                         const T* mean, const T* variance, index_t n, index_t k, double epsilon,
                         bool training, int num_threads) {
  std::vector<T> inv_std(static_cast<size_t>(k));
  for (index_t j = 0; j < k; ++j) inv_std[j] = T(1.0 / std::sqrt(double(variance[j]) + epsilon));
  const T* is = inv_std.data();
  // sums[j] = sum of dy, sums[k + j] = sum of dy * xhat over the rows.
  std::vector<double> sums;
  if (dgamma != nullptr || dbeta != nullptr || (training && dx != nullptr)) {
    sums = column_sums(n, k, 2, num_threads, [&](index_t begin, index_t end, double* acc) {
      for (index_t i = begin; i < end; ++i) {
        const T* g = dy + i * k;
        const T* row = x + i * k;
        for (index_t j = 0; j < k; ++j) {
          const T xhat = (row[j] - mean[j]) * is[j];
          acc[j] += double(g[j]);
          acc[k + j] += double(g[j] * xhat);
        }
      }
    });
    for (index_t j = 0; j < k; ++j) {
      if (dbeta != nullptr) dbeta[j] = T(sums[j]);
      if (dgamma != nullptr) dgamma[j] = T(sums[k + j]);
    }
  }
  if (dx == nullptr) return;
  // dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat)) in training; the
  // statistics are constants in inference and dx = gamma * inv_std * dy.
  std::vector<T> scale(static_cast<size_t>(k)), mean_dy(static_cast<size_t>(k), T(0)),
      mean_dy_xhat(static_cast<size_t>(k), T(0));
  for (index_t j = 0; j < k; ++j) {
    scale[j] = gamma != nullptr ? gamma[j] * is[j] : is[j];
    if (training) {
      mean_dy[j] = T(sums[j] / double(n));
      mean_dy_xhat[j] = T(sums[k + j] / double(n));
    }
  }
  const T* s = scale.data();
  const T* a = mean_dy.data();
  const T* c = mean_dy_xhat.data();
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const T* g = dy + i * k;
      const T* row = x + i * k;
      T* out = dx + i * k;
      if (training) {
        for (index_t j = 0; j < k; ++j) {
          const T xhat = (row[j] - mean[j]) * is[j];
          out[j] = s[j] * (g[j] - a[j] - xhat * c[j]);
        }
      } else {
        for (index_t j = 0; j < k; ++j) out[j] = g[j] * s[j];
      }
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
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const T* row = x + i * k;
      T* out = y + i * k;
      const double mu = lane_sum(k, [&](index_t j) { return double(row[j]); }) / double(k);
      const double squares = lane_sum(k, [&](index_t j) {
        const double d = double(row[j]) - mu;
        return d * d;
      });
      const T m = T(mu);
      const T s = T(1.0 / std::sqrt(squares / double(k) + epsilon));
      if (mean != nullptr) mean[i] = m;
      if (inv_std != nullptr) inv_std[i] = s;
      for (index_t j = 0; j < k; ++j) {
        T v = (row[j] - m) * s;
        if (gamma != nullptr) v = v * gamma[j];
        if (beta != nullptr) v = v + beta[j];
        out[j] = v;
      }
    }
  });
}

template <typename T>
void layer_norm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                         const T* mean, const T* inv_std, index_t n, index_t k,
                         int num_threads) {
  const bool params = dgamma != nullptr || dbeta != nullptr;
  // One pass over the rows: dx = inv_std * (g - mean(g) - xhat * mean(g * xhat)) per row,
  // g = dy * gamma, and the chunk's sums of dy and dy * xhat for dbeta and dgamma.
  auto rows = [&](index_t begin, index_t end, double* acc) {
    for (index_t i = begin; i < end; ++i) {
      const T* row = x + i * k;
      const T* d = dy + i * k;
      const T m = mean[i];
      const T s = inv_std[i];
      if (params) {
        for (index_t j = 0; j < k; ++j) {
          acc[j] += double(d[j]);
          acc[k + j] += double(d[j] * ((row[j] - m) * s));
        }
      }
      if (dx == nullptr) continue;
      auto g = [&](index_t j) { return gamma != nullptr ? d[j] * gamma[j] : d[j]; };
      const T a = T(lane_sum(k, [&](index_t j) { return double(g(j)); }) / double(k));
      const T c =
          T(lane_sum(k, [&](index_t j) { return double(g(j) * ((row[j] - m) * s)); }) / double(k));
      T* out = dx + i * k;
      for (index_t j = 0; j < k; ++j) out[j] = s * (g(j) - a - ((row[j] - m) * s) * c);
    }
  };
  const std::vector<double> sums = column_sums(n, k, params ? 2 : 0, num_threads, rows);
  if (!params) return;
  for (index_t j = 0; j < k; ++j) {
    if (dbeta != nullptr) dbeta[j] = T(sums[j]);
    if (dgamma != nullptr) dgamma[j] = T(sums[k + j]);
  }
}

template <typename T>
void normalization_forward(T* y, const T* x, const T* mean, const T* variance, index_t n,
                           index_t k, bool invert, int num_threads) {
  std::vector<T> stds(static_cast<size_t>(k));
  for (index_t j = 0; j < k; ++j) stds[j] = feature_std(variance[j]);
  const T* sd = stds.data();
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const T* row = x + i * k;
      T* out = y + i * k;
      if (invert) {
        for (index_t j = 0; j < k; ++j) out[j] = mean[j] + row[j] * sd[j];
      } else {
        for (index_t j = 0; j < k; ++j) out[j] = (row[j] - mean[j]) / sd[j];
      }
    }
  });
}

template <typename T>
void normalization_backward(T* dx, const T* dy, const T* variance, index_t n, index_t k,
                            bool invert, int num_threads) {
  std::vector<T> stds(static_cast<size_t>(k));
  for (index_t j = 0; j < k; ++j) stds[j] = feature_std(variance[j]);
  const T* sd = stds.data();
  for_row_chunks(n, k, num_threads, [&](index_t begin, index_t end) {
    for (index_t i = begin; i < end; ++i) {
      const T* d = dy + i * k;
      T* out = dx + i * k;
      if (invert) {
        for (index_t j = 0; j < k; ++j) out[j] = d[j] * sd[j];
      } else {
        for (index_t j = 0; j < k; ++j) out[j] = d[j] / sd[j];
      }
    }
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
