// Bindings of dense_forward / dense_backward. x may have leading batch axes, as torch's
// F.linear and Keras's Dense allow: (..., k) @ (k, m) -> (..., m).
#include "dense.hpp"

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

struct DenseShapes {
  index_t n = 0;  // rows: product of x's leading axes
  index_t k = 0;  // input features
  index_t m = 0;  // units
  std::vector<index_t> out_shape;  // x.shape[:-1] + (m,)
  std::vector<index_t> x_shape;
};

DenseShapes dense_shapes(const py::array& x, const py::array& w) {
  if (x.ndim() < 1) value_fail("x", "expected an array of shape (..., k), got a 0-d array");
  require_ndim(w, "w", 2);
  DenseShapes s;
  s.x_shape.assign(x.shape(), x.shape() + x.ndim());
  s.k = static_cast<index_t>(x.shape(x.ndim() - 1));
  if (static_cast<index_t>(w.shape(0)) != s.k)
    value_fail("w", "expected shape (" + std::to_string(s.k) +
                        ", units) to match x's last axis, got " + shape_string(w));
  s.m = static_cast<index_t>(w.shape(1));
  s.n = 1;
  for (py::ssize_t d = 0; d + 1 < x.ndim(); ++d) s.n *= static_cast<index_t>(x.shape(d));
  s.out_shape.assign(x.shape(), x.shape() + x.ndim() - 1);
  s.out_shape.push_back(s.m);
  return s;
}

// A weight matrix packed once for dense_forward (densekit's pack_weights): a read-only snapshot
// of w and its packed copy, so the two cannot diverge whatever happens to the caller's w.
class PackedWeights {
 public:
  PackedWeights(py::handle w_obj, py::handle threads_obj) {
    py::array w = float_array(w_obj, "w", &dtype_);
    require_ndim(w, "w", 2);
    const int threads = resolve_num_threads(thread_count(threads_obj));
    const index_t k = static_cast<index_t>(w.shape(0));
    const index_t m = static_cast<index_t>(w.shape(1));
    weights_ = new_array(dtype_, {k, m});
    std::memcpy(weights_.mutable_data(), w.data(), static_cast<size_t>(w.nbytes()));
    weights_.attr("setflags")(py::arg("write") = false);
    for_dtype(dtype_, [&](auto tag) {
      using T = decltype(tag);
      const T* wp = cptr<T>(weights_);
      auto packed = std::make_shared<gemm::PackedB<T>>();
      {
        const GilRelease nogil;
        *packed = pack_weights<T>(wp, k, m, threads);
      }
      packed_ = packed;
      packed_bytes_ = packed->data.size() * sizeof(T);
    });
  }
  const py::array& weights() const { return weights_; }
  template <typename T>
  const gemm::PackedB<T>* packed() const {
    return static_cast<const gemm::PackedB<T>*>(packed_.get());
  }
  py::tuple shape() const { return py::make_tuple(weights_.shape(0), weights_.shape(1)); }
  size_t packed_bytes() const { return packed_bytes_; }
  std::string repr() const {
    return "PackedWeights(shape=(" + std::to_string(weights_.shape(0)) + ", " +
           std::to_string(weights_.shape(1)) + "), dtype=" + dtype_name(dtype_) + ")";
  }

 private:
  py::array weights_;
  DType dtype_ = DType::float32;
  std::shared_ptr<const void> packed_;
  size_t packed_bytes_ = 0;
};

