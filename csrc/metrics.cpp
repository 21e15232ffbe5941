// Metric kernels (see metrics.hpp). An element falls in one bucket: the number of thresholds
// below its prediction (0: predicted negative at every threshold). Each task adds the weights
// of one chunk of rows (and, with per-column counts, one block of columns) to its chunk's own
// bucket sums; the chunks' sums are then added in chunk order, and the count at threshold k is
// the sum of the buckets above k (predicted positive) or at and below k (predicted negative).
#include "metrics.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "parallel.hpp"

namespace densekit {
namespace {

// A chunk holds about this many elements; a call below about two chunks stays on one thread.
constexpr index_t kChunkElements = index_t{1} << 14;
constexpr double kGrainElements = 32768.0;
// Columns per task when counts are kept per column.
constexpr index_t kColumnBlock = 64;
// At most this many doubles of chunk bucket sums at once: beyond it, chunks get more rows.
constexpr index_t kPartialBudget = index_t{1} << 21;

enum Count : index_t { true_positives, false_positives, true_negatives, false_negatives };

// The order of a descending sort that puts NaN first and breaks ties toward the lower
// column: whether column a of `row` comes before column b.
template <typename T>
bool ranks_before(const T* row, index_t a, index_t b) {
  const T x = row[a];
  const T y = row[b];
  const bool x_nan = std::isnan(x);
  const bool y_nan = std::isnan(y);
  if (x_nan != y_nan) return x_nan;
  if (!x_nan && x != y) return x > y;
  return a < b;
}

// The number of thresholds below p (0 for NaN: no comparison with it holds).
template <typename T>
index_t bucket_of(T p, const T* thresholds, index_t n_thresholds) {
  return std::lower_bound(thresholds, thresholds + n_thresholds, p) - thresholds;
}

// Per row, the column that comes k-th in the order of ranks_before: the row's top k are that
// column and the ones before it.
template <typename T>
std::vector<index_t> top_k_pivots(const T* prediction, index_t n, index_t d, index_t k,
                                  int num_threads) {
  std::vector<index_t> pivots(static_cast<size_t>(n));
  const index_t chunk_rows = std::max<index_t>(1, kChunkElements / d);
  const index_t n_chunks = (n + chunk_rows - 1) / chunk_rows;
  const int threads = threads_for_work(num_threads, double(n) * double(d), kGrainElements);
  parallel_for(n_chunks, threads, [&](index_t chunk) {
    std::vector<index_t> order(static_cast<size_t>(d));
    const index_t end = std::min(n, (chunk + 1) * chunk_rows);
    for (index_t i = chunk * chunk_rows; i < end; ++i) {
      const T* row = prediction + i * d;
      for (index_t j = 0; j < d; ++j) order[static_cast<size_t>(j)] = j;
      std::nth_element(order.begin(), order.begin() + (k - 1), order.end(),
                       [row](index_t a, index_t b) { return ranks_before(row, a, b); });
      pivots[static_cast<size_t>(i)] = order[static_cast<size_t>(k - 1)];
    }
  });
  return pivots;
}

void write_zero_counts(double* counts, index_t size, bool accumulate) {
  if (!accumulate) std::fill(counts, counts + size, 0.0);
}

}  // namespace

index_t confusion_columns(index_t d, const ConfusionOptions& options) {
  if (!options.per_column) return 1;
  return options.class_id >= 0 ? 1 : d;
}

template <typename T>
void confusion_counts(double* counts, const T* prediction, const T* target, const T* thresholds,
                      const T* sample_weight, const T* column_weight, index_t n, index_t d,
                      index_t n_thresholds, const ConfusionOptions& options, int num_threads) {
  if (options.class_id >= d) throw ArgumentError("class_id: outside [0, d)");
  const index_t columns = options.class_id >= 0 ? 1 : d;  // counted per row
  const index_t kept = confusion_columns(d, options);    // L: counts kept per threshold
  const index_t count_size = 4 * n_thresholds * kept;
  if (n <= 0 || columns <= 0 || n_thresholds <= 0) {
    // Nothing to count (or no threshold to count at): every count is 0.
    if (n_thresholds > 0) write_zero_counts(counts, count_size, options.accumulate);
    return;
  }
  const index_t buckets = n_thresholds + 1;
  buffer_bytes(2 * buckets, kept, sizeof(double));  // throws when the size overflows
  const index_t partial_size = 2 * buckets * kept;  // positives' buckets, then negatives'

  // Rows per chunk from the shape alone, so the sums do not depend on the thread count.
  index_t chunk_rows = std::max<index_t>(1, kChunkElements / columns);
  index_t n_chunks = (n + chunk_rows - 1) / chunk_rows;
  const index_t max_chunks = std::max<index_t>(1, kPartialBudget / partial_size);
  if (n_chunks > max_chunks) {
    chunk_rows = (n + max_chunks - 1) / max_chunks;
    n_chunks = (n + chunk_rows - 1) / chunk_rows;
  }
  const index_t column_blocks = options.per_column ? (kept + kColumnBlock - 1) / kColumnBlock : 1;
  const int threads =
      threads_for_work(num_threads, double(n) * double(columns), kGrainElements);

  std::vector<index_t> pivots;
  if (options.top_k > 0 && options.top_k < d)
    pivots = top_k_pivots(prediction, n, d, options.top_k, threads);

  std::vector<double> partials(
      buffer_bytes(n_chunks, partial_size, sizeof(double)) / sizeof(double), 0.0);
  const index_t first_column = options.class_id >= 0 ? options.class_id : 0;
  parallel_for(n_chunks * column_blocks, threads, [&](index_t task) {
    const index_t chunk = task / column_blocks;
    const index_t block = task % column_blocks;
    // The counted columns of this task: one block with per-column counts, else all.
    const index_t begin = options.per_column ? block * kColumnBlock : 0;
    const index_t end = options.per_column ? std::min(kept, begin + kColumnBlock) : columns;
    double* sums = partials.data() + chunk * partial_size;
    const index_t row_end = std::min(n, (chunk + 1) * chunk_rows);
    for (index_t i = chunk * chunk_rows; i < row_end; ++i) {
      const T* row = prediction + i * d;
      const T* truth = target + i * d;
      const double row_weight = sample_weight != nullptr ? double(sample_weight[i]) : 1.0;
      const index_t pivot = pivots.empty() ? -1 : pivots[static_cast<size_t>(i)];
      for (index_t j = begin; j < end; ++j) {
        const index_t col = first_column + j;
        const double weight =
            column_weight != nullptr ? row_weight * double(column_weight[col]) : row_weight;
        const bool in_top = pivot < 0 || col == pivot || ranks_before(row, col, pivot);
        const index_t bucket = in_top ? bucket_of(row[col], thresholds, n_thresholds) : 0;
        const index_t sign = truth[col] != T(0) ? 0 : 1;
        const index_t at = options.per_column ? j : 0;
        sums[(sign * buckets + bucket) * kept + at] += weight;
      }
    }
  });

  // Per kept column: the buckets' totals over the chunks (in chunk order), then the counts.
  const int combine_threads = threads_for_work(
      num_threads, double(n_chunks) * double(partial_size), kGrainElements);
  const index_t combine_blocks = (kept + kColumnBlock - 1) / kColumnBlock;
  parallel_for(combine_blocks, combine_threads, [&](index_t block) {
    std::vector<double> total(static_cast<size_t>(buckets));
    const index_t end = std::min(kept, (block + 1) * kColumnBlock);
    for (index_t at = block * kColumnBlock; at < end; ++at) {
      auto put = [&](Count count, index_t k, double value) {
        double& slot = counts[(count * n_thresholds + k) * kept + at];
        slot = options.accumulate ? slot + value : value;
      };
      for (index_t sign = 0; sign < 2; ++sign) {
        for (index_t b = 0; b < buckets; ++b) {
          double sum = 0.0;
          for (index_t chunk = 0; chunk < n_chunks; ++chunk)
            sum += partials[static_cast<size_t>(chunk * partial_size +
                                                (sign * buckets + b) * kept + at)];
          total[static_cast<size_t>(b)] = sum;
        }
        double above = 0.0;  // buckets k + 1 and up: predicted positive at threshold k
        for (index_t k = n_thresholds - 1; k >= 0; --k) {
          above += total[static_cast<size_t>(k + 1)];
          put(sign == 0 ? true_positives : false_positives, k, above);
        }
        double below = 0.0;  // buckets 0 to k: predicted negative at threshold k
        for (index_t k = 0; k < n_thresholds; ++k) {
          below += total[static_cast<size_t>(k)];
          put(sign == 0 ? false_negatives : true_negatives, k, below);
        }
      }
    }
  });
}

namespace {

// Whether column `target` of `row` is a hit (see metrics.hpp).
template <typename T>
bool in_top_k(const T* row, index_t c, index_t target, index_t k) {
  const T value = row[target];
  if (std::isnan(value)) return false;
  index_t greater = 0;
  for (index_t j = 0; j < c; ++j) {
    if (std::isnan(row[j]) || row[j] > value) {
      if (++greater >= k) return false;
    }
  }
  return true;
}

// Hits and weights over row chunks added in order; class_of(i) is row i's target class.
template <typename T, class ClassOf>
TopKHits count_top_k(const T* prediction, const T* sample_weight, index_t n, index_t c,
                     index_t k, int num_threads, ClassOf class_of) {
  TopKHits result;
  if (n <= 0) return result;
  if (c <= 0) {  // no classes: no hits, only the weights
    if (sample_weight == nullptr) {
      result.weight = double(n);
    } else {
      for (index_t i = 0; i < n; ++i) result.weight += double(sample_weight[i]);
    }
    return result;
  }
  const index_t chunk_rows = std::max<index_t>(1, kChunkElements / c);
  const index_t n_chunks = (n + chunk_rows - 1) / chunk_rows;
  const int threads = threads_for_work(num_threads, double(n) * double(c), kGrainElements);
  std::vector<TopKHits> partials(static_cast<size_t>(n_chunks));
  parallel_for(n_chunks, threads, [&](index_t chunk) {
    TopKHits sums;
    const index_t end = std::min(n, (chunk + 1) * chunk_rows);
    for (index_t i = chunk * chunk_rows; i < end; ++i) {
      const double weight = sample_weight != nullptr ? double(sample_weight[i]) : 1.0;
      sums.weight += weight;
      if (in_top_k(prediction + i * c, c, class_of(i), k)) sums.hits += weight;
    }
    partials[static_cast<size_t>(chunk)] = sums;
  });
  for (const TopKHits& sums : partials) {
    result.hits += sums.hits;
    result.weight += sums.weight;
  }
  return result;
}

}  // namespace

template <typename T, typename Label>
TopKHits top_k_hits_labels(const T* prediction, const Label* labels, const T* sample_weight,
                           index_t n, index_t c, index_t k, int num_threads) {
  return count_top_k(prediction, sample_weight, n, c, k, num_threads,
                     [labels](index_t i) { return static_cast<index_t>(labels[i]); });
}

template <typename T>
TopKHits top_k_hits_dense(const T* prediction, const T* target, const T* sample_weight,
                          index_t n, index_t c, index_t k, int num_threads) {
  return count_top_k(prediction, sample_weight, n, c, k, num_threads, [target, c](index_t i) {
    const T* row = target + i * c;
    index_t best = 0;
    for (index_t j = 1; j < c; ++j)
      if (row[j] > row[best]) best = j;
    return best;
  });
}

#define DENSEKIT_INSTANTIATE(T)                                                              \
  template void confusion_counts<T>(double*, const T*, const T*, const T*, const T*,         \
                                    const T*, index_t, index_t, index_t,                     \
                                    const ConfusionOptions&, int);                           \
  template TopKHits top_k_hits_labels<T, std::int32_t>(const T*, const std::int32_t*,        \
                                                       const T*, index_t, index_t, index_t,  \
                                                       int);                                 \
  template TopKHits top_k_hits_labels<T, std::int64_t>(const T*, const std::int64_t*,        \
                                                       const T*, index_t, index_t, index_t,  \
                                                       int);                                 \
  template TopKHits top_k_hits_dense<T>(const T*, const T*, const T*, index_t, index_t,       \
                                        index_t, int);
DENSEKIT_INSTANTIATE(float)
DENSEKIT_INSTANTIATE(double)
#undef DENSEKIT_INSTANTIATE

}  // namespace densekit
