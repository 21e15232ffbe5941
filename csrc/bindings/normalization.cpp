// Bindings of the normalization kernels (batch, layer and feature normalization). x is
// (n, k); per-feature arrays (gamma, beta, statistics) are (k,); layer norm's per-row
// statistics are (n,). Outputs are new arrays or out= arrays of exactly the right dtype and
// shape that share memory with no other array of the call.
#include "normalization.hpp"

#include <Python.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

double epsilon_arg(py::handle obj) {
  const double value = real_number(obj, "epsilon");
  if (!(value > 0)) value_fail("epsilon", "expected a number > 0, got " + std::to_string(value));
  return value;
}

// The calls' arrays: the inputs checked as they come, the outputs checked against all of them.
class Arrays {
 public:
  // x: a 2-d float array that fixes the dtype, n and k.
  Arrays(py::handle x_obj, const char* name) {
    x_ = float_array(x_obj, name, &dtype_);
    require_ndim(x_, name, 2);
    n_ = static_cast<index_t>(x_.shape(0));
    k_ = static_cast<index_t>(x_.shape(1));
    x_name_ = name;
    inputs_.push_back({x_, name});
  }

  DType dtype() const { return dtype_; }
  index_t n() const { return n_; }
  index_t k() const { return k_; }
  const py::array& x() const { return x_; }

  // Another input of the same dtype and the given shape; None gives an empty array when
  // optional.
  py::array input(py::handle obj, const char* name, const std::vector<index_t>& shape,
                  const char* why, bool optional = false) {
    if (obj.is_none()) {
      if (!optional) type_fail(name, std::string("expected an array, got None"));
      return py::array();
    }
    py::array a = float_array_like(obj, name, dtype_, x_name_);
    require_shape(a, name, shape, why);
    inputs_.push_back({a, name});
    return a;
  }

  // An output: the out= array (checked) or a new one.
  py::array output(py::handle obj, const char* name, const std::vector<index_t>& shape) {
    py::array a;
    if (!out_array(obj, name, dtype_, shape, &a)) {
      a = new_array(dtype_, shape);
    } else {
      for (const auto& [other, other_name] : inputs_)
        if (memory_overlaps(a, other)) value_fail(name, "must not share memory with " + other_name);
    }
    inputs_.push_back({a, name});
    return a;
  }

 private:
  DType dtype_;
  py::array x_;
  index_t n_ = 0, k_ = 0;
  const char* x_name_ = "x";
  std::vector<std::pair<py::array, std::string>> inputs_;
};

// An optional array: absent ones are default-constructed (an empty float64 array, not a
// null handle), and an empty one has nothing to read or write: either gives nullptr.
template <typename T>
const T* maybe(const py::array& a) {
  return a.size() > 0 ? cptr<T>(a) : nullptr;
}

template <typename T>
T* maybe_mut(py::array& a) {
  return a.size() > 0 ? mptr<T>(a) : nullptr;
}

py::object feature_moments_py(py::handle x_obj, py::handle mean_out, py::handle variance_out,
                              py::handle threads_obj) {
  Arrays arrays(x_obj, "x");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  if (arrays.n() == 0) value_fail("x", "expected at least one row, got shape (0, " +
                                           std::to_string(arrays.k()) + ")");
  const std::vector<index_t> feature{arrays.k()};
  py::array mean = arrays.output(mean_out, "mean_out", feature);
  py::array variance = arrays.output(variance_out, "variance_out", feature);
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    feature_moments<T>(mptr<T>(mean), mptr<T>(variance), cptr<T>(arrays.x()), arrays.n(),
                       arrays.k(), threads);
  });
  return py::make_tuple(mean, variance);
}

py::object batch_norm_forward_py(py::handle x_obj, py::handle gamma_obj, py::handle beta_obj,
                                 py::handle moving_mean_obj, py::handle moving_variance_obj,
                                 py::handle training_obj, py::handle epsilon_obj,
                                 py::handle out_obj, py::handle mean_out, py::handle variance_out,
                                 py::handle threads_obj) {
  Arrays arrays(x_obj, "x");
  const bool training = flag(training_obj, "training");
  const double epsilon = epsilon_arg(epsilon_obj);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::vector<index_t> feature{arrays.k()};
  const char* per_feature = "one value per feature of x";
  py::array gamma = arrays.input(gamma_obj, "gamma", feature, per_feature, true);
  py::array beta = arrays.input(beta_obj, "beta", feature, per_feature, true);
  py::array moving_mean =
      arrays.input(moving_mean_obj, "moving_mean", feature, per_feature, training);
  py::array moving_variance =
      arrays.input(moving_variance_obj, "moving_variance", feature, per_feature, training);
  if (training && arrays.n() == 0)
    value_fail("x", "training needs at least one row for the batch statistics, got shape (0, " +
                        std::to_string(arrays.k()) + ")");
  py::array y = arrays.output(out_obj, "out", {arrays.n(), arrays.k()});
  py::array mean, variance;
  if (training) {
    mean = arrays.output(mean_out, "mean_out", feature);
    variance = arrays.output(variance_out, "variance_out", feature);
  } else if (!mean_out.is_none() || !variance_out.is_none()) {
    value_fail(mean_out.is_none() ? "variance_out" : "mean_out",
               "batch statistics are computed only with training=True");
  }
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    batch_norm_forward<T>(mptr<T>(y), maybe_mut<T>(mean), maybe_mut<T>(variance),
                          cptr<T>(arrays.x()), maybe<T>(gamma), maybe<T>(beta),
                          maybe<T>(moving_mean), maybe<T>(moving_variance), arrays.n(),
                          arrays.k(), epsilon, training, threads);
  });
  if (training) return py::make_tuple(y, mean, variance);
  return y;
}