py::array dense_forward_py(py::handle x_obj, py::handle w_obj, py::handle b_obj,
                           py::handle activation, py::handle out_obj, py::handle preact_obj,
                           py::handle alpha, py::handle threads_obj) {
  DType dtype;
  py::array x = float_array(x_obj, "x", &dtype);
  const PackedWeights* packed = py::isinstance<PackedWeights>(w_obj)
                                    ? &w_obj.cast<const PackedWeights&>()
                                    : nullptr;
  py::array w = float_array_like(packed != nullptr ? py::handle(packed->weights()) : w_obj, "w",
                                 dtype, "x");
  const DenseShapes s = dense_shapes(x, w);
  py::array b;
  const bool has_b = !b_obj.is_none();
  if (has_b) {
    b = float_array_like(b_obj, "b", dtype, "x");
    require_shape(b, "b", {s.m}, "w.shape[1]");
  }
  const Activation act = parse_activation(activation, alpha);
  const int threads = resolve_num_threads(thread_count(threads_obj));

  py::array out, preact;
  const bool has_out = out_array(out_obj, "out", dtype, s.out_shape, &out);
  const bool has_preact = out_array(preact_obj, "preact_out", dtype, s.out_shape, &preact);
  if (has_out)
    require_no_overlap(out, "out", {{&x, "x"}, {&w, "w"}, {has_b ? &b : nullptr, "b"},
                                    {has_preact ? &preact : nullptr, "preact_out"}});
  else
    out = new_array(dtype, s.out_shape);
  if (has_preact)
    require_no_overlap(preact, "preact_out", {{&x, "x"}, {&w, "w"}, {has_b ? &b : nullptr, "b"}});

  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    const T* bp = has_b ? cptr<T>(b) : nullptr;
    T* yp = mptr<T>(out);
    T* zp = has_preact ? mptr<T>(preact) : nullptr;
    const gemm::PackedB<T>* pw = packed != nullptr ? packed->packed<T>() : nullptr;
    const GilRelease nogil;
    dense_forward<T>(yp, zp, xp, wp, bp, s.n, s.k, s.m, act, threads, pw);
  };
  for_dtype(dtype, run);
  return out;
}

