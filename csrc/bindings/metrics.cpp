// Bindings of the metric kernels:
//   confusion_counts(prediction, target, thresholds, *, sample_weight, column_weight, top_k,
//                    class_id, multi_label, out, accumulate, num_threads) -> counts
//   top_k_hits(prediction, target, k, *, sample_weight, num_threads) -> (hits, weight)
#include "metrics.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "losses.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

// An integer (int or anything with __index__, not bool) in [low, high].
index_t int_in_range(py::handle obj, const char* name, index_t low, index_t high) {
  const std::string expected =
      "expected an int in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
  if (py::isinstance<py::bool_>(obj) || PyIndex_Check(obj.ptr()) == 0)
    type_fail(name, expected + ", got " + type_name(obj));
  const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long number = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0 || number < low || number > high)
    value_fail(name, expected + ", got " + py::str(value).cast<std::string>());
  return static_cast<index_t>(number);
}

constexpr index_t kMaxIndex = (index_t{1} << 62);

// A (n,) weight array of the prediction's dtype, or None.
bool weight_array(py::handle obj, const char* name, DType dtype, index_t size, const char* why,
                  py::array* result) {
  if (obj.is_none()) return false;
  *result = float_array_like(obj, name, dtype, "prediction");
  require_shape(*result, name, {size}, why);
  return true;
}

template <typename T>
const T* optional_ptr(bool given, const py::array& a) {
  return given ? cptr<T>(a) : nullptr;
}

py::array confusion_counts_py(py::handle prediction_obj, py::handle target_obj,
                              py::handle thresholds_obj, py::handle sample_weight_obj,
                              py::handle column_weight_obj, py::handle top_k_obj,
                              py::handle class_id_obj, py::handle multi_label_obj,
                              py::handle out_obj, py::handle accumulate_obj,
                              py::handle threads_obj) {
  DType dtype;
  py::array prediction = float_array(prediction_obj, "prediction", &dtype);
  if (prediction.ndim() != 1 && prediction.ndim() != 2)
    value_fail("prediction", "expected shape (n,) or (n, d), got " + shape_string(prediction));
  const index_t n = static_cast<index_t>(prediction.shape(0));
  const index_t d = prediction.ndim() == 2 ? static_cast<index_t>(prediction.shape(1)) : 1;
  py::array target = float_array_like(target_obj, "target", dtype, "prediction");
  std::vector<index_t> prediction_shape(prediction.shape(), prediction.shape() + prediction.ndim());
  require_shape(target, "target", prediction_shape, "the shape of prediction");
  py::array thresholds = float_array_like(thresholds_obj, "thresholds", dtype, "prediction");
  require_ndim(thresholds, "thresholds", 1);
  const index_t n_thresholds = static_cast<index_t>(thresholds.shape(0));
  auto check_sorted = [&](auto tag) {
    using T = decltype(tag);
    const T* t = cptr<T>(thresholds);
    for (index_t k = 0; k < n_thresholds; ++k) {
      if (std::isnan(t[k]))
        value_fail("thresholds", "expected numbers, got NaN at index " + std::to_string(k));
      if (k > 0 && t[k] < t[k - 1])
        value_fail("thresholds", "expected values in ascending order, got " +
                                     std::to_string(double(t[k])) + " after " +
                                     std::to_string(double(t[k - 1])) + " at index " +
                                     std::to_string(k));
    }
    return 0;
  };
  for_dtype(dtype, check_sorted);
  py::array sample_weight;
  const bool has_sample_weight =
      weight_array(sample_weight_obj, "sample_weight", dtype, n, "one weight per sample",
                   &sample_weight);
  py::array column_weight;
  const bool has_column_weight =
      weight_array(column_weight_obj, "column_weight", dtype, d, "one weight per column",
                   &column_weight);
  ConfusionOptions options;
  if (!top_k_obj.is_none()) options.top_k = int_in_range(top_k_obj, "top_k", 1, kMaxIndex);
  if (!class_id_obj.is_none()) {
    if (d == 0) value_fail("class_id", "given, but prediction has no columns");
    options.class_id = int_in_range(class_id_obj, "class_id", 0, d - 1);
  }
  options.per_column = flag(multi_label_obj, "multi_label");
  options.accumulate = flag(accumulate_obj, "accumulate");
  const int threads = resolve_num_threads(thread_count(threads_obj));

  const index_t kept = confusion_columns(d, options);
  std::vector<index_t> shape{4, n_thresholds};
  if (options.per_column) shape.push_back(kept);
  buffer_bytes(4 * n_thresholds, kept, sizeof(double));  // MemoryError when it cannot exist
  py::array out;
  if (!out_array(out_obj, "out", DType::float64, shape, &out)) {
    if (options.accumulate) value_fail("out", "accumulate=True adds into out, which was not given");
    out = new_array<double>(shape);
  } else {
    require_no_overlap(out, "out",
                       {{&prediction, "prediction"},
                        {&target, "target"},
                        {&thresholds, "thresholds"},
                        {has_sample_weight ? &sample_weight : nullptr, "sample_weight"},
                        {has_column_weight ? &column_weight : nullptr, "column_weight"}});
  }
  double* counts = mptr<double>(out);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* p = cptr<T>(prediction);
    const T* t = cptr<T>(target);
    const T* th = cptr<T>(thresholds);
    const T* sw = optional_ptr<T>(has_sample_weight, sample_weight);
    const T* cw = optional_ptr<T>(has_column_weight, column_weight);
    const GilRelease nogil;
    confusion_counts<T>(counts, p, t, th, sw, cw, n, d, n_thresholds, options, threads);
    return 0;
  };
  for_dtype(dtype, run);
  return out;
}