py::object batch_norm_backward_py(py::handle dy_obj, py::handle x_obj, py::handle gamma_obj,
                                  py::handle mean_obj, py::handle variance_obj,
                                  py::handle training_obj, py::handle epsilon_obj,
                                  py::handle need_dx_obj, py::handle need_dgamma_obj,
                                  py::handle need_dbeta_obj, py::handle dx_out,
                                  py::handle dgamma_out, py::handle dbeta_out,
                                  py::handle threads_obj) {
  Arrays arrays(dy_obj, "dy");
  const bool training = flag(training_obj, "training");
  const double epsilon = epsilon_arg(epsilon_obj);
  const bool need_dx = flag(need_dx_obj, "need_dx");
  const bool need_dgamma = flag(need_dgamma_obj, "need_dgamma");
  const bool need_dbeta = flag(need_dbeta_obj, "need_dbeta");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::vector<index_t> shape{arrays.n(), arrays.k()};
  const std::vector<index_t> feature{arrays.k()};
  const char* per_feature = "one value per feature of dy";
  py::array x = arrays.input(x_obj, "x", shape, "the shape of dy");
  py::array gamma = arrays.input(gamma_obj, "gamma", feature, per_feature, true);
  py::array mean = arrays.input(mean_obj, "mean", feature, per_feature);
  py::array variance = arrays.input(variance_obj, "variance", feature, per_feature);
  if (training && arrays.n() == 0)
    value_fail("dy", "training needs at least one row, got shape (0, " +
                         std::to_string(arrays.k()) + ")");
  py::array dx, dgamma, dbeta;
  if (need_dx) dx = arrays.output(dx_out, "dx_out", shape);
  if (need_dgamma) dgamma = arrays.output(dgamma_out, "dgamma_out", feature);
  if (need_dbeta) dbeta = arrays.output(dbeta_out, "dbeta_out", feature);
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    batch_norm_backward<T>(maybe_mut<T>(dx), maybe_mut<T>(dgamma), maybe_mut<T>(dbeta),
                           cptr<T>(arrays.x()), cptr<T>(x), maybe<T>(gamma), cptr<T>(mean),
                           cptr<T>(variance), arrays.n(), arrays.k(), epsilon, training,
                           threads);
  });
  return py::make_tuple(need_dx ? py::object(dx) : py::object(py::none()),
                        need_dgamma ? py::object(dgamma) : py::object(py::none()),
                        need_dbeta ? py::object(dbeta) : py::object(py::none()));
}

void batch_norm_update_moving_py(py::handle moving_mean_obj, py::handle moving_variance_obj,
                                 py::handle mean_obj, py::handle variance_obj,
                                 py::handle momentum_obj) {
  DType dtype;
  py::array moving_mean = float_array(moving_mean_obj, "moving_mean", &dtype);
  require_ndim(moving_mean, "moving_mean", 1);
  require_writeable(moving_mean, "moving_mean");
  const std::vector<index_t> feature{static_cast<index_t>(moving_mean.shape(0))};
  const char* same = "the shape of moving_mean";
  py::array moving_variance =
      float_array_like(moving_variance_obj, "moving_variance", dtype, "moving_mean");
  require_shape(moving_variance, "moving_variance", feature, same);
  require_writeable(moving_variance, "moving_variance");
  py::array mean = float_array_like(mean_obj, "mean", dtype, "moving_mean");
  require_shape(mean, "mean", feature, same);
  py::array variance = float_array_like(variance_obj, "variance", dtype, "moving_mean");
  require_shape(variance, "variance", feature, same);
  const double momentum = real_number(momentum_obj, "momentum");
  if (!(momentum >= 0.0 && momentum <= 1.0))
    value_fail("momentum", "expected a number in [0, 1], got " + std::to_string(momentum));
  require_no_overlap(moving_mean, "moving_mean",
                     {{&moving_variance, "moving_variance"}, {&mean, "mean"},
                      {&variance, "variance"}});
  require_no_overlap(moving_variance, "moving_variance", {{&mean, "mean"}, {&variance, "variance"}});
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    moving_average_update<T>(mptr<T>(moving_mean), cptr<T>(mean), feature[0], momentum);
    moving_average_update<T>(mptr<T>(moving_variance), cptr<T>(variance), feature[0], momentum);
  });
}

