// Bindings of the loss kernels. Every loss is one fused call
//   name(prediction, target, *, reduction, sample_weight, compute_grad, grad_out, num_threads,
//        <loss parameters>) -> (loss, grad)
// where loss is a float ("mean", "sum") or the (n,) weighted per-sample losses ("none"), and
// grad is the gradient of the returned loss (of its sum for "none"), or None.
#include "losses.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

Reduction parse_reduction(py::handle obj) {
  if (!py::isinstance<py::str>(obj))
    type_fail("reduction", "expected 'mean', 'sum' or 'none', got " + type_name(obj));
  const std::string text = obj.cast<std::string>();
  if (text == "mean") return Reduction::mean;
  if (text == "sum") return Reduction::sum;
  if (text == "none") return Reduction::none;
  value_fail("reduction", "expected 'mean', 'sum' or 'none', got '" + text + "'");
}

// True or False (a Python or NumPy bool).
bool parse_flag(py::handle obj, const char* name) {
  const std::string type = type_name(obj);
  if (!py::isinstance<py::bool_>(obj) && type != "bool_" && type != "bool")
    type_fail(name, "expected True or False, got " + type);
  return obj.cast<bool>();
}

double parse_delta(py::handle obj) {
  const double delta = real_number(obj, "delta");
  if (!(delta > 0.0)) value_fail("delta", "expected a number > 0, got " + std::to_string(delta));
  return delta;
}

double parse_label_smoothing(py::handle obj) {
  const double ls = real_number(obj, "label_smoothing");
  if (!(ls >= 0.0 && ls <= 1.0))
    value_fail("label_smoothing", "expected a number in [0, 1], got " + std::to_string(ls));
  return ls;
}

// What every loss call shares once its own arguments are checked: the prediction, the
// optional weights and gradient output, the per-sample output of "none", and the settings.
struct LossCall {
  DType dtype = DType::float64;
  py::array prediction;
  index_t n = 0;
  LossOptions options;
  int threads = 1;
  bool has_weight = false;
  py::array weight;
  bool compute_grad = true;
  py::array grad;
  py::array per_sample;

  template <typename T>
  const T* weight_ptr() const {
    return has_weight ? cptr<T>(weight) : nullptr;
  }
  template <typename T>
  T* grad_ptr() {
    return compute_grad ? mptr<T>(grad) : nullptr;
  }
  template <typename T>
  T* per_sample_ptr() {
    return options.reduction == Reduction::none ? mptr<T>(per_sample) : nullptr;
  }
  py::tuple result(double value) const {
    py::object loss = options.reduction == Reduction::none ? py::object(per_sample)
                                                           : py::object(py::float_(value));
    return py::make_tuple(loss, compute_grad ? py::object(grad) : py::object(py::none()));
  }
};

// Checks the arguments common to every loss; `target` is already checked (for overlap).
void finish_call(LossCall* call, const py::array& target, py::handle reduction,
                 py::handle sample_weight, py::handle compute_grad, py::handle grad_out,
                 py::handle num_threads) {
  call->options.reduction = parse_reduction(reduction);
  call->has_weight = !sample_weight.is_none();
  if (call->has_weight) {
    call->weight = float_array_like(sample_weight, "sample_weight", call->dtype, "prediction");
    require_shape(call->weight, "sample_weight", {call->n}, "one weight per sample");
  }
  call->threads = resolve_num_threads(thread_count(num_threads));
  call->compute_grad = parse_flag(compute_grad, "compute_grad");
  const auto shape = shape_of(call->prediction);
  if (!call->compute_grad) {
    if (!grad_out.is_none()) value_fail("grad_out", "given, but compute_grad is False");
  } else if (out_array(grad_out, "grad_out", call->dtype, shape, &call->grad)) {
    require_no_overlap(call->grad, "grad_out",
                       {{&call->prediction, "prediction"},
                        {&target, "target"},
                        {call->has_weight ? &call->weight : nullptr, "sample_weight"}});
  } else {
    call->grad = new_array(call->dtype, shape);
  }
  if (call->options.reduction == Reduction::none)
    call->per_sample = new_array(call->dtype, {call->n});
}

