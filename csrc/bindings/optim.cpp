// Bindings of the optimizer steps and clip_by_global_norm. Every array is updated in place and
// never converted: param and each state array must be writeable, C-contiguous, of param's
// dtype and shape, and share memory with no other array of the call.
#include "optim.hpp"

#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

std::string number_string(double value) { return py::repr(py::float_(value)).cast<std::string>(); }

// A finite real number in [low, high] (or [low, high) when high_open), named in the error.
double hyper_in_range(py::handle obj, const char* name, double low, double high,
                      bool high_open = false) {
  const double value = real_number(obj, name);
  const bool ok = value >= low && (high_open ? value < high : value <= high);
  if (!ok) {
    std::string range = std::isinf(high) ? "a number >= " + number_string(low)
                                         : "a number in [" + number_string(low) + ", " +
                                               number_string(high) + (high_open ? ")" : "]");
    value_fail(name, "expected " + range + ", got " + number_string(value));
  }
  return value;
}

double non_negative(py::handle obj, const char* name) {
  return hyper_in_range(obj, name, 0.0, INFINITY);
}

// The 1-based step count: an integer (int or anything with __index__, not bool), >= 1.
std::int64_t step_count(py::handle obj) {
  if (py::isinstance<py::bool_>(obj) || PyIndex_Check(obj.ptr()) == 0)
    type_fail("step", "expected an int >= 1, got " + type_name(obj));
  const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(obj.ptr()));
  if (!value) throw py::error_already_set();
  int overflow = 0;
  const long long count = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow != 0 || count < 1)
    value_fail("step", "expected an int >= 1 (that fits in 64 bits), got " +
                           py::str(value).cast<std::string>());
  return count;
}

// "torch" or "keras": whose rule a step follows where the two differ.
Convention convention_arg(py::handle obj) {
  if (!py::isinstance<py::str>(obj))
    type_fail("convention", "expected 'torch' or 'keras', got " + type_name(obj));
  const std::string name = obj.cast<std::string>();
  if (name == "torch") return Convention::torch;
  if (name == "keras") return Convention::keras;
  value_fail("convention", "expected 'torch' or 'keras', got " + py::repr(obj).cast<std::string>());
}

// decoupled_weight_decay: None picks the convention's own form (torch: coupled, Keras:
// decoupled); Keras has no coupled form.
bool decoupled_arg(py::handle obj, Convention convention, double weight_decay) {
  if (obj.is_none()) return convention == Convention::keras;
  const bool decoupled = flag(obj, "decoupled_weight_decay");
  if (convention == Convention::keras && !decoupled && weight_decay != 0.0)
    value_fail("decoupled_weight_decay",
               "convention='keras' decays weights decoupled (Keras has no other form); pass "
               "True or None, got False");
  return decoupled;
}

// The arrays of one step call: param and grad first, then the state arrays one by one. No
// array the call writes may share memory with any other array of the call.
class StepArrays {
 public:
  StepArrays(py::handle param, py::handle grad) {
    param_ = float_array(param, "param", &dtype_);
    require_writeable(param_, "param");
    grad_ = float_array_like(grad, "grad", dtype_, "param");
    shape_.assign(param_.shape(), param_.shape() + param_.ndim());
    require_shape(grad_, "grad", shape_, "the shape of param");
    if (memory_overlaps(param_, grad_)) value_fail("param", "must not share memory with grad");
  }

  DType dtype() const { return dtype_; }
  index_t size() const { return static_cast<index_t>(param_.size()); }

  // A required state array.
  py::array state(py::handle obj, const char* name) {
    if (obj.is_none())
      type_fail(name, std::string("expected a numpy.ndarray of ") + dtype_name(dtype_) +
                          " shaped like param, got None");
    return add_state(obj, name);
  }

  // An optional state array: None gives an empty handle.
  py::array optional_state(py::handle obj, const char* name) {
    return obj.is_none() ? py::array() : add_state(obj, name);
  }

  // A state array that is required exactly when `needed` (e.g. velocity with momentum): a
  // missing one and an unused one are both errors naming the setting that decides.
  py::array state_if(py::handle obj, const char* name, bool needed, const std::string& needed_by,
                     const char* unused_because) {
    if (needed && obj.is_none())
      value_fail(name, needed_by + " needs a " + name +
                           " array shaped like param (zeros before the first step)");
    if (!needed && !obj.is_none())
      value_fail(name, std::string("given, but ") + unused_because +
                           " (it would never be updated)");
    return optional_state(obj, name);
  }