py::object layer_norm_forward_py(py::handle x_obj, py::handle gamma_obj, py::handle beta_obj,
                                 py::handle epsilon_obj, py::handle out_obj,
                                 py::handle mean_out, py::handle inv_std_out,
                                 py::handle threads_obj) {
  Arrays arrays(x_obj, "x");
  const double epsilon = epsilon_arg(epsilon_obj);
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::vector<index_t> feature{arrays.k()};
  const std::vector<index_t> rows{arrays.n()};
  const char* per_feature = "one value per feature of x";
  py::array gamma = arrays.input(gamma_obj, "gamma", feature, per_feature, true);
  py::array beta = arrays.input(beta_obj, "beta", feature, per_feature, true);
  if (arrays.k() == 0 && arrays.n() > 0)
    value_fail("x", "expected at least one feature to normalize over, got shape (" +
                        std::to_string(arrays.n()) + ", 0)");
  py::array y = arrays.output(out_obj, "out", {arrays.n(), arrays.k()});
  py::array mean = arrays.output(mean_out, "mean_out", rows);
  py::array inv_std = arrays.output(inv_std_out, "inv_std_out", rows);
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    layer_norm_forward<T>(mptr<T>(y), mptr<T>(mean), mptr<T>(inv_std), cptr<T>(arrays.x()),
                          maybe<T>(gamma), maybe<T>(beta), arrays.n(), arrays.k(), epsilon,
                          threads);
  });
  return py::make_tuple(y, mean, inv_std);
}

py::object layer_norm_backward_py(py::handle dy_obj, py::handle x_obj, py::handle gamma_obj,
                                  py::handle mean_obj, py::handle inv_std_obj,
                                  py::handle need_dx_obj, py::handle need_dgamma_obj,
                                  py::handle need_dbeta_obj, py::handle dx_out,
                                  py::handle dgamma_out, py::handle dbeta_out,
                                  py::handle threads_obj) {
  Arrays arrays(dy_obj, "dy");
  const bool need_dx = flag(need_dx_obj, "need_dx");
  const bool need_dgamma = flag(need_dgamma_obj, "need_dgamma");
  const bool need_dbeta = flag(need_dbeta_obj, "need_dbeta");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::vector<index_t> shape{arrays.n(), arrays.k()};
  const std::vector<index_t> feature{arrays.k()};
  const std::vector<index_t> rows{arrays.n()};
  py::array x = arrays.input(x_obj, "x", shape, "the shape of dy");
  py::array gamma = arrays.input(gamma_obj, "gamma", feature, "one value per feature of dy", true);
  py::array mean = arrays.input(mean_obj, "mean", rows, "one value per row of dy");
  py::array inv_std = arrays.input(inv_std_obj, "inv_std", rows, "one value per row of dy");
  py::array dx, dgamma, dbeta;
  if (need_dx) dx = arrays.output(dx_out, "dx_out", shape);
  if (need_dgamma) dgamma = arrays.output(dgamma_out, "dgamma_out", feature);
  if (need_dbeta) dbeta = arrays.output(dbeta_out, "dbeta_out", feature);
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    layer_norm_backward<T>(maybe_mut<T>(dx), maybe_mut<T>(dgamma), maybe_mut<T>(dbeta),
                           cptr<T>(arrays.x()), cptr<T>(x), maybe<T>(gamma), cptr<T>(mean),
                           cptr<T>(inv_std), arrays.n(), arrays.k(), threads);
  });
  return py::make_tuple(need_dx ? py::object(dx) : py::object(py::none()),
                        need_dgamma ? py::object(dgamma) : py::object(py::none()),
                        need_dbeta ? py::object(dbeta) : py::object(py::none()));
}

py::array normalization_forward_py(py::handle x_obj, py::handle mean_obj,
                                   py::handle variance_obj, py::handle invert_obj,
                                   py::handle out_obj, py::handle threads_obj) {
  Arrays arrays(x_obj, "x");
  const bool invert = flag(invert_obj, "invert");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::vector<index_t> feature{arrays.k()};
  const char* per_feature = "one value per feature of x";
  py::array mean = arrays.input(mean_obj, "mean", feature, per_feature);
  py::array variance = arrays.input(variance_obj, "variance", feature, per_feature);
  py::array y = arrays.output(out_obj, "out", {arrays.n(), arrays.k()});
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    normalization_forward<T>(mptr<T>(y), cptr<T>(arrays.x()), cptr<T>(mean), cptr<T>(variance),
                             arrays.n(), arrays.k(), invert, threads);
  });
  return y;
}

