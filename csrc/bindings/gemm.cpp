// Test and benchmark hooks of the matrix-product engine: one product with a chosen ISA, so
// tests can check every ISA the CPU runs against a reference in one process. Not public API.
#include <algorithm>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "gemm/gemm.hpp"
#include "losses.hpp"
#include "lowp/bf16_gemm.hpp"
#include "lowp/int8_gemm.hpp"
#include "parallel.hpp"
#include "vecmath/vecmath.hpp"

namespace densekit::bind {
namespace {

// The `isa` argument of the hooks: a name, of an ISA this CPU and build run.
gemm::Isa usable_isa(const std::string& isa_text) {
  gemm::Isa isa;
  if (!gemm::isa_from_name(isa_text, &isa))
    value_fail("isa", "expected 'avx512', 'avx2' or 'portable', got '" + isa_text + "'");
  if (!gemm::isa_supported(isa))
    value_fail("isa", "'" + isa_text + "' is not supported by this CPU/build");
  return isa;
}

// c (m, n) [+]= op(a) @ op(b) with the epilogue; op(a) = a.T when trans_a (likewise b). With
// isa_text "reference": gemm_reference, the triple loop (one thread).
void gemm_isa_test(const std::string& isa_text, py::handle a_obj, py::handle b_obj,
                   py::handle c_obj, bool trans_a, bool trans_b, py::handle bias_obj,
                   py::handle preact_obj, py::handle activation, py::handle alpha,
                   bool accumulate, py::handle threads_obj) {
  const bool reference = isa_text == "reference";
  const gemm::Isa isa = reference ? gemm::Isa::portable : usable_isa(isa_text);
  DType dtype;
  py::array a = float_array(a_obj, "a", &dtype);
  py::array b = float_array_like(b_obj, "b", dtype, "a");
  require_ndim(a, "a", 2);
  require_ndim(b, "b", 2);
  const index_t m = a.shape(trans_a ? 1 : 0);
  const index_t k = a.shape(trans_a ? 0 : 1);
  const index_t n = b.shape(trans_b ? 0 : 1);
  if (b.shape(trans_b ? 1 : 0) != k) value_fail("b", "inner dimensions do not match a");
  py::array c;
  if (!out_array(c_obj, "c", dtype, {m, n}, &c)) value_fail("c", "expected an array, got None");
  py::array bias, preact;
  const bool has_bias = !bias_obj.is_none();
  if (has_bias) {
    bias = float_array_like(bias_obj, "bias", dtype, "a");
    require_shape(bias, "bias", {n});
  }
  const bool has_preact = out_array(preact_obj, "preact", dtype, {m, n}, &preact);
  const Activation act = parse_activation(activation, alpha);
  if (reference && is_row_activation(act.kind))
    value_fail("activation", std::string(activation_name(act.kind)) +
                                 " is a row operation, not an elementwise epilogue");
  const int threads = resolve_num_threads(thread_count(threads_obj));
  require_no_overlap(c, "c", {{&a, "a"}, {&b, "b"}, {has_bias ? &bias : nullptr, "bias"},
                              {has_preact ? &preact : nullptr, "preact"}});

  auto run = [&](auto tag) {
    using T = decltype(tag);
    gemm::Epilogue<T> ep;
    ep.bias = has_bias ? cptr<T>(bias) : nullptr;
    ep.preact = has_preact ? mptr<T>(preact) : nullptr;
    ep.ld_preact = n;
    ep.activation = act;
    ep.accumulate = accumulate;
    const gemm::Operand<T> op_a{cptr<T>(a), static_cast<index_t>(a.shape(1)), trans_a};
    const gemm::Operand<T> op_b{cptr<T>(b), static_cast<index_t>(b.shape(1)), trans_b};
    T* cp = mptr<T>(c);
    const GilRelease nogil;
    if (reference)
      gemm::gemm_reference<T>(m, n, k, op_a, op_b, cp, n, ep);
    else
      gemm::gemm_with_isa<T>(isa, m, n, k, op_a, op_b, cp, n, ep, threads);
  };
  for_dtype(dtype, run);
}

// A chosen ISA's vector math over z: out = f(z) (softmax, log_softmax: over the last axis), or
// out = dy * f'(z) when dy is given.
// Returns False (out untouched) where that ISA has none for this dtype and activation.
bool vector_math_isa_test(const std::string& isa_text, py::handle out_obj, py::handle z_obj,
                          py::handle activation, py::handle alpha, py::handle dy_obj) {
  const gemm::Isa isa = usable_isa(isa_text);
  DType dtype;
  py::array z = float_array(z_obj, "z", &dtype);
  const std::vector<index_t> shape(z.shape(), z.shape() + z.ndim());
  py::array dy;
  const bool has_dy = !dy_obj.is_none();
  if (has_dy) {
    dy = float_array_like(dy_obj, "dy", dtype, "z");
    require_shape(dy, "dy", shape);
  }
  py::array out;
  if (!out_array(out_obj, "out", dtype, shape, &out))
    value_fail("out", "expected an array, got None");
  require_no_overlap(out, "out", {{&z, "z"}, {has_dy ? &dy : nullptr, "dy"}});
  const Activation act = parse_activation(activation, alpha);
  bool done = false;
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const index_t size = static_cast<index_t>(z.size());
    const GilRelease nogil;
    if (is_row_activation(act.kind)) {  // over the last axis
      const index_t cols = z.ndim() == 0 ? 1 : static_cast<index_t>(z.shape(z.ndim() - 1));
      if (cols == 0) return;
      if (has_dy) {  // the backward, z being the output
        done = act.kind == ActivationKind::softmax
                   ? vecmath::vector_softmax_backward_with_isa<T>(
                         isa, mptr<T>(out), cptr<T>(dy), cptr<T>(z), size / cols, cols, cols)
                   : vecmath::vector_log_softmax_backward_with_isa<T>(
                         isa, mptr<T>(out), cptr<T>(dy), cptr<T>(z), size / cols, cols, cols);
        return;
      }
      done = act.kind == ActivationKind::softmax
                 ? vecmath::vector_softmax_with_isa<T>(isa, mptr<T>(out), cptr<T>(z),
                                                       size / cols, cols, cols)
                 : vecmath::vector_log_softmax_with_isa<T>(isa, mptr<T>(out), cptr<T>(z),
                                                           size / cols, cols, cols);
      return;
    }
    done = vecmath::vector_activation_with_isa<T>(
        isa, mptr<T>(out), has_dy ? cptr<T>(dy) : nullptr, cptr<T>(z), size, act);
  });
  return done;
}