py::tuple dense_backward_py(py::handle dy_obj, py::handle x_obj, py::handle w_obj,
                            py::handle y_obj, py::handle preact_obj, py::handle activation,
                            bool need_dx, bool need_db, bool need_dw, py::handle dx_obj,
                            py::handle dw_obj,
                            py::handle db_obj, bool accumulate, py::handle alpha,
                            py::handle threads_obj) {
  DType dtype;
  py::array dy = float_array(dy_obj, "dy", &dtype);
  py::array x = float_array_like(x_obj, "x", dtype, "dy");
  py::array w = float_array_like(w_obj, "w", dtype, "dy");
  const DenseShapes s = dense_shapes(x, w);
  require_shape(dy, "dy", s.out_shape, "x.shape[:-1] + (w.shape[1],)");
  const Activation act = parse_activation(activation, alpha);
  const int threads = resolve_num_threads(thread_count(threads_obj));

  py::array y, preact;
  const bool has_y = !y_obj.is_none();
  const bool has_preact = !preact_obj.is_none();
  if (has_y) {
    y = float_array_like(y_obj, "y", dtype, "dy");
    require_shape(y, "y", s.out_shape, "the shape of dy");
  }
  if (has_preact) {
    preact = float_array_like(preact_obj, "preact", dtype, "dy");
    require_shape(preact, "preact", s.out_shape, "the shape of dy");
  }
  const bool use_y = has_y && derivative_from_output(act);
  if (!derivative_is_one(act) && !use_y && !has_preact) {
    if (derivative_from_output(act))
      value_fail("y", std::string("activation '") + activation_name(act.kind) +
                          "' needs the forward output y (or preact) for its derivative; "
                          "neither was given");
    value_fail("preact", std::string("activation '") + activation_name(act.kind) +
                             "' needs the pre-activation preact = x @ w + b for its derivative "
                             "(pass preact_out= to dense_forward); it was not given");
  }

  py::array dx, dw, db;
  const bool has_dx = need_dx && out_array(dx_obj, "dx_out", dtype, s.x_shape, &dx);
  const bool has_dw = need_dw && out_array(dw_obj, "dw_out", dtype, {s.k, s.m}, &dw);
  const bool has_db = need_db && out_array(db_obj, "db_out", dtype, {s.m}, &db);
  if (!need_dx && !dx_obj.is_none()) value_fail("dx_out", "given, but need_dx is False");
  if (!need_db && !db_obj.is_none()) value_fail("db_out", "given, but need_db is False");
  if (!need_dw && !dw_obj.is_none()) value_fail("dw_out", "given, but need_dw is False");
  if (accumulate && need_dw && !has_dw)
    value_fail("dw_out", "accumulate=True adds into dw_out, which was not given");
  if (accumulate && need_db && !has_db)
    value_fail("db_out", "accumulate=True adds into db_out, which was not given");
  const Named inputs[] = {{&dy, "dy"}, {&x, "x"}, {&w, "w"}};
  const py::array* y_ptr = has_y ? &y : nullptr;
  const py::array* z_ptr = has_preact ? &preact : nullptr;
  if (has_dx)
    require_no_overlap(dx, "dx_out", {inputs[0], inputs[1], inputs[2], {y_ptr, "y"},
                                      {z_ptr, "preact"}, {has_dw ? &dw : nullptr, "dw_out"},
                                      {has_db ? &db : nullptr, "db_out"}});
  if (has_dw)
    require_no_overlap(dw, "dw_out", {inputs[0], inputs[1], inputs[2], {y_ptr, "y"},
                                      {z_ptr, "preact"}, {has_db ? &db : nullptr, "db_out"}});
  if (has_db)
    require_no_overlap(db, "db_out",
                       {inputs[0], inputs[1], inputs[2], {y_ptr, "y"}, {z_ptr, "preact"}});
  if (need_dx && !has_dx) dx = new_array(dtype, s.x_shape);
  if (need_dw && !has_dw) dw = new_array(dtype, {s.k, s.m});
  if (need_db && !has_db) db = new_array(dtype, {s.m});

  auto run = [&](auto tag) {
    using T = decltype(tag);
    T* dxp = need_dx ? mptr<T>(dx) : nullptr;
    T* dwp = need_dw ? mptr<T>(dw) : nullptr;
    T* dbp = need_db ? mptr<T>(db) : nullptr;
    const T* dyp = cptr<T>(dy);
    const T* xp = cptr<T>(x);
    const T* wp = cptr<T>(w);
    const T* yp = use_y ? cptr<T>(y) : nullptr;
    const T* zp = has_preact ? cptr<T>(preact) : nullptr;
    const GilRelease nogil;
    dense_backward<T>(dxp, dwp, dbp, dyp, xp, wp, yp, zp, s.n, s.k, s.m, act, accumulate,
                      threads);
  };
  for_dtype(dtype, run);
  return py::make_tuple(need_dx ? py::object(dx) : py::object(py::none()),
                        need_dw ? py::object(dw) : py::object(py::none()),
                        need_db ? py::object(db) : py::object(py::none()));
}