py::tuple top_k_hits_py(py::handle prediction_obj, py::handle target_obj, py::handle k_obj,
                        py::handle sample_weight_obj, py::handle threads_obj) {
  DType dtype;
  py::array prediction = float_array(prediction_obj, "prediction", &dtype);
  if (prediction.ndim() != 2)
    value_fail("prediction", "expected scores of shape (n, classes), got " +
                                 shape_string(prediction));
  const index_t n = static_cast<index_t>(prediction.shape(0));
  const index_t c = static_cast<index_t>(prediction.shape(1));
  const char* expected_target = dtype == DType::float32
                                    ? "int32/int64 class labels or float32 one-hot rows"
                                    : "int32/int64 class labels or float64 one-hot rows";
  py::array target = require_array(target_obj, "target", expected_target);
  const bool labels = target.dtype().kind() != 'f';
  if (labels) {
    if (target.dtype().kind() != 'i' || (target.itemsize() != 4 && target.itemsize() != 8))
      type_fail("target", std::string("expected ") + expected_target + ", got dtype " +
                              dtype_string(target));
    require_c_contiguous(target, "target");
    require_shape(target, "target", {n}, "one class label per row of prediction");
    const index_t bad = target.itemsize() == 4
                            ? first_label_out_of_range(cptr<std::int32_t>(target), n, c)
                            : first_label_out_of_range(cptr<std::int64_t>(target), n, c);
    if (bad >= 0) {
      const long long label = target.itemsize() == 4 ? cptr<std::int32_t>(target)[bad]
                                                     : cptr<std::int64_t>(target)[bad];
      value_fail("target", "class label " + std::to_string(label) + " at index " +
                               std::to_string(bad) + " is outside [0, " + std::to_string(c) +
                               ") (prediction has " + std::to_string(c) + " classes)");
    }
  } else {
    target = float_array_like(target_obj, "target", dtype, "prediction");
    require_shape(target, "target", {n, c}, "one-hot rows shaped like prediction");
  }
  const index_t k = int_in_range(k_obj, "k", 1, kMaxIndex);
  py::array sample_weight;
  const bool has_sample_weight =
      weight_array(sample_weight_obj, "sample_weight", dtype, n, "one weight per sample",
                   &sample_weight);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* p = cptr<T>(prediction);
    const T* sw = optional_ptr<T>(has_sample_weight, sample_weight);
    if (!labels) {
      const T* t = cptr<T>(target);
      const GilRelease nogil;
      return top_k_hits_dense<T>(p, t, sw, n, c, k, threads);
    }
    if (target.itemsize() == 4) {
      const auto* t = cptr<std::int32_t>(target);
      const GilRelease nogil;
      return top_k_hits_labels<T>(p, t, sw, n, c, k, threads);
    }
    const auto* t = cptr<std::int64_t>(target);
    const GilRelease nogil;
    return top_k_hits_labels<T>(p, t, sw, n, c, k, threads);
  };
  const TopKHits result = for_dtype(dtype, run);
  return py::make_tuple(result.hits, result.weight);
}

}  // namespace

void bind_metrics(py::module_& m) {
  m.def("confusion_counts", &confusion_counts_py, py::arg("prediction"), py::arg("target"),
        py::arg("thresholds"), py::kw_only(), py::arg("sample_weight") = py::none(),
        py::arg("column_weight") = py::none(), py::arg("top_k") = py::none(),
        py::arg("class_id") = py::none(), py::arg("multi_label") = false,
        py::arg("out") = py::none(), py::arg("accumulate") = false,
        py::arg("num_threads") = py::none(),
        "Weighted confusion counts at each threshold, in one pass: a float64 array (4, T) of\n"
        "true positives, false positives, true negatives and false negatives (rows in that\n"
        "order), (4, T, d) with multi_label=True (per column). prediction and target are (n,)\n"
        "or (n, d), of one dtype; an element is predicted positive at threshold t when\n"
        "prediction > t and is a positive when target != 0. thresholds (T,), prediction's\n"
        "dtype, ascending. sample_weight (n,) weighs rows, column_weight (d,) columns.\n"
        "top_k: an element outside its row's k largest (descending, NaN first, ties to the\n"
        "lower column) is predicted negative everywhere. class_id: count that column only.\n"
        "out: where to write the counts (float64); accumulate=True adds them to out.");
  m.def("top_k_hits", &top_k_hits_py, py::arg("prediction"), py::arg("target"), py::arg("k"),
        py::kw_only(), py::arg("sample_weight") = py::none(), py::arg("num_threads") = py::none(),
        "Weighted count of the rows whose target class is among the k largest predictions\n"
        "(Keras's in_top_k: fewer than k predictions are greater than, or NaN beside, the\n"
        "target's, which is not NaN). prediction (n, classes); target int32/int64 labels (n,)\n"
        "or rows (n, classes) of prediction's dtype whose first largest entry is the class.\n"
        "Returns (hits, weight): the summed weights of the hits and of all rows.");
}

}  // namespace densekit::bind
