// Metric kernels: the batch statistics that Keras's threshold and top-k metrics accumulate.
//   prediction and target are (n, d): n samples (rows) of d outputs (classes, labels).
//   confusion_counts: for each threshold t_k, the weighted true positives, false positives,
//     true negatives and false negatives, where an element is predicted positive at t_k when
//     prediction > t_k and is a positive when target != 0 (AUC, Precision, Recall).
//   top_k_hits: the weighted count of rows whose target class is among the k largest
//     predictions (TopKCategoricalAccuracy and its sparse form).
// Sums are accumulated in double over fixed chunks of rows, combined in chunk order, so the
// results are bitwise the same for every thread count.
#pragma once

#include <cstdint>

#include "common.hpp"

namespace densekit {

struct ConfusionOptions {
  // > 0: an element outside the k largest of its row is predicted negative at every
  // threshold. The k largest are those of a descending sort that puts NaN first and breaks
  // ties toward the lower column (k >= d keeps every column).
  index_t top_k = 0;
  // >= 0: count this column only; < 0: every column.
  index_t class_id = -1;
  // true: counts per counted column (multi-label); false: over all counted elements.
  bool per_column = false;
  // true: add the counts to `counts`; false: overwrite it.
  bool accumulate = false;
};

// The number of columns confusion_counts keeps counts for (L): d with per_column (1 with a
// class_id), else 1.
index_t confusion_columns(index_t d, const ConfusionOptions& options);

// counts is (4, n_thresholds, L) (see confusion_columns): true positives, false positives,
// true negatives, false negatives. thresholds (n_thresholds,) must be sorted ascending and
// free of NaN (the caller checks). sample_weight (n,) and column_weight (d,) may be null (all
// ones); an element weighs sample_weight[i] * column_weight[j]. A NaN prediction is never
// above a threshold.
template <typename T>
void confusion_counts(double* counts, const T* prediction, const T* target, const T* thresholds,
                      const T* sample_weight, const T* column_weight, index_t n, index_t d,
                      index_t n_thresholds, const ConfusionOptions& options, int num_threads);

struct TopKHits {
  double hits = 0.0;    // sum of the weights of the rows whose target is in the top k
  double weight = 0.0;  // sum of the weights of all rows (n without weights)
};

// Row i is a hit when fewer than k of its predictions are greater than (or NaN beside) the
// prediction of its target class, which must not be NaN: Keras's in_top_k, where a tie with
// the k-th largest counts as a hit. prediction is (n, c); labels (n,) are class indices in
// [0, c) (checked by the caller); sample_weight (n,) may be null.
template <typename T, typename Label>
TopKHits top_k_hits_labels(const T* prediction, const Label* labels, const T* sample_weight,
                           index_t n, index_t c, index_t k, int num_threads);

// The same with one-hot (or any) target rows (n, c): the target class is the first largest
// entry of the row. Rows without classes (c = 0) are misses.
template <typename T>
TopKHits top_k_hits_dense(const T* prediction, const T* target, const T* sample_weight,
                          index_t n, index_t c, index_t k, int num_threads);

}  // namespace densekit