// mse, mae, huber, sigmoid_binary_cross_entropy: prediction and target (n,) or (n, d).
py::tuple elementwise_loss_py(LossKind kind, py::handle prediction_obj, py::handle target_obj,
                              py::handle reduction, py::handle sample_weight,
                              py::handle compute_grad,
                              py::handle grad_out, py::handle num_threads,
                              const LossOptions& params) {
  LossCall call;
  call.prediction = float_array(prediction_obj, "prediction", &call.dtype);
  const py::array& prediction = call.prediction;
  if (prediction.ndim() != 1 && prediction.ndim() != 2)
    value_fail("prediction", "expected shape (n,) or (n, d), got " + shape_string(prediction));
  py::array target = float_array_like(target_obj, "target", call.dtype, "prediction");
  require_shape(target, "target", shape_of(prediction), "the shape of prediction");
  call.n = static_cast<index_t>(prediction.shape(0));
  const index_t d = prediction.ndim() == 2 ? static_cast<index_t>(prediction.shape(1)) : 1;
  call.options = params;
  finish_call(&call, target, reduction, sample_weight, compute_grad, grad_out, num_threads);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* p = cptr<T>(prediction);
    const T* t = cptr<T>(target);
    const T* w = call.weight_ptr<T>();
    T* g = call.grad_ptr<T>();
    T* per_sample = call.per_sample_ptr<T>();
    const GilRelease nogil;
    return elementwise_loss<T>(g, per_sample, p, t, w, call.n, d, kind, call.options,
                               call.threads);
  };
  const double value = for_dtype(call.dtype, run);
  return call.result(value);
}

// Integer class labels: int32 or int64 of any byte-order-native flavour.
bool is_label_dtype(const py::array& a) {
  const char kind = a.dtype().kind();
  return kind == 'i' && (a.itemsize() == 4 || a.itemsize() == 8);
}

template <typename Label>
void check_labels(const py::array& labels, index_t c) {
  const Label* data = cptr<Label>(labels);
  const index_t n = static_cast<index_t>(labels.shape(0));
  const index_t bad = first_label_out_of_range(data, n, c);
  if (bad >= 0)
    value_fail("target", "class label " + std::to_string(static_cast<long long>(data[bad])) +
                             " at index " + std::to_string(bad) + " is outside [0, " +
                             std::to_string(c) + ") (prediction has " + std::to_string(c) +
                             " classes)");
}

// prediction: logits (n, c); target: labels (n,) int32/int64 or probabilities (n, c).
py::tuple softmax_cross_entropy_py(py::handle prediction_obj, py::handle target_obj,
                                   py::handle reduction, py::handle sample_weight,
                                   py::handle compute_grad, py::handle grad_out,
                                   py::handle num_threads, py::handle label_smoothing) {
  LossCall call;
  call.prediction = float_array(prediction_obj, "prediction", &call.dtype);
  const py::array& logits = call.prediction;
  if (logits.ndim() != 2)
    value_fail("prediction", "expected logits of shape (n, classes), got " + shape_string(logits));
  call.n = static_cast<index_t>(logits.shape(0));
  const index_t c = static_cast<index_t>(logits.shape(1));

  const char* expected_target = call.dtype == DType::float32
                                    ? "int32/int64 class labels or float32 probabilities"
                                    : "int32/int64 class labels or float64 probabilities";
  py::array target = require_array(target_obj, "target", expected_target);
  const bool labels = target.dtype().kind() != 'f';
  if (labels) {
    if (!is_label_dtype(target))
      type_fail("target", std::string("expected ") + expected_target + ", got dtype " +
                              dtype_string(target));
    require_c_contiguous(target, "target");
    require_shape(target, "target", {call.n}, "one class label per row of prediction");
    if (target.itemsize() == 4) {
      check_labels<std::int32_t>(target, c);
    } else {
      check_labels<std::int64_t>(target, c);
    }
  } else {
    target = float_array_like(target_obj, "target", call.dtype, "prediction");
    require_shape(target, "target", {call.n, c}, "class probabilities shaped like prediction");
  }
  call.options.label_smoothing = parse_label_smoothing(label_smoothing);
  finish_call(&call, target, reduction, sample_weight, compute_grad, grad_out, num_threads);

  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* z = cptr<T>(logits);
    const T* w = call.weight_ptr<T>();
    T* g = call.grad_ptr<T>();
    T* per_sample = call.per_sample_ptr<T>();
    if (!labels) {
      const T* t = cptr<T>(target);
      const GilRelease nogil;
      return softmax_cross_entropy_probs<T>(g, per_sample, z, t, w, call.n, c, call.options,
                                            call.threads);
    }
    if (target.itemsize() == 4) {
      const auto* t = cptr<std::int32_t>(target);
      const GilRelease nogil;
      return softmax_cross_entropy_labels<T>(g, per_sample, z, t, w, call.n, c, call.options,
                                             call.threads);
    }
    const auto* t = cptr<std::int64_t>(target);
    const GilRelease nogil;
    return softmax_cross_entropy_labels<T>(g, per_sample, z, t, w, call.n, c, call.options,
                                           call.threads);
  };
  const double value = for_dtype(call.dtype, run);
  return call.result(value);
}