py::array normalization_backward_py(py::handle dy_obj, py::handle variance_obj,
                                    py::handle invert_obj, py::handle out_obj,
                                    py::handle threads_obj) {
  Arrays arrays(dy_obj, "dy");
  const bool invert = flag(invert_obj, "invert");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  py::array variance =
      arrays.input(variance_obj, "variance", {arrays.k()}, "one value per feature of dy");
  py::array dx = arrays.output(out_obj, "out", {arrays.n(), arrays.k()});
  for_dtype(arrays.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    normalization_backward<T>(mptr<T>(dx), cptr<T>(arrays.x()), cptr<T>(variance), arrays.n(),
                              arrays.k(), invert, threads);
  });
  return dx;
}

}  // namespace

void bind_normalization(py::module_& m) {
  const auto none = py::none();
  m.def("feature_moments", &feature_moments_py, py::arg("x"), py::kw_only(),
        py::arg("mean_out") = none, py::arg("variance_out") = none,
        py::arg("num_threads") = none,
        "(mean, variance): the mean and biased variance of each column of x (n, k), n >= 1.");
  m.def("batch_norm_forward", &batch_norm_forward_py, py::arg("x"), py::arg("gamma"),
        py::arg("beta"), py::arg("moving_mean") = none, py::arg("moving_variance") = none,
        py::kw_only(), py::arg("training"), py::arg("epsilon") = 1e-3, py::arg("out") = none,
        py::arg("mean_out") = none, py::arg("variance_out") = none,
        py::arg("num_threads") = none,
        "y = (x - mean) / sqrt(variance + epsilon) * gamma + beta per feature. training=True: "
        "the batch's mean and biased variance, returns (y, mean, variance); training=False: "
        "the moving statistics, returns y.");
  m.def("batch_norm_backward", &batch_norm_backward_py, py::arg("dy"), py::arg("x"),
        py::arg("gamma"), py::arg("mean"), py::arg("variance"), py::kw_only(),
        py::arg("training"), py::arg("epsilon") = 1e-3, py::arg("need_dx") = true,
        py::arg("need_dgamma") = true, py::arg("need_dbeta") = true, py::arg("dx_out") = none,
        py::arg("dgamma_out") = none, py::arg("dbeta_out") = none,
        py::arg("num_threads") = none,
        "(dx, dgamma, dbeta) of batch_norm_forward, from the statistics it normalized with; "
        "an output not needed is None.");
  m.def("batch_norm_update_moving", &batch_norm_update_moving_py, py::arg("moving_mean"),
        py::arg("moving_variance"), py::arg("mean"), py::arg("variance"), py::kw_only(),
        py::arg("momentum") = 0.99,
        "moving = moving * momentum + batch * (1 - momentum), in place, for the mean and the "
        "variance (Keras's rule).");
  m.def("layer_norm_forward", &layer_norm_forward_py, py::arg("x"), py::arg("gamma"),
        py::arg("beta"), py::kw_only(), py::arg("epsilon") = 1e-3, py::arg("out") = none,
        py::arg("mean_out") = none, py::arg("inv_std_out") = none,
        py::arg("num_threads") = none,
        "(y, mean, inv_std): each row normalized over its features, then * gamma + beta; mean "
        "and inv_std (n,) are what layer_norm_backward needs.");
  m.def("layer_norm_backward", &layer_norm_backward_py, py::arg("dy"), py::arg("x"),
        py::arg("gamma"), py::arg("mean"), py::arg("inv_std"), py::kw_only(),
        py::arg("need_dx") = true, py::arg("need_dgamma") = true, py::arg("need_dbeta") = true,
        py::arg("dx_out") = none, py::arg("dgamma_out") = none, py::arg("dbeta_out") = none,
        py::arg("num_threads") = none,
        "(dx, dgamma, dbeta) of layer_norm_forward; an output not needed is None.");
  m.def("normalization_forward", &normalization_forward_py, py::arg("x"), py::arg("mean"),
        py::arg("variance"), py::kw_only(), py::arg("invert") = false, py::arg("out") = none,
        py::arg("num_threads") = none,
        "Keras's Normalization: (x - mean) / max(sqrt(variance), 1e-7) per feature (invert: "
        "mean + x * max(sqrt(variance), 1e-7)).");
  m.def("normalization_backward", &normalization_backward_py, py::arg("dy"),
        py::arg("variance"), py::kw_only(), py::arg("invert") = false, py::arg("out") = none,
        py::arg("num_threads") = none,
        "dx of normalization_forward: dy / max(sqrt(variance), 1e-7) (invert: times).");
}

}  // namespace densekit::bind