// dz = dy * (y > 0 ? 1 : slope) (y's bits) by a chosen ISA's vector math; None where it has
// none.
py::object positive_slopes_isa_test(const std::string& isa_text, py::handle dy_obj,
                                    py::handle y_obj, double slope) {
  const gemm::Isa isa = usable_isa(isa_text);
  DType dtype;
  py::array dy = float_array(dy_obj, "dy", &dtype);
  py::array y = float_array_like(y_obj, "y", dtype, "dy");
  const std::vector<index_t> shape(dy.shape(), dy.shape() + dy.ndim());
  require_shape(y, "y", shape);
  py::array dz = new_array(dtype, shape);
  bool done = false;
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    done = vecmath::vector_positive_slopes_with_isa<T>(isa, mptr<T>(dz), cptr<T>(dy), cptr<T>(y),
                                                       static_cast<index_t>(dy.size()),
                                                       static_cast<T>(slope));
  });
  return done ? py::object(dz) : py::object(py::none());
}

// The ReLU layer's function of z (cap, slope, threshold), or with dy its backward dy * f'(z),
// by a chosen ISA's vector math; None where it has none.
py::object relu_isa_test(const std::string& isa_text, py::handle z_obj, double max_value,
                         double negative_slope, double threshold, py::handle dy_obj) {
  const gemm::Isa isa = usable_isa(isa_text);
  DType dtype;
  py::array z = float_array(z_obj, "z", &dtype);
  const bool backward = !dy_obj.is_none();
  py::array dy;
  if (backward) {
    dy = float_array_like(dy_obj, "dy", dtype, "z");
    require_shape(dy, "dy", shape_of(z), "the shape of z");
  }
  py::array out = new_array(dtype, shape_of(z));
  bool done = false;
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const index_t count = static_cast<index_t>(z.size());
    const T cap = T(max_value), slope = T(negative_slope), at = T(threshold);
    done = backward ? vecmath::vector_relu_backward_with_isa<T>(isa, mptr<T>(out), cptr<T>(dy),
                                                                cptr<T>(z), count, cap, slope, at)
                    : vecmath::vector_relu_with_isa<T>(isa, mptr<T>(out), cptr<T>(z), count, cap,
                                                       slope, at);
  });
  return done ? py::object(out) : py::object(py::none());
}

// The column sums (float64, rows in order) of a 2-D array by a chosen ISA's vector math;
// None where it has none.
py::object column_sums_isa_test(const std::string& isa_text, py::handle rows_obj) {
  const gemm::Isa isa = usable_isa(isa_text);
  DType dtype;
  py::array rows = float_array(rows_obj, "rows", &dtype);
  require_ndim(rows, "rows", 2);
  const index_t n = rows.shape(0), cols = rows.shape(1);
  py::array_t<double> sums(cols);
  std::fill(sums.mutable_data(), sums.mutable_data() + cols, 0.0);
  bool done = false;
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    done = vecmath::vector_column_sums_with_isa<T>(isa, sums.mutable_data(), cptr<T>(rows), n,
                                                   cols, cols);
  });
  return done ? py::object(sums) : py::object(py::none());
}

