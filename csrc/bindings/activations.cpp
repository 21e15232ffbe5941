// Bindings of the activation kernels and the shared activation-name parser.
#include "activations.hpp"

#include <limits>
#include <string>

#include "bindings.hpp"
#include "checks.hpp"
#include "parallel.hpp"

namespace densekit::bind {

Activation parse_activation(py::handle name, py::handle alpha, const char* arg) {
  Activation act;
  if (name.is_none()) {
    act.kind = ActivationKind::linear;
  } else {
    if (!py::isinstance<py::str>(name))
      type_fail(arg, "expected an activation name (str) or None, got " + type_name(name));
    const std::string text = name.cast<std::string>();
    if (!activation_from_name(text, &act.kind)) {
      std::string known;
      for (const ActivationInfo& row : kActivationTable)
        known += std::string(known.empty() ? "" : ", ") + "'" + row.name + "'";
      value_fail(arg, "expected one of " + known + ", got '" + text + "'");
    }
  }
  act.alpha = activation_default_alpha(act.kind);
  if (!alpha.is_none()) {
    if (!activation_has_alpha(act.kind))
      value_fail("alpha", std::string("activation '") + activation_name(act.kind) +
                              "' takes no alpha (only leaky_relu and elu do)");
    act.alpha = real_number(alpha, "alpha");
  }
  return act;
}

namespace {

// Softmax and log_softmax act on the last axis; elementwise activations see the array as one
// long row set.
void rows_and_cols(const py::array& a, bool row_wise, index_t* rows, index_t* cols) {
  const index_t size = static_cast<index_t>(a.size());
  if (!row_wise || a.ndim() == 0) {
    *rows = size;
    *cols = 1;
    return;
  }
  *cols = static_cast<index_t>(a.shape(a.ndim() - 1));
  *rows = *cols == 0 ? 0 : size / *cols;
}

// out= may be the input itself (in place) but must not partly overlap it.
void require_same_or_disjoint(const py::array& out, const char* out_name, const py::array& in,
                              const char* in_name) {
  if (out.data() == in.data() && out.nbytes() == in.nbytes()) return;
  if (memory_overlaps(out, in))
    value_fail(out_name, std::string("must be ") + in_name +
                             " itself (in place) or not share memory with it");
}

py::array activation_forward_py(py::handle z_obj, py::handle name, py::handle out_obj,
                                py::handle alpha, py::handle threads_obj) {
  DType dtype;
  py::array z = float_array(z_obj, "z", &dtype);
  const Activation act = parse_activation(name, alpha);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const bool row_wise = is_row_activation(act.kind);
  if (row_wise && z.ndim() == 0)
    value_fail("z", std::string(activation_name(act.kind)) +
                        " needs at least one axis, got a 0-d array");
  py::array out;
  if (out_array(out_obj, "out", dtype, shape_of(z), &out)) {
    require_same_or_disjoint(out, "out", z, "z");
  } else {
    out = new_array(dtype, shape_of(z));
  }
  index_t rows, cols;
  rows_and_cols(z, row_wise, &rows, &cols);
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* zp = cptr<T>(z);
    T* yp = mptr<T>(out);
    const GilRelease nogil;
    activation_forward<T>(yp, zp, rows, cols, act, threads);
  });
  return out;
}

py::array activation_backward_py(py::handle dy_obj, py::handle name, py::handle y_obj,
                                 py::handle z_obj, py::handle out_obj, py::handle alpha,
                                 py::handle threads_obj) {
  DType dtype;
  py::array dy = float_array(dy_obj, "dy", &dtype);
  const Activation act = parse_activation(name, alpha);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const auto shape = shape_of(dy);
  const bool row_wise = is_row_activation(act.kind);
  if (row_wise && dy.ndim() == 0)
    value_fail("dy", std::string(activation_name(act.kind)) +
                         " needs at least one axis, got a 0-d array");
  py::array y, z;
  const bool has_y = !y_obj.is_none();
  const bool has_z = !z_obj.is_none();
  if (has_y) {
    y = float_array_like(y_obj, "y", dtype, "dy");
    require_shape(y, "y", shape, "the shape of dy");
  }
  if (has_z) {
    z = float_array_like(z_obj, "z", dtype, "dy");
    require_shape(z, "z", shape, "the shape of dy");
  }
  const bool use_y = has_y && derivative_from_output(act);
  if (!derivative_is_one(act) && !use_y && !has_z) {
    if (derivative_from_output(act))
      value_fail("y", std::string("activation '") + activation_name(act.kind) +
                          "' needs its output y (or its input z) for the derivative; neither "
                          "was given");
    value_fail("z", std::string("activation '") + activation_name(act.kind) +
                        "' needs its input z (the pre-activation) for the derivative; z was not "
                        "given");
  }
  py::array out;
  if (out_array(out_obj, "out", dtype, shape, &out)) {
    require_same_or_disjoint(out, "out", dy, "dy");
    require_no_overlap(out, "out", {{has_y ? &y : nullptr, "y"}, {has_z ? &z : nullptr, "z"}});
  } else {
    out = new_array(dtype, shape);
  }
  index_t rows, cols;
  rows_and_cols(dy, row_wise, &rows, &cols);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = cptr<T>(dy);
    const T* yp = use_y ? cptr<T>(y) : nullptr;
    const T* zp = has_z ? cptr<T>(z) : nullptr;
    T* dzp = mptr<T>(out);
    const GilRelease nogil;
    activation_backward<T>(dzp, dyp, yp, zp, rows, cols, act, threads);
  };
  for_dtype(dtype, run);
  return out;
}