// A model's inference as one call (see dense_chain_forward): the steps' arrays are checked
// once when the chain is made and held; each call checks again, cheaply, that none of them
// changed dtype, shape or layout since (NumPy lets a shape or dtype be reassigned in place).
class DenseChain {
 public:
  explicit DenseChain(py::handle steps_obj) {
    if (!py::isinstance<py::sequence>(steps_obj) || py::isinstance<py::str>(steps_obj))
      type_fail("steps", "expected a sequence of (w, b, activation[, alpha]) tuples, got " +
                             type_name(steps_obj));
    const auto steps = py::reinterpret_borrow<py::sequence>(steps_obj);
    if (steps.size() == 0) value_fail("steps", "expected at least one step, got none");
    index_t width = -1;  // input width of the next step (-1: set by the first weight)
    for (size_t i = 0; i < steps.size(); ++i) {
      const std::string name = step_name(i);
      py::handle item = steps[i];
      if (!py::isinstance<py::tuple>(item) || py::len(item) < 3 || py::len(item) > 4)
        type_fail(name.c_str(), "expected a tuple (w, b, activation[, alpha]), got " +
                                    (py::isinstance<py::tuple>(item)
                                         ? "a tuple of " + std::to_string(py::len(item))
                                         : type_name(item)));
      const auto step = py::reinterpret_borrow<py::tuple>(item);
      Held held;
      held.act = parse_activation(step[2], step.size() == 4 ? step[3] : py::handle(py::none()),
                                  (name + " activation").c_str());
      index_t low_k = 0, low_m = 0;
      const lowp::PackedInt8* int8 = quantized_weights_of(step[0], &low_k, &low_m);
      const bool bf16 = int8 == nullptr && is_bf16_weights(step[0], &low_k, &low_m);
      if (step[0].is_none()) {
        if (!step[1].is_none())
          value_fail(name.c_str(), "a step without w (an activation alone) takes no b");
        held.k = held.m = width;
      } else {
        const std::string w_name = name + " w";
        const char* b_like = "w";  // what b's dtype is checked against
        if (int8 != nullptr || bf16) {
          // an int8 or bf16 layer: float32 only (x is quantized or rounded from float32 rows)
          b_like = bf16 ? "Bf16Weights" : "QuantizedWeights";
          if (has_dtype_ && dtype_ != DType::float32)
            type_fail(w_name.c_str(), std::string(b_like) + " need a float32 chain, got "
                                                            "float64 weights before them");
          dtype_ = DType::float32;
          held.int8 = int8;
          held.bf16 = bf16;
          has_bf16_ = has_bf16_ || bf16;
          held.low_owner = py::reinterpret_borrow<py::object>(step[0]);
          held.k = low_k;
          held.m = low_m;
        } else {
          held.has_w = true;
          held.w = has_dtype_ ? float_array_like(step[0], w_name.c_str(), dtype_, "the first w")
                              : float_array(step[0], w_name.c_str(), &dtype_);
          require_ndim(held.w, w_name.c_str(), 2);
          held.k = held.w.shape(0);
          held.m = held.w.shape(1);
        }
        has_dtype_ = true;
        if (width >= 0 && held.k != width)
          value_fail(w_name.c_str(), "expected " + std::to_string(width) +
                                         " rows (the previous step's width), got shape (" +
                                         std::to_string(held.k) + ", " +
                                         std::to_string(held.m) + ")");
        if (width < 0) {
          for (Held& earlier : held_) earlier.k = earlier.m = held.k;
          input_width_ = held.k;
        }
        width = held.m;
        if (!step[1].is_none()) {
          const std::string b_name = name + " b";
          held.b = float_array_like(step[1], b_name.c_str(), dtype_, b_like);
          require_shape(held.b, b_name.c_str(), {held.m}, "w.shape[1]");
          held.has_b = true;
        }
      }
      held_.push_back(std::move(held));
    }
    output_width_ = width;
  }

  // Input and output widths; -1 for a chain of activations alone (any width).
  index_t input_width() const { return input_width_; }
  index_t output_width() const { return output_width_; }
  size_t size() const { return held_.size(); }