// log(x) (log1p: log(1 + x)) elementwise as a chosen ISA's loss kernels compute it.
py::array loss_log_isa_test(const std::string& isa_text, py::handle x_obj, bool log1p) {
  const gemm::Isa isa = usable_isa(isa_text);
  DType dtype;
  py::array x = float_array(x_obj, "x", &dtype);
  py::array out = new_array(dtype, std::vector<index_t>(x.shape(), x.shape() + x.ndim()));
  for_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const GilRelease nogil;
    loss_log_with_isa<T>(isa, mptr<T>(out), cptr<T>(x), static_cast<index_t>(x.size()), log1p);
  });
  return out;
}

// Floating-point operations of `steps` rounds of register-only multiply-adds on the kernels
// in use for `dtype`, shared among num_threads threads; the benchmark times the call.
double fma_peak(const std::string& dtype, py::handle steps_obj, py::handle threads_obj) {
  if (dtype != "float32" && dtype != "float64" && dtype != "bfloat16" && dtype != "int8")
    value_fail("dtype",
               "expected 'float32', 'float64', 'bfloat16' or 'int8', got '" + dtype + "'");
  constexpr long long kMaxSteps = 1LL << 40;  // hours of work; steps * chunks stays exact
  if (!py::isinstance<py::int_>(steps_obj) || py::isinstance<py::bool_>(steps_obj))
    type_fail("steps", "expected an int in [1, 2**40], got " + type_name(steps_obj));
  const py::int_ steps_int = py::reinterpret_borrow<py::int_>(steps_obj);
  if (steps_int < py::int_(1) || steps_int > py::int_(kMaxSteps))
    value_fail("steps",
               "expected an int in [1, 2**40], got " + py::str(steps_obj).cast<std::string>());
  const long long steps = steps_int.cast<long long>();
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const GilRelease nogil;
  if (dtype == "bfloat16") return lowp::bf16_peak_probe(steps, threads);
  if (dtype == "int8") return lowp::int8_peak_probe(steps, threads);
  return dtype == "float32" ? gemm::fma_peak_probe<float>(steps, threads)
                            : gemm::fma_peak_probe<double>(steps, threads);
}

}  // namespace

void bind_gemm_testing(py::module_& m) {
  m.def("_fma_peak", &fma_peak, py::arg("dtype"), py::arg("steps"), py::kw_only(),
        py::arg("num_threads") = py::none(),
        "Benchmark hook: operations of `steps` rounds of register-only multiply-adds on the "
        "kernels in use for dtype ('float32', 'float64', or the bf16 / int8 products' "
        "'bfloat16', 'int8'); time the call for the peak rate.");
  m.def("_vector_math_isa_test", &vector_math_isa_test, py::arg("isa"), py::arg("out"),
        py::arg("z"), py::kw_only(), py::arg("activation"), py::arg("alpha") = py::none(),
        py::arg("dy") = py::none(),
        "Test hook: out = f(z), or dy * f'(z), by a given ISA's vector math (softmax and "
        "log_softmax: over the last axis, and their backward from their output z given dy); "
        "False where it has none.");
  m.def("_positive_slopes_isa_test", &positive_slopes_isa_test, py::arg("isa"), py::arg("dy"),
        py::arg("y"), py::arg("slope"),
        "Test hook: dy * (y > 0 ? 1 : slope), y > 0 on its bits, by a given ISA's vector math; "
        "None where it has none.");
  m.def("_relu_isa_test", &relu_isa_test, py::arg("isa"), py::arg("z"), py::arg("max_value"),
        py::arg("negative_slope"), py::arg("threshold"), py::kw_only(),
        py::arg("dy") = py::none(),
        "Test hook: the ReLU layer's function of z, or with dy its backward dy * f'(z), by a "
        "given ISA's vector math (max_value inf for no cap); None where it has none.");
  m.def("_column_sums_isa_test", &column_sums_isa_test, py::arg("isa"), py::arg("rows"),
        "Test hook: the float64 column sums of a 2-D array, rows in order, by a given ISA's "
        "vector math; None where it has none.");
  m.def("_loss_log_isa_test", &loss_log_isa_test, py::arg("isa"), py::arg("x"), py::kw_only(),
        py::arg("log1p") = false,
        "Test hook: log(x), or log(1 + x), elementwise as a given ISA's loss kernels compute "
        "it (vecmath's vector_log, the fma rounded twice).");
  m.def("_gemm_isa_test", &gemm_isa_test, py::arg("isa"), py::arg("a"), py::arg("b"),
        py::arg("c"), py::kw_only(), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("bias") = py::none(), py::arg("preact") = py::none(),
        py::arg("activation") = "linear", py::arg("alpha") = py::none(),
        py::arg("accumulate") = false, py::arg("num_threads") = py::none(),
        "Test hook: c (m, n) [+]= op(a) @ op(b) with bias/preact/activation on a given ISA, "
        "or isa='reference': the slow, obvious triple loop (gemm_reference).");
}

}  // namespace densekit::bind