const char* const kCommonDoc =
    "\n\nreduction: 'mean' (sum of weighted per-sample losses / n), 'sum', or 'none' (the (n,)\n"
    "weighted per-sample losses). sample_weight: (n,) weights, same dtype. compute_grad=False\n"
    "computes the value only (grad is None). grad_out: where to write the gradient (shape and\n"
    "dtype of prediction). Returns (loss, grad); grad is the gradient of the returned loss\n"
    "with respect to prediction (for 'none', of the sum of the per-sample losses).";

// Binds one elementwise loss; `delta` / `label_smoothing` add that keyword argument.
void def_elementwise(py::module_& m, LossKind kind, const std::string& summary) {
  const std::string doc = summary + kCommonDoc;
  auto common = [kind](py::handle prediction, py::handle target, py::handle reduction,
                       py::handle sample_weight, py::handle compute_grad, py::handle grad_out,
                       py::handle num_threads, const LossOptions& params) {
    return elementwise_loss_py(kind, prediction, target, reduction, sample_weight, compute_grad,
                               grad_out, num_threads, params);
  };
  const char* name = loss_name(kind);
  if (kind == LossKind::huber) {
    m.def(
        name,
        [common](py::handle p, py::handle t, py::handle reduction, py::handle w, py::handle grad,
                 py::handle grad_out, py::handle threads, py::handle delta) {
          LossOptions params;
          params.delta = parse_delta(delta);
          return common(p, t, reduction, w, grad, grad_out, threads, params);
        },
        py::arg("prediction"), py::arg("target"), py::kw_only(), py::arg("reduction") = "mean",
        py::arg("sample_weight") = py::none(), py::arg("compute_grad") = true,
        py::arg("grad_out") = py::none(), py::arg("num_threads") = py::none(),
        py::arg("delta") = 1.0, doc.c_str());
  } else if (kind == LossKind::sigmoid_binary_cross_entropy) {
    m.def(
        name,
        [common](py::handle p, py::handle t, py::handle reduction, py::handle w, py::handle grad,
                 py::handle grad_out, py::handle threads, py::handle label_smoothing) {
          LossOptions params;
          params.label_smoothing = parse_label_smoothing(label_smoothing);
          return common(p, t, reduction, w, grad, grad_out, threads, params);
        },
        py::arg("prediction"), py::arg("target"), py::kw_only(), py::arg("reduction") = "mean",
        py::arg("sample_weight") = py::none(), py::arg("compute_grad") = true,
        py::arg("grad_out") = py::none(), py::arg("num_threads") = py::none(),
        py::arg("label_smoothing") = 0.0, doc.c_str());
  } else if (kind == LossKind::sigmoid_focal_cross_entropy) {
    m.def(
        name,
        [common](py::handle p, py::handle t, py::handle reduction, py::handle w, py::handle grad,
                 py::handle grad_out, py::handle threads, py::handle label_smoothing,
                 py::handle alpha, py::handle gamma, py::handle apply_class_balancing) {
          LossOptions params;
          params.label_smoothing = parse_label_smoothing(label_smoothing);
          params.alpha = real_number(alpha, "alpha");
          params.gamma = real_number(gamma, "gamma");
          if (!(params.gamma >= 0.0))
            value_fail("gamma", "expected a number >= 0, got " + std::to_string(params.gamma));
          params.apply_class_balancing = parse_flag(apply_class_balancing, "apply_class_balancing");
          return common(p, t, reduction, w, grad, grad_out, threads, params);
        },
        py::arg("prediction"), py::arg("target"), py::kw_only(), py::arg("reduction") = "mean",
        py::arg("sample_weight") = py::none(), py::arg("compute_grad") = true,
        py::arg("grad_out") = py::none(), py::arg("num_threads") = py::none(),
        py::arg("label_smoothing") = 0.0, py::arg("alpha") = 0.25, py::arg("gamma") = 2.0,
        py::arg("apply_class_balancing") = false, doc.c_str());
  } else if (kind == LossKind::softmax_focal_cross_entropy) {
    m.def(
        name,
        [common](py::handle p, py::handle t, py::handle reduction, py::handle w, py::handle grad,
                 py::handle grad_out, py::handle threads, py::handle label_smoothing,
                 py::handle alpha, py::handle gamma) {
          LossOptions params;
          params.label_smoothing = parse_label_smoothing(label_smoothing);
          params.alpha = real_number(alpha, "alpha");
          params.gamma = real_number(gamma, "gamma");
          if (!(params.gamma >= 0.0))
            value_fail("gamma", "expected a number >= 0, got " + std::to_string(params.gamma));
          return common(p, t, reduction, w, grad, grad_out, threads, params);
        },
        py::arg("prediction"), py::arg("target"), py::kw_only(), py::arg("reduction") = "mean",
        py::arg("sample_weight") = py::none(), py::arg("compute_grad") = true,
        py::arg("grad_out") = py::none(), py::arg("num_threads") = py::none(),
        py::arg("label_smoothing") = 0.0, py::arg("alpha") = 0.25, py::arg("gamma") = 2.0,
        doc.c_str());
  } else {
    m.def(
        name,
        [common](py::handle p, py::handle t, py::handle reduction, py::handle w, py::handle grad,
                 py::handle grad_out, py::handle threads) {
          return common(p, t, reduction, w, grad, grad_out, threads, LossOptions{});
        },
        py::arg("prediction"), py::arg("target"), py::kw_only(), py::arg("reduction") = "mean",
        py::arg("sample_weight") = py::none(), py::arg("compute_grad") = true,
        py::arg("grad_out") = py::none(), py::arg("num_threads") = py::none(), doc.c_str());
  }
}