  py::array call(py::handle x_obj, py::handle out_obj, py::handle threads_obj) {
    DType dtype = dtype_;
    py::array x = has_dtype_ ? float_array_like(x_obj, "x", dtype, "the chain's weights")
                             : float_array(x_obj, "x", &dtype);
    if (x.ndim() < 1) value_fail("x", "expected an array of shape (..., k), got a 0-d array");
    const index_t k = x.shape(x.ndim() - 1);
    if (input_width_ >= 0 && k != input_width_)
      value_fail("x", "expected shape (..., " + std::to_string(input_width_) +
                          ") for the chain's first weight, got " + shape_string(x));
    std::vector<index_t> out_shape(x.shape(), x.shape() + x.ndim() - 1);
    out_shape.push_back(output_width_ >= 0 ? output_width_ : k);
    index_t n = 1;
    for (py::ssize_t d = 0; d + 1 < x.ndim(); ++d) n *= x.shape(d);
    const int threads = resolve_num_threads(thread_count(threads_obj));
    for (size_t i = 0; i < held_.size(); ++i) recheck(i, dtype);
    py::array out;
    if (out_array(out_obj, "out", dtype, out_shape, &out)) {
      if (memory_overlaps(out, x)) value_fail("out", "must not share memory with x");
      for (size_t i = 0; i < held_.size(); ++i) {
        const Held& held = held_[i];
        if ((held.has_w && memory_overlaps(out, held.w)) ||
            (held.has_b && memory_overlaps(out, held.b)))
          value_fail("out", "must not share memory with the weights of " + step_name(i));
      }
    } else {
      out = new_array(dtype, out_shape);
    }
    // the bf16 steps' packed weights as they are now, held through the call (no allocation
    // for a chain without bf16 steps)
    std::vector<std::shared_ptr<const lowp::Bf16DenseWeights>> bf16_now;
    if (has_bf16_) {
      bf16_now.resize(held_.size());
      for (size_t i = 0; i < held_.size(); ++i)
        if (held_[i].bf16) bf16_now[i] = bf16_weights_now(held_[i].low_owner);
    }
    for_dtype(dtype, [&](auto tag) {
      using T = decltype(tag);
      DenseStep<T> local[8];
      std::vector<DenseStep<T>> heap;
      DenseStep<T>* steps = local;
      if (held_.size() > 8) {
        heap.resize(held_.size());
        steps = heap.data();
      }
      for (size_t i = 0; i < held_.size(); ++i) {
        const Held& held = held_[i];
        steps[i].w = held.has_w ? cptr<T>(held.w) : nullptr;
        steps[i].int8 = held.int8;
        steps[i].bf16 = has_bf16_ ? bf16_now[i].get() : nullptr;
        steps[i].b = held.has_b ? cptr<T>(held.b) : nullptr;
        steps[i].k = held.k >= 0 ? held.k : k;
        steps[i].m = held.m >= 0 ? held.m : k;
        steps[i].act = held.act;
      }
      const T* xp = cptr<T>(x);
      T* yp = mptr<T>(out);
      const GilRelease nogil;
      dense_chain_forward<T>(yp, xp, n, steps, static_cast<int>(held_.size()), threads);
    });
    return out;
  }

 private:
  struct Held {
    py::array w;
    py::array b;
    py::object low_owner;                    // the QuantizedWeights / Bf16Weights of the step
    const lowp::PackedInt8* int8 = nullptr;  // an int8 step's packed weights (low_owner keeps them)
    bool bf16 = false;                       // a bf16 step (its packed weights taken per call)
    bool has_w = false;  // false: an int8 or bf16 step or an activation alone
    bool has_b = false;
    index_t k = -1, m = -1;
    Activation act;
  };

  static std::string step_name(size_t i) { return "steps[" + std::to_string(i) + "]"; }

  static bool unchanged(const py::array& a, int dtype_num, std::initializer_list<index_t> shape) {
    if (a.dtype().num() != dtype_num || !(a.flags() & py::array::c_style) ||
        a.ndim() != static_cast<py::ssize_t>(shape.size()))
      return false;
    py::ssize_t d = 0;
    for (index_t extent : shape)
      if (a.shape(d++) != extent) return false;
    return true;
  }