// Keras's ReLU parameters: numbers >= 0 (max_value may be None: no cap), as Keras checks them.
ReluParameters relu_parameters(py::handle max_value, py::handle negative_slope,
                               py::handle threshold) {
  auto non_negative = [](py::handle obj, const char* name) {
    const double value = real_number(obj, name);
    if (!(value >= 0))
      value_fail(name, "expected a number >= 0, got " +
                           py::repr(py::float_(value)).cast<std::string>());
    return value;
  };
  ReluParameters relu;
  relu.max_value = max_value.is_none() ? std::numeric_limits<double>::infinity()
                                       : non_negative(max_value, "max_value");
  relu.negative_slope = non_negative(negative_slope, "negative_slope");
  relu.threshold = non_negative(threshold, "threshold");
  return relu;
}

py::array relu_forward_py(py::handle z_obj, py::handle max_value, py::handle negative_slope,
                          py::handle threshold, py::handle out_obj, py::handle threads_obj) {
  DType dtype;
  py::array z = float_array(z_obj, "z", &dtype);
  const ReluParameters relu = relu_parameters(max_value, negative_slope, threshold);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  py::array out;
  if (out_array(out_obj, "out", dtype, shape_of(z), &out)) {
    require_same_or_disjoint(out, "out", z, "z");
  } else {
    out = new_array(dtype, shape_of(z));
  }
  const index_t count = static_cast<index_t>(z.size());
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* zp = cptr<T>(z);
    T* yp = mptr<T>(out);
    const GilRelease nogil;
    relu_forward<T>(yp, zp, count, relu, threads);
  });
  return out;
}

py::array relu_backward_py(py::handle dy_obj, py::handle z_obj, py::handle max_value,
                           py::handle negative_slope, py::handle threshold, py::handle out_obj,
                           py::handle threads_obj) {
  DType dtype;
  py::array dy = float_array(dy_obj, "dy", &dtype);
  const auto shape = shape_of(dy);
  py::array z = float_array_like(z_obj, "z", dtype, "dy");
  require_shape(z, "z", shape, "the shape of dy");
  const ReluParameters relu = relu_parameters(max_value, negative_slope, threshold);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  py::array out;
  if (out_array(out_obj, "out", dtype, shape, &out)) {
    require_same_or_disjoint(out, "out", dy, "dy");
    require_no_overlap(out, "out", {{&z, "z"}});
  } else {
    out = new_array(dtype, shape);
  }
  const index_t count = static_cast<index_t>(dy.size());
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* dyp = cptr<T>(dy);
    const T* zp = cptr<T>(z);
    T* dzp = mptr<T>(out);
    const GilRelease nogil;
    relu_backward<T>(dzp, dyp, zp, count, relu, threads);
  });
  return out;
}

}  // namespace

void bind_activations(py::module_& m) {
  m.def("activation_forward", &activation_forward_py, py::arg("z"), py::arg("activation"),
        py::kw_only(), py::arg("out") = py::none(), py::arg("alpha") = py::none(),
        py::arg("num_threads") = py::none(),
        "y = f(z) elementwise (softmax, log_softmax: over the last axis). out may be z itself.");
  m.def("activation_backward", &activation_backward_py, py::arg("dy"), py::arg("activation"),
        py::kw_only(), py::arg("y") = py::none(), py::arg("z") = py::none(),
        py::arg("out") = py::none(), py::arg("alpha") = py::none(),
        py::arg("num_threads") = py::none(),
        "dz = dy * f'(z) (softmax, log_softmax: the row Jacobian-vector product). out may be dy "
        "itself.");
  m.def("relu_forward", &relu_forward_py, py::arg("z"), py::kw_only(),
        py::arg("max_value") = py::none(), py::arg("negative_slope") = 0.0,
        py::arg("threshold") = 0.0, py::arg("out") = py::none(),
        py::arg("num_threads") = py::none(),
        "Keras's relu(z, negative_slope, max_value, threshold) elementwise: min(z, max_value) "
        "above the threshold, negative_slope * (z - threshold) below it, 0 at it. out may be z "
        "itself.");
  m.def("relu_backward", &relu_backward_py, py::arg("dy"), py::arg("z"), py::kw_only(),
        py::arg("max_value") = py::none(), py::arg("negative_slope") = 0.0,
        py::arg("threshold") = 0.0, py::arg("out") = py::none(),
        py::arg("num_threads") = py::none(),
        "dz = dy * relu'(z) for relu_forward's parameters: 1 for threshold < z <= max_value, "
        "negative_slope below the threshold, 0 elsewhere. out may be dy itself.");
  // The activation table (activation_table.hpp), in its row order.
  py::list names;
  py::dict info;
  for (const ActivationInfo& row : kActivationTable) {
    names.append(row.name);
    py::dict entry;
    entry["alpha"] = row.has_alpha ? py::object(py::float_(row.default_alpha)) : py::none();
    entry["needs_preactivation"] = row.from_output == FromOutput::never;
    entry["derivative_from_output"] = row.from_output == FromOutput::always       ? "always"
                                      : row.from_output == FromOutput::never      ? "never"
                                                                                  : "alpha > 0";
    entry["fused_in_tile"] = row.tile != TileActivation::none;
    entry["vector_math"] = row.vector_math;
    entry["elementwise"] = row.elementwise;
    info[row.name] = entry;
  }
  m.attr("ACTIVATIONS") = py::tuple(names);
  m.attr("ACTIVATION_INFO") = info;
}

}  // namespace densekit::bind