// (min, max) of int64 class labels in one pass (the model layer's check of a batch's labels,
// which two NumPy reductions cost several microseconds each).
py::tuple label_bounds_py(py::handle labels_obj) {
  py::array labels = require_array(labels_obj, "labels", "int64");
  if (!py::isinstance<py::array_t<std::int64_t>>(labels) || labels.ndim() != 1 ||
      !(labels.flags() & py::array::c_style))
    type_fail("labels", "expected a 1-D C-contiguous int64 array");
  const index_t n = labels.shape(0);
  if (n == 0) value_fail("labels", "expected at least one label, got none");
  const auto* data = cptr<std::int64_t>(labels);
  std::int64_t low = data[0], high = data[0];
  for (index_t i = 1; i < n; ++i) {
    low = std::min(low, data[i]);
    high = std::max(high, data[i]);
  }
  return py::make_tuple(low, high);
}

}  // namespace

void bind_losses(py::module_& m) {
  m.def("_label_bounds", &label_bounds_py, py::arg("labels"),
        "(min, max) of a 1-D C-contiguous int64 array of class labels, in one pass.");
  def_elementwise(m, LossKind::mse,
                  "Mean squared error: per-sample loss mean_j (prediction - target)^2.");
  def_elementwise(m, LossKind::mae,
                  "Mean absolute error: per-sample loss mean_j ``|prediction - target|``; the "
                  "gradient uses sign (0 at 0).");
  def_elementwise(m, LossKind::huber,
                  "Huber loss: per-sample mean_j of ``0.5 e^2`` for ``|e| <= delta``, else "
                  "``delta (|e| - 0.5 delta)``, with e = prediction - target and delta > 0.");
  const std::string softmax_doc =
      std::string(
          "Softmax cross-entropy of logits prediction (n, classes), fused with its gradient "
          "softmax(prediction) * sum(t) - t.\ntarget: int32/int64 class labels (n,) or class "
          "probabilities (n, classes) of prediction's dtype. label_smoothing ls in [0, 1] maps "
          "t -> t (1 - ls) + ls / classes.") +
      kCommonDoc;
  m.def("softmax_cross_entropy", &softmax_cross_entropy_py, py::arg("prediction"),
        py::arg("target"), py::kw_only(), py::arg("reduction") = "mean",
        py::arg("sample_weight") = py::none(), py::arg("compute_grad") = true,
        py::arg("grad_out") = py::none(), py::arg("num_threads") = py::none(),
        py::arg("label_smoothing") = 0.0, softmax_doc.c_str());
  def_elementwise(m, LossKind::sigmoid_binary_cross_entropy,
                  "Binary cross-entropy of logits: per-sample mean_j of max(z, 0) - z t + "
                  "``log1p(exp(-|z|))``; gradient sigmoid(z) - t. label_smoothing ls in [0, 1] "
                  "maps t -> t (1 - ls) + ls / 2.");
  def_elementwise(m, LossKind::mape,
                  "Mean absolute percentage error (Keras): per-sample mean_j of "
                  "``100 |target - prediction| / max(|target|, 1e-7)``.");
  def_elementwise(m, LossKind::msle,
                  "Mean squared logarithmic error (Keras): per-sample mean_j of "
                  "``(log(max(prediction, 1e-7) + 1) - log(max(target, 1e-7) + 1))^2``.");
  def_elementwise(m, LossKind::log_cosh,
                  "Log-cosh (Keras): per-sample mean_j of ``log(cosh(prediction - target))``, "
                  "computed without overflow; gradient tanh(prediction - target).");
  def_elementwise(m, LossKind::poisson,
                  "Poisson (Keras): per-sample mean_j of ``prediction - target log(prediction + "
                  "1e-7)``.");
  def_elementwise(m, LossKind::kl_divergence,
                  "Kullback-Leibler divergence (Keras): per-sample sum_j of ``t log(t / p)`` with "
                  "t, p the target and prediction clipped to [1e-7, 1].");
  def_elementwise(m, LossKind::hinge,
                  "Hinge (Keras): per-sample mean_j of ``max(1 - target prediction, 0)``, targets "
                  "in {-1, 1}.");
  def_elementwise(m, LossKind::squared_hinge,
                  "Squared hinge (Keras): per-sample mean_j of ``max(1 - target prediction, 0)^2``, "
                  "targets in {-1, 1}.");
  def_elementwise(m, LossKind::categorical_hinge,
                  "Categorical hinge (Keras): per-sample ``max(max_j (1 - t_j) p_j - sum_j t_j p_j "
                  "+ 1, 0)``; the gradient goes to the first j reaching the maximum.");
  def_elementwise(m, LossKind::cosine_similarity,
                  "Cosine similarity loss (Keras): per-sample ``-sum_j t_j p_j / (max(|t|, 1e-7) "
                  "max(|p|, 1e-7))``.");
  def_elementwise(m, LossKind::sigmoid_focal_cross_entropy,
                  "Binary focal cross-entropy of logits (Keras's definition, exact on logits): "
                  "per-sample mean_j of ``b (1 - p_t)^gamma bce`` with p = sigmoid(prediction), "
                  "p_t = t p + (1 - t)(1 - p), bce the sigmoid cross-entropy and b = t alpha + "
                  "(1 - t)(1 - alpha) if apply_class_balancing, else 1. label_smoothing maps "
                  "t -> t (1 - ls) + ls / 2.");
  def_elementwise(m, LossKind::softmax_focal_cross_entropy,
                  "Categorical focal cross-entropy of logits prediction (n, classes) (Keras's "
                  "definition, exact on logits): per-sample sum_j of ``alpha t_j (1 - p_j)^gamma "
                  "(-log p_j)`` with p = softmax(prediction) and target t class probabilities; "
                  "label_smoothing maps t -> t (1 - ls) + ls / classes.");
  py::list names;
  for (LossKind kind : kLossKinds) names.append(loss_name(kind));
  m.attr("LOSSES") = py::tuple(names);
}

}  // namespace densekit::bind