  // A cheap test of the held arrays on every call; a change is reported by the boundary
  // checks themselves, naming the step's w or b.
  void recheck(size_t i, DType dtype) const {
    const Held& held = held_[i];
    const int num = dtype == DType::float32 ? py::dtype::of<float>().num()
                                            : py::dtype::of<double>().num();
    if ((!held.has_w || unchanged(held.w, num, {held.k, held.m})) &&
        (!held.has_b || unchanged(held.b, num, {held.m})))
      return;
    if (held.has_w) {
      const std::string w_name = step_name(i) + " w (changed since the chain was made)";
      float_array_like(held.w, w_name.c_str(), dtype, "the chain's weights");
      require_shape(held.w, w_name.c_str(), {held.k, held.m});
    }
    if (held.has_b) {
      const std::string b_name = step_name(i) + " b (changed since the chain was made)";
      float_array_like(held.b, b_name.c_str(), dtype, "the chain's weights");
      require_shape(held.b, b_name.c_str(), {held.m});
    }
  }

  std::vector<Held> held_;
  DType dtype_ = DType::float32;
  bool has_dtype_ = false;
  bool has_bf16_ = false;
  index_t input_width_ = -1;
  index_t output_width_ = -1;
};

}  // namespace

void bind_dense(py::module_& m) {
  py::class_<DenseChain>(m, "DenseChain",
                         "A model's inference as one kernel call: steps (w, b, activation"
                         "[, alpha]) applied in order, w None for an activation alone, or a "
                         "QuantizedWeights or Bf16Weights for an int8 or bf16 layer (float32 "
                         "chains).")
      .def(py::init<py::handle>(), py::arg("steps"))
      .def("__call__", &DenseChain::call, py::arg("x"), py::kw_only(),
           py::arg("out") = py::none(), py::arg("num_threads") = py::none(),
           "y = the steps applied in order to x (..., k); one GIL release for all of them.")
      .def("__len__", &DenseChain::size)
      .def_property_readonly("input_width", &DenseChain::input_width)
      .def_property_readonly("output_width", &DenseChain::output_width);
  py::class_<PackedWeights>(m, "PackedWeights",
                            "A weight matrix packed once for dense_forward: a read-only copy "
                            "of w and its packed form (see pack_weights).")
      .def_property_readonly("shape", &PackedWeights::shape)
      .def_property_readonly("dtype", [](const PackedWeights& p) { return p.weights().dtype(); })
      .def_property_readonly("weights", &PackedWeights::weights,
                             "The read-only copy of w the packed form was made from.")
      .def_property_readonly("packed_nbytes", &PackedWeights::packed_bytes)
      .def("__repr__", &PackedWeights::repr);
  m.def(
      "pack_weights",
      [](py::handle w, py::handle threads) { return PackedWeights(w, threads); }, py::arg("w"),
      py::kw_only(), py::arg("num_threads") = py::none(),
      "w (k, m) packed once for dense_forward: pass the result as its w. Products that pay for "
      "it (a few hundred rows against up to 16 MiB of weights) read the packed form instead of "
      "packing w on every call; the results have the same bits as with w itself. A snapshot: "
      "pack again after w changes.");
  m.def("dense_forward", &dense_forward_py, py::arg("x"), py::arg("w"),
        py::arg("b") = py::none(), py::arg("activation") = "linear", py::kw_only(),
        py::arg("out") = py::none(), py::arg("preact_out") = py::none(),
        py::arg("alpha") = py::none(), py::arg("num_threads") = py::none(),
        "y = activation(x @ w + b), bias and activation applied in the product's output pass.");
  m.def("dense_backward", &dense_backward_py, py::arg("dy"), py::arg("x"), py::arg("w"),
        py::arg("y") = py::none(), py::arg("preact") = py::none(),
        py::arg("activation") = "linear", py::kw_only(), py::arg("need_dx") = true,
        py::arg("need_db") = true, py::arg("need_dw") = true, py::arg("dx_out") = py::none(),
        py::arg("dw_out") = py::none(), py::arg("db_out") = py::none(),
        py::arg("accumulate") = false, py::arg("alpha") = py::none(),
        py::arg("num_threads") = py::none(),
        "(dx, dw, db) of y = activation(x @ w + b) given dy; need_dx / need_dw / need_db "
        "False skip that gradient (None in its place): a frozen layer's backward computes "
        "dx only.");
}

}  // namespace densekit::bind