  template <typename T>
  T* param() {
    return mptr<T>(param_);
  }
  template <typename T>
  const T* grad() const {
    return cptr<T>(grad_);
  }

 private:
  py::array add_state(py::handle obj, const char* name) {
    py::array a = float_array_like(obj, name, dtype_, "param");
    require_shape(a, name, shape_, "the shape of param");
    require_writeable(a, name);
    if (memory_overlaps(a, param_)) value_fail(name, "must not share memory with param");
    if (memory_overlaps(a, grad_)) value_fail(name, "must not share memory with grad");
    for (const auto& [other, other_name] : states_)
      if (memory_overlaps(a, other))
        value_fail(name, std::string("must not share memory with ") + other_name);
    states_.emplace_back(a, name);
    return a;
  }

  DType dtype_ = DType::float64;
  py::array param_, grad_;
  std::vector<index_t> shape_;
  std::vector<std::pair<py::array, const char*>> states_;
};

// A typed pointer to an optional state array (null when it was not given).
template <typename T>
T* state_ptr(py::array& a, bool given) {
  return given ? mptr<T>(a) : nullptr;
}

void sgd_step_py(py::handle param_obj, py::handle grad_obj, py::handle lr, py::handle momentum,
                 py::handle velocity_obj, py::handle nesterov, py::handle weight_decay,
                 py::handle dampening, py::handle maximize, py::handle step,
                 py::handle convention, py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  SgdHyper hyper;
  hyper.convention = convention_arg(convention);
  hyper.lr = non_negative(lr, "lr");
  hyper.momentum = non_negative(momentum, "momentum");
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.dampening = real_number(dampening, "dampening");
  hyper.nesterov = flag(nesterov, "nesterov");
  hyper.maximize = flag(maximize, "maximize");
  hyper.first_step = !step.is_none() && step_count(step) == 1 &&
                     hyper.convention == Convention::torch;
  const int threads = resolve_num_threads(thread_count(threads_obj));
  if (hyper.convention == Convention::keras && hyper.dampening != 0.0)
    value_fail("dampening", "convention='keras' has no dampening (Keras's SGD), got " +
                                number_string(hyper.dampening));
  if (hyper.nesterov && (hyper.momentum == 0.0 || hyper.dampening != 0.0))
    value_fail("nesterov", "Nesterov momentum needs momentum > 0 and dampening == 0, got "
                           "momentum=" + number_string(hyper.momentum) +
                               ", dampening=" + number_string(hyper.dampening));
  const bool use_momentum = hyper.momentum != 0.0;
  py::array velocity =
      arrays.state_if(velocity_obj, "velocity", use_momentum,
                      "momentum=" + number_string(hyper.momentum), "momentum is 0");

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* buf = state_ptr<T>(velocity, use_momentum);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    sgd_step<T>(p, buf, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
}

void adam_step_py(py::handle param_obj, py::handle grad_obj, py::handle m_obj, py::handle v_obj,
                  py::handle step, py::handle lr, py::handle beta1, py::handle beta2,
                  py::handle eps, py::handle weight_decay, py::handle decoupled,
                  py::handle v_max_obj, py::handle maximize, py::handle convention,
                  py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  py::array m = arrays.state(m_obj, "m");
  py::array v = arrays.state(v_obj, "v");
  py::array v_max = arrays.optional_state(v_max_obj, "v_max");
  const bool amsgrad = !v_max_obj.is_none();
  AdamHyper hyper;
  hyper.convention = convention_arg(convention);
  hyper.step = step_count(step);
  hyper.lr = non_negative(lr, "lr");
  hyper.beta1 = hyper_in_range(beta1, "beta1", 0.0, 1.0, /*high_open=*/true);
  hyper.beta2 = hyper_in_range(beta2, "beta2", 0.0, 1.0, /*high_open=*/true);
  hyper.eps = non_negative(eps, "eps");
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.decoupled_weight_decay = decoupled_arg(decoupled, hyper.convention, hyper.weight_decay);
  hyper.maximize = flag(maximize, "maximize");
  const int threads = resolve_num_threads(thread_count(threads_obj));

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* mp = mptr<T>(m);
    T* vp = mptr<T>(v);
    T* vmaxp = state_ptr<T>(v_max, amsgrad);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    adam_step<T>(p, mp, vp, vmaxp, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
}

void rmsprop_step_py(py::handle param_obj, py::handle grad_obj, py::handle square_avg_obj,
                     py::handle lr, py::handle alpha, py::handle eps, py::handle weight_decay,
                     py::handle momentum, py::handle velocity_obj, py::handle centered,
                     py::handle grad_avg_obj, py::handle maximize, py::handle convention,
                     py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  py::array square_avg = arrays.state(square_avg_obj, "square_avg");
  RmspropHyper hyper;
  hyper.convention = convention_arg(convention);
  hyper.lr = non_negative(lr, "lr");
  hyper.alpha = hyper_in_range(alpha, "alpha", 0.0, 1.0);
  hyper.eps = non_negative(eps, "eps");
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.momentum = non_negative(momentum, "momentum");
  hyper.centered = flag(centered, "centered");
  hyper.maximize = flag(maximize, "maximize");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const bool use_momentum = hyper.momentum > 0.0;
  py::array velocity =
      arrays.state_if(velocity_obj, "velocity", use_momentum,
                      "momentum=" + number_string(hyper.momentum), "momentum is 0");
  py::array grad_avg = arrays.state_if(grad_avg_obj, "grad_avg", hyper.centered, "centered=True",
                                       "centered is False");

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* sq = mptr<T>(square_avg);
    T* mean = state_ptr<T>(grad_avg, hyper.centered);
    T* buf = state_ptr<T>(velocity, use_momentum);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    rmsprop_step<T>(p, sq, mean, buf, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
}

double nadam_step_py(py::handle param_obj, py::handle grad_obj, py::handle m_obj,
                     py::handle v_obj, py::handle step, py::handle lr, py::handle beta1,
                     py::handle beta2, py::handle eps, py::handle weight_decay,
                     py::handle decoupled, py::handle momentum_decay, py::handle mu_product,
                     py::handle maximize, py::handle convention, py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  py::array m = arrays.state(m_obj, "m");
  py::array v = arrays.state(v_obj, "v");
  NadamHyper hyper;
  hyper.convention = convention_arg(convention);
  hyper.step = step_count(step);
  hyper.lr = non_negative(lr, "lr");
  hyper.beta1 = hyper_in_range(beta1, "beta1", 0.0, 1.0, /*high_open=*/true);
  hyper.beta2 = hyper_in_range(beta2, "beta2", 0.0, 1.0, /*high_open=*/true);
  hyper.eps = non_negative(eps, "eps");
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.decoupled_weight_decay = decoupled_arg(decoupled, hyper.convention, hyper.weight_decay);
  hyper.momentum_decay =
      momentum_decay.is_none()
          ? (hyper.convention == Convention::keras ? 1.0 : 0.004)
          : non_negative(momentum_decay, "momentum_decay");
  hyper.mu_product =
      mu_product.is_none() ? std::nan("") : hyper_in_range(mu_product, "mu_product", 0.0, 1.0);
  hyper.maximize = flag(maximize, "maximize");
  const int threads = resolve_num_threads(thread_count(threads_obj));

  double product = 0.0;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* mp = mptr<T>(m);
    T* vp = mptr<T>(v);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    product = nadam_step<T>(p, mp, vp, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
  return product;
}

void adamax_step_py(py::handle param_obj, py::handle grad_obj, py::handle m_obj,
                    py::handle u_obj, py::handle step, py::handle lr, py::handle beta1,
                    py::handle beta2, py::handle eps, py::handle weight_decay,
                    py::handle maximize, py::handle convention, py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  py::array m = arrays.state(m_obj, "m");
  py::array u = arrays.state(u_obj, "u");
  AdamaxHyper hyper;
  hyper.convention = convention_arg(convention);
  hyper.step = step_count(step);
  hyper.lr = non_negative(lr, "lr");
  hyper.beta1 = hyper_in_range(beta1, "beta1", 0.0, 1.0, /*high_open=*/true);
  hyper.beta2 = hyper_in_range(beta2, "beta2", 0.0, 1.0, /*high_open=*/true);
  hyper.eps = non_negative(eps, "eps");
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.maximize = flag(maximize, "maximize");
  const int threads = resolve_num_threads(thread_count(threads_obj));

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* mp = mptr<T>(m);
    T* up = mptr<T>(u);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    adamax_step<T>(p, mp, up, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
}

void adagrad_step_py(py::handle param_obj, py::handle grad_obj, py::handle sum_obj,
                     py::handle lr, py::handle step, py::handle lr_decay, py::handle eps,
                     py::handle weight_decay, py::handle maximize, py::handle convention,
                     py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  py::array sum = arrays.state(sum_obj, "sum");
  AdagradHyper hyper;
  hyper.convention = convention_arg(convention);
  hyper.lr = non_negative(lr, "lr");
  hyper.lr_decay = non_negative(lr_decay, "lr_decay");
  hyper.eps = non_negative(eps, "eps");
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.maximize = flag(maximize, "maximize");
  if (hyper.convention == Convention::keras && hyper.lr_decay != 0.0)
    value_fail("lr_decay", "convention='keras' has no lr_decay (Keras's Adagrad), got " +
                               number_string(hyper.lr_decay));
  if (hyper.lr_decay != 0.0 && step.is_none())
    value_fail("step", "lr_decay=" + number_string(hyper.lr_decay) +
                           " needs the step count (the rate is lr / (1 + (step - 1) * lr_decay))");
  hyper.step = step.is_none() ? 1 : step_count(step);
  const int threads = resolve_num_threads(thread_count(threads_obj));

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* sp = mptr<T>(sum);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    adagrad_step<T>(p, sp, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
}

void lion_step_py(py::handle param_obj, py::handle grad_obj, py::handle m_obj, py::handle lr,
                  py::handle beta1, py::handle beta2, py::handle weight_decay,
                  py::handle maximize, py::handle threads_obj) {
  StepArrays arrays(param_obj, grad_obj);
  py::array m = arrays.state(m_obj, "m");
  LionHyper hyper;
  hyper.lr = non_negative(lr, "lr");
  hyper.beta1 = hyper_in_range(beta1, "beta1", 0.0, 1.0);
  hyper.beta2 = hyper_in_range(beta2, "beta2", 0.0, 1.0);
  hyper.weight_decay = non_negative(weight_decay, "weight_decay");
  hyper.maximize = flag(maximize, "maximize");
  const int threads = resolve_num_threads(thread_count(threads_obj));

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* p = arrays.param<T>();
    T* mp = mptr<T>(m);
    const T* g = arrays.grad<T>();
    const index_t n = arrays.size();
    const GilRelease nogil;
    lion_step<T>(p, mp, g, n, hyper, threads);
  };
  for_dtype(arrays.dtype(), run);
}

double clip_by_global_norm_py(py::handle grads_obj, py::handle max_norm_obj,
                              py::handle threads_obj) {
  if (!py::isinstance<py::list>(grads_obj) && !py::isinstance<py::tuple>(grads_obj))
    type_fail("grads", "expected a list or tuple of numpy.ndarray, got " + type_name(grads_obj));
  const double max_norm = real_number(max_norm_obj, "max_norm");
  if (!(max_norm > 0.0))
    value_fail("max_norm", "expected a finite number > 0, got " + number_string(max_norm));
  const int threads = resolve_num_threads(thread_count(threads_obj));

  // Hold references to the arrays: a list can be changed once the GIL is released.
  const py::sequence items = py::reinterpret_borrow<py::sequence>(grads_obj);
  const std::size_t count = items.size();
  std::vector<py::array> arrays;
  std::vector<GradientView> views(count);
  arrays.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    const std::string name = "grads[" + std::to_string(i) + "]";
    DType dtype;
    arrays.push_back(float_array(items[i], name.c_str(), &dtype));
    py::array& a = arrays.back();
    require_writeable(a, name.c_str());
    views[i].size = static_cast<index_t>(a.size());
    if (dtype == DType::float32) {
      views[i].float32 = mptr<float>(a);
    } else {
      views[i].float64 = mptr<double>(a);
    }
  }
  // Sorted by start address, any overlap shows between neighbours.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < count; ++i)
    if (arrays[i].nbytes() > 0) order.push_back(i);
  auto start = [&](std::size_t i) { return reinterpret_cast<std::uintptr_t>(arrays[i].data()); };
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return start(a) < start(b); });
  for (std::size_t k = 1; k < order.size(); ++k) {
    const std::size_t a = std::min(order[k - 1], order[k]);
    const std::size_t b = std::max(order[k - 1], order[k]);
    if (memory_overlaps(arrays[a], arrays[b])) {
      const std::string name = "grads[" + std::to_string(b) + "]";
      value_fail(name.c_str(), "must not share memory with grads[" + std::to_string(a) + "]");
    }
  }

  const GilRelease nogil;
  return clip_by_global_norm(views.data(), views.size(), max_norm, threads);
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("sgd_step", &sgd_step_py, py::arg("param"), py::arg("grad"), py::kw_only(),
        py::arg("lr"), py::arg("momentum") = 0.0, py::arg("velocity") = py::none(),
        py::arg("nesterov") = false, py::arg("weight_decay") = 0.0,
        py::arg("dampening") = 0.0, py::arg("maximize") = false, py::arg("step") = py::none(),
        py::arg("convention") = "torch", py::arg("num_threads") = py::none(),
        "One SGD step (torch.optim.SGD's or Keras's), in place on param (and velocity).\n\n"
        "convention='torch': ``g = grad`` (negated with maximize) ``+ weight_decay * param``;\n"
        "with momentum, ``velocity = momentum * velocity + (1 - dampening) * g`` and\n"
        "``g = g + momentum * velocity`` (nesterov) or ``g = velocity``; ``param -= lr * g``.\n"
        "torch starts velocity as a copy of the first g. Passing step (the 1-based count) does\n"
        "the same at step == 1, ignoring velocity's content; with step=None velocity must start\n"
        "at zeros, which gives torch's first step exactly when dampening == 0.\n"
        "convention='keras': ``param *= 1 - lr * weight_decay``;\n"
        "``velocity = momentum * velocity - lr * g``; ``param += velocity`` (nesterov:\n"
        "``param += momentum * velocity - lr * g``). velocity starts at zeros; no dampening;\n"
        "step is not needed.");
  m.def("adam_step", &adam_step_py, py::arg("param"), py::arg("grad"), py::arg("m"),
        py::arg("v"), py::kw_only(), py::arg("step"), py::arg("lr"), py::arg("beta1") = 0.9,
        py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0,
        py::arg("decoupled_weight_decay") = py::none(), py::arg("v_max") = py::none(),
        py::arg("maximize") = false, py::arg("convention") = "torch",
        py::arg("num_threads") = py::none(),
        "One Adam step (torch.optim.Adam/AdamW's or Keras's), in place on param, m, v (v_max).\n\n"
        "step is the 1-based count including this step (bias corrections 1 - beta**step).\n"
        "decoupled_weight_decay=True is AdamW (``param *= 1 - lr * weight_decay`` first; None:\n"
        "the convention's own form, torch coupled, Keras decoupled); v_max given is AMSGrad\n"
        "(v_max = max(v_max, v) normalises the step). m, v, v_max start at zeros.\n"
        "convention='torch':\n"
        "``param -= lr / (1 - beta1**t) * m / (sqrt(v / (1 - beta2**t)) + eps)``.\n"
        "convention='keras':\n"
        "``param -= lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)``.");
  m.def("rmsprop_step", &rmsprop_step_py, py::arg("param"), py::arg("grad"),
        py::arg("square_avg"), py::kw_only(), py::arg("lr"), py::arg("alpha") = 0.99,
        py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0,
        py::arg("velocity") = py::none(), py::arg("centered") = false,
        py::arg("grad_avg") = py::none(), py::arg("maximize") = false,
        py::arg("convention") = "torch", py::arg("num_threads") = py::none(),
        "One RMSprop step (torch.optim.RMSprop's or Keras's), in place on param and its state.\n\n"
        "centered=True needs grad_avg, momentum > 0 needs velocity; all state starts at zeros.\n"
        "convention='torch': ``step = g / (sqrt(square_avg - grad_avg**2) + eps)``;\n"
        "``velocity = momentum * velocity + step``; ``param -= lr * velocity`` (or\n"
        "``lr * step``). convention='keras': ``step = lr * g / sqrt(square_avg - grad_avg**2\n"
        "+ eps)``; ``velocity = momentum * velocity + step``; ``param -= velocity`` (or\n"
        "``step``); weight decay decoupled. grad_avg enters only when centered.");
  m.def("nadam_step", &nadam_step_py, py::arg("param"), py::arg("grad"), py::arg("m"),
        py::arg("v"), py::kw_only(), py::arg("step"), py::arg("lr"), py::arg("beta1") = 0.9,
        py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0,
        py::arg("decoupled_weight_decay") = py::none(), py::arg("momentum_decay") = py::none(),
        py::arg("mu_product") = py::none(), py::arg("maximize") = false,
        py::arg("convention") = "torch", py::arg("num_threads") = py::none(),
        "One NAdam step (torch.optim.NAdam's or Keras's Nadam), in place on param, m, v.\n\n"
        "``mu_t = beta1 * (1 - 0.5 * 0.96**(t * momentum_decay))``; momentum_decay=None is\n"
        "the convention's (torch 0.004, Keras 1). mu_product is ``mu_1 * ... * mu_(step-1)``,\n"
        "the value the previous call returned (None recomputes it from step, O(step));\n"
        "returns ``mu_1 * ... * mu_step``. Both conventions compute ``param -= lr * (mu_next *\n"
        "m / (1 - prod_next) + (1 - mu) * g / (1 - prod)) / (sqrt(v / (1 - beta2**t)) + eps)``,\n"
        "each in its library's operation order; torch keeps the product in float32, Keras in\n"
        "the parameters' dtype.");
  m.def("adamax_step", &adamax_step_py, py::arg("param"), py::arg("grad"), py::arg("m"),
        py::arg("u"), py::kw_only(), py::arg("step"), py::arg("lr"), py::arg("beta1") = 0.9,
        py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0,
        py::arg("maximize") = false, py::arg("convention") = "torch",
        py::arg("num_threads") = py::none(),
        "One Adamax step (torch.optim.Adamax's or Keras's), in place on param, m, u.\n\n"
        "convention='torch': ``u = max(beta2 * u, abs(g) + eps)``;\n"
        "``param -= lr / (1 - beta1**t) * m / u``. convention='keras':\n"
        "``u = max(beta2 * u, abs(g))``; ``param -= lr * m / ((u + eps) * (1 - beta1**t))``;\n"
        "weight decay decoupled.");
  m.def("adagrad_step", &adagrad_step_py, py::arg("param"), py::arg("grad"), py::arg("sum"),
        py::kw_only(), py::arg("lr"), py::arg("step") = py::none(), py::arg("lr_decay") = 0.0,
        py::arg("eps") = 1e-10, py::arg("weight_decay") = 0.0, py::arg("maximize") = false,
        py::arg("convention") = "torch", py::arg("num_threads") = py::none(),
        "One Adagrad step (torch.optim.Adagrad's or Keras's), in place on param and sum.\n\n"
        "``sum += g * g``; convention='torch':\n"
        "``param -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(sum) + eps)`` (step is needed\n"
        "only with lr_decay); convention='keras': ``param -= lr * g / sqrt(sum + eps)``, weight\n"
        "decay decoupled. sum starts at the initial accumulator value (torch 0, Keras 0.1).");
  m.def("lion_step", &lion_step_py, py::arg("param"), py::arg("grad"), py::arg("m"),
        py::kw_only(), py::arg("lr"), py::arg("beta1") = 0.9, py::arg("beta2") = 0.99,
        py::arg("weight_decay") = 0.0, py::arg("maximize") = false,
        py::arg("num_threads") = py::none(),
        "One Lion step (Keras's; torch has none), in place on param and m.\n\n"
        "``param *= 1 - lr * weight_decay``;\n"
        "``param -= lr * sign(beta1 * m + (1 - beta1) * g)``;\n"
        "``m = beta2 * m + (1 - beta2) * g``. sign(0) and sign(NaN) are 0, as torch.sign's.");
  m.def("clip_by_global_norm", &clip_by_global_norm_py, py::arg("grads"), py::arg("max_norm"),
        py::kw_only(), py::arg("num_threads") = py::none(),
        "Scale a list of gradient arrays in place so their global L2 norm is at most max_norm.\n\n"
        "Returns the norm before clipping, computed in double (bitwise the same for any\n"
        "num_threads). Above max_norm every array is multiplied by max_norm / norm\n"
        "(tf.clip_by_global_norm's rule); an inf or NaN norm leaves the arrays untouched.\n"
        "Arrays may mix float32 and float64 but must not share memory.");
  m.attr("OPTIMIZERS") =
      py::make_tuple("sgd", "adam", "rmsprop", "nadam", "adamax", "adagrad", "lion");
}

}  // namespace densekit::bind
