// Low-precision kernels: bfloat16 conversions and the bf16 matrix product. bf16 arrays are
// NumPy arrays of ml_dtypes.bfloat16 (the dtype JAX, TensorFlow and Keras use); nothing else
// of 16 bits (float16, uint16) is taken for one.
#include <pybind11/numpy.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "activations.hpp"
#include "bindings.hpp"
#include "checks.hpp"
#include "lowp/amx.hpp"
#include "lowp/bf16_dense.hpp"
#include "lowp/bf16_gemm.hpp"
#include "lowp/int8_gemm.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

using lowp::bf16_bits;

// ml_dtypes.bfloat16 as a NumPy dtype; ml_dtypes is imported on first use.
const py::dtype& bf16_dtype() {
  static py::object* dtype = [] {
    py::object type = py::module_::import("ml_dtypes").attr("bfloat16");
    return new py::object(py::dtype::from_args(type));  // kept for the process
  }();
  return *reinterpret_cast<const py::dtype*>(dtype);
}

bool is_bf16(const py::array& a) { return a.dtype().equal(bf16_dtype()); }

// The hint for a float16 array given where bf16 is expected.
std::string float16_hint(const py::array& a) {
  return dtype_string(a) == "float16"
             ? " (float16 is IEEE half precision, a different format: convert with "
               "densekit.kernels.to_bfloat16 or .astype(ml_dtypes.bfloat16))"
             : "";
}

py::array bf16_array(py::handle obj, const char* name) {
  py::array a = require_array(obj, name, "ml_dtypes.bfloat16");
  if (!is_bf16(a))
    type_fail(name, "expected dtype bfloat16 (ml_dtypes.bfloat16), got " + dtype_string(a) +
                        float16_hint(a));
  require_c_contiguous(a, name);
  return a;
}

bool is_float32(const py::array& a) { return a.dtype().num() == py::dtype::of<float>().num(); }

// An activation or gradient of a bf16 layer: float32 or bf16, C-contiguous.
py::array float32_or_bf16(py::handle obj, const char* name) {
  py::array a = require_array(obj, name, "float32 or ml_dtypes.bfloat16");
  if (!is_float32(a) && !is_bf16(a))
    type_fail(name, "expected dtype float32 or bfloat16 (ml_dtypes.bfloat16), got " +
                        dtype_string(a) + float16_hint(a));
  require_c_contiguous(a, name);
  return a;
}

lowp::Bf16Io io_of(const py::array& a) {
  if (is_bf16(a)) return {static_cast<const bf16_bits*>(a.data())};
  return {cptr<float>(a)};
}

py::array float32_array(py::handle obj, const char* name) {
  py::array a = require_array(obj, name, "float32");
  if (!is_float32(a))
    type_fail(name, "expected dtype float32, got " + dtype_string(a));
  require_c_contiguous(a, name);
  return a;
}

py::array new_bf16(const std::vector<index_t>& shape) {
  return aligned_array(bf16_dtype(), std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

// An out= array: None, or writeable C-contiguous of exactly this shape and dtype.
bool out_bf16(py::handle obj, const char* name, const std::vector<index_t>& shape, py::array* r) {
  if (obj.is_none()) return false;
  py::array a = require_array(obj, name, "bfloat16");
  if (!is_bf16(a))
    type_fail(name, "expected dtype bfloat16, got " + dtype_string(a) +
                        " (out= arrays are never converted)");
  require_c_contiguous(a, name);
  require_shape(a, name, shape);
  require_writeable(a, name);
  *r = a;
  return true;
}

// out_dtype: true for 'bfloat16', false for 'float32'.
bool bf16_out_dtype(const std::string& value, const char* name) {
  if (value != "float32" && value != "bfloat16")
    value_fail(name, "expected 'float32' or 'bfloat16', got '" + value + "'");
  return value == "bfloat16";
}

// An output of the bf16 layer in float32 or bf16 (out16): out_obj checked, or a new array.
py::array float32_or_bf16_out(py::handle out_obj, const char* name, bool out16,
                              const std::vector<index_t>& shape, bool* given = nullptr) {
  py::array out;
  const bool has = out16 ? out_bf16(out_obj, name, shape, &out)
                         : out_array(out_obj, name, DType::float32, shape, &out);
  if (!has) out = out16 ? new_bf16(shape) : new_array<float>(shape);
  if (given != nullptr) *given = has;
  return out;
}

lowp::Bf16IoOut io_out_of(py::array& a) {
  if (is_bf16(a)) return {static_cast<bf16_bits*>(a.mutable_data())};
  return {mptr<float>(a)};
}

py::array to_bfloat16(py::handle x_obj, py::handle out_obj, py::handle threads_obj) {
  py::array x = float32_array(x_obj, "x");
  const std::vector<index_t> shape = shape_of(x);
  py::array out;
  if (!out_bf16(out_obj, "out", shape, &out)) out = new_bf16(shape);
  require_no_overlap(out, "out", {{&x, "x"}});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const float* xp = cptr<float>(x);
  auto* yp = static_cast<bf16_bits*>(out.mutable_data());
  const index_t count = static_cast<index_t>(x.size());
  {
    const GilRelease nogil;
    lowp::convert_to_bf16(xp, yp, count, threads);
  }
  return out;
}

py::array from_bfloat16(py::handle x_obj, py::handle out_obj, py::handle threads_obj) {
  py::array x = bf16_array(x_obj, "x");
  const std::vector<index_t> shape = shape_of(x);
  py::array out;
  if (!out_array(out_obj, "out", DType::float32, shape, &out)) out = new_array<float>(shape);
  require_no_overlap(out, "out", {{&x, "x"}});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const auto* xp = static_cast<const bf16_bits*>(x.data());
  float* yp = mptr<float>(out);
  const index_t count = static_cast<index_t>(x.size());
  {
    const GilRelease nogil;
    lowp::convert_from_bf16(xp, yp, count, threads);
  }
  return out;
}

lowp::Bf16Path path_named(const std::string& text) {
  lowp::Bf16Path path;
  if (!lowp::bf16_path_from_name(text, &path))
    value_fail("path", "expected 'amx', 'avx512_bf16' or 'emulated', got '" + text + "'");
  if (!lowp::bf16_path_supported(path))
    value_fail("path", "'" + text + "' is not supported by this CPU/build/DENSEKIT_ISA");
  return path;
}

py::array matmul_bf16_impl(const lowp::Bf16Path* path, py::handle a_obj, py::handle b_obj,
                           py::handle out_obj, bool trans_a, bool trans_b, py::handle bias_obj,
                           py::handle preact_obj, py::handle activation, py::handle alpha,
                           bool accumulate, const std::string& out_dtype,
                           py::handle threads_obj) {
  py::array a = bf16_array(a_obj, "a");
  py::array b = bf16_array(b_obj, "b");
  require_ndim(a, "a", 2);
  require_ndim(b, "b", 2);
  const bool out16 = bf16_out_dtype(out_dtype, "out_dtype");
  const index_t m = a.shape(trans_a ? 1 : 0);
  const index_t k = a.shape(trans_a ? 0 : 1);
  const index_t n = b.shape(trans_b ? 0 : 1);
  if (b.shape(trans_b ? 1 : 0) != k)
    value_fail("b", "expected " + std::to_string(k) + " rows in op(b) (the columns of op(a)), got " +
                        std::to_string(b.shape(trans_b ? 1 : 0)));
  bool given;
  py::array out = float32_or_bf16_out(out_obj, "out", out16, {m, n}, &given);
  if (accumulate && !given) value_fail("out", "accumulate=True needs out= (the sum to add to)");
  if (accumulate && out16)
    value_fail("accumulate", "needs out_dtype='float32' (float32 master gradients)");
  py::array bias, preact;
  const bool has_bias = !bias_obj.is_none();
  if (has_bias) {
    bias = float32_array(bias_obj, "bias");
    require_shape(bias, "bias", {n});
  }
  const bool has_preact = out_array(preact_obj, "preact", DType::float32, {m, n}, &preact);
  const Activation act = parse_activation(activation, alpha);
  if (is_row_activation(act.kind))
    value_fail("activation", std::string(activation_name(act.kind)) +
                                 " is a row operation; apply it with activation_forward after");
  require_no_overlap(out, "out", {{&a, "a"}, {&b, "b"}, {has_bias ? &bias : nullptr, "bias"},
                                  {has_preact ? &preact : nullptr, "preact"}});
  if (has_preact) require_no_overlap(preact, "preact", {{&a, "a"}, {&b, "b"}});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const auto* ap = static_cast<const bf16_bits*>(a.data());
  const auto* bp = static_cast<const bf16_bits*>(b.data());
  lowp::Bf16Epilogue ep;
  ep.bias = has_bias ? cptr<float>(bias) : nullptr;
  ep.preact = has_preact ? mptr<float>(preact) : nullptr;
  ep.ld_preact = n;
  ep.activation = act;
  ep.accumulate = accumulate;
  float* c32 = out16 ? nullptr : mptr<float>(out);
  bf16_bits* c16 = out16 ? static_cast<bf16_bits*>(out.mutable_data()) : nullptr;
  const index_t lda = a.shape(1), ldb = b.shape(1);
  if (m == 0 || n == 0) return out;  // nothing to compute (and op(b) need not be packed)
  {
    const GilRelease nogil;
    lowp::matmul_bf16(path, m, n, k, ap, lda, trans_a, bp, ldb, trans_b, c32, c16, n, ep,
                      threads);
  }
  return out;
}

// The bf16 copy of float32 dense weights (k, m), packed for dense_forward_bf16 and, with
// transposed=True, for dense_backward_bf16's dx. pack(w) makes it again from new values of w
// (after an optimizer step) into a spare buffer, then swaps: a call running on another thread
// keeps the copy it started with (each call holds a reference), and in the steady state no
// packing allocates.
class Bf16Weights {
 public:
  Bf16Weights(py::handle w_obj, bool transposed, py::handle threads_obj)
      : transposed_(transposed) {
    py::array w = float32_array(w_obj, "w");
    require_ndim(w, "w", 2);
    k_ = w.shape(0);
    m_ = w.shape(1);
    pack(w_obj, threads_obj);
  }

  void pack(py::handle w_obj, py::handle threads_obj) {
    py::array w = float32_array(w_obj, "w");
    require_shape(w, "w", {k_, m_}, "the shape these weights were made with");
    const int threads = resolve_num_threads(thread_count(threads_obj));
    std::shared_ptr<lowp::Bf16DenseWeights> target =
        spare_ != nullptr && spare_.use_count() == 1 ? std::move(spare_)
                                                     : std::make_shared<lowp::Bf16DenseWeights>();
    spare_.reset();
    {
      const GilRelease nogil;
      lowp::pack_dense_bf16(target.get(), cptr<float>(w), k_, m_, transposed_, threads);
    }
    spare_ = std::move(current_);
    current_ = std::move(target);
  }

  std::shared_ptr<const lowp::Bf16DenseWeights> current() const { return current_; }
  bool transposed() const { return transposed_; }
  index_t k() const { return k_; }
  index_t m() const { return m_; }
  py::tuple shape() const { return py::make_tuple(k_, m_); }
  std::string repr() const {
    return "Bf16Weights(shape=(" + std::to_string(k_) + ", " + std::to_string(m_) +
           "), transposed=" + (transposed_ ? "True" : "False") + ")";
  }

 private:
  bool transposed_ = false;
  index_t k_ = 0, m_ = 0;
  std::shared_ptr<lowp::Bf16DenseWeights> current_, spare_;
};

const Bf16Weights& bf16_weights_arg(py::handle obj, const char* name) {
  if (!py::isinstance<Bf16Weights>(obj))
    type_fail(name, "expected densekit.kernels.Bf16Weights (made from the float32 weights), "
                    "got " + type_name(obj));
  return obj.cast<const Bf16Weights&>();
}

// x (n, k) float32 for weights (k, m): the rows n.
index_t bf16_dense_rows(const py::array& x, const Bf16Weights& w, const char* name) {
  require_ndim(x, name, 2);
  if (x.shape(1) != w.k())
    value_fail(name, "expected " + std::to_string(w.k()) + " columns (w.shape[0]), got shape " +
                         shape_string(x));
  return x.shape(0);
}

py::array dense_forward_bf16_py(py::handle x_obj, py::handle w_obj, py::handle b_obj,
                                py::handle activation, py::handle alpha, py::handle out_obj,
                                py::handle preact_obj, const std::string& out_dtype,
                                py::handle threads_obj) {
  py::array x = float32_or_bf16(x_obj, "x");
  const bool out16 = bf16_out_dtype(out_dtype, "out_dtype");
  const Bf16Weights& w = bf16_weights_arg(w_obj, "w");
  const index_t n = bf16_dense_rows(x, w, "x"), m = w.m();
  py::array b;
  const bool has_b = !b_obj.is_none();
  if (has_b) {
    b = float32_array(b_obj, "b");
    require_shape(b, "b", {m}, "w.shape[1]");
  }
  const Activation act = parse_activation(activation, alpha);
  py::array preact;
  py::array out = float32_or_bf16_out(out_obj, "out", out16, {n, m});
  const bool has_preact = out_array(preact_obj, "preact_out", DType::float32, {n, m}, &preact);
  require_no_overlap(out, "out", {{&x, "x"}, {has_b ? &b : nullptr, "b"},
                                  {has_preact ? &preact : nullptr, "preact_out"}});
  if (has_preact) require_no_overlap(preact, "preact_out", {{&x, "x"}, {has_b ? &b : nullptr, "b"}});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::shared_ptr<const lowp::Bf16DenseWeights> packed = w.current();
  const lowp::Bf16Io xp = io_of(x);
  const float* bp = has_b ? cptr<float>(b) : nullptr;
  const lowp::Bf16IoOut yp = io_out_of(out);
  float* zp = has_preact ? mptr<float>(preact) : nullptr;
  {
    const GilRelease nogil;
    lowp::dense_forward_bf16(yp, zp, xp, *packed, bp, n, act, threads);
  }
  return out;
}

py::tuple dense_backward_bf16_py(py::handle dy_obj, py::handle x_obj, py::handle w_obj,
                                 py::handle y_obj, py::handle preact_obj, py::handle activation,
                                 py::handle alpha, bool need_dx, bool need_dw, bool need_db,
                                 py::handle dx_obj, py::handle dw_obj, py::handle db_obj,
                                 bool accumulate, const std::string& dx_dtype,
                                 py::handle threads_obj) {
  py::array dy = float32_or_bf16(dy_obj, "dy");
  py::array x = float32_or_bf16(x_obj, "x");
  const bool dx16 = bf16_out_dtype(dx_dtype, "dx_dtype");
  const Bf16Weights& w = bf16_weights_arg(w_obj, "w");
  const index_t n = bf16_dense_rows(x, w, "x"), k = w.k(), m = w.m();
  require_shape(dy, "dy", {n, m}, "x.shape[0], w.shape[1]");
  if (need_dx && !w.transposed())
    value_fail("w", "need_dx needs Bf16Weights made with transposed=True (dx = dz @ w.T)");
  const Activation act = parse_activation(activation, alpha);
  py::array y, preact;
  const bool has_y = !y_obj.is_none(), has_preact = !preact_obj.is_none();
  if (has_y) {
    y = float32_or_bf16(y_obj, "y");
    require_shape(y, "y", {n, m}, "the shape of dy");
  }
  if (has_preact) {
    preact = float32_array(preact_obj, "preact");
    require_shape(preact, "preact", {n, m}, "the shape of dy");
  }
  const bool use_y = has_y && derivative_from_output(act);
  if (!derivative_is_one(act) && !use_y && !has_preact)
    value_fail(derivative_from_output(act) ? "y" : "preact",
               std::string("activation '") + activation_name(act.kind) +
                   "' needs " + (derivative_from_output(act) ? "the forward output y (or preact)"
                                                              : "the pre-activation preact") +
                   " for its derivative; it was not given");
  if (!need_dx && !dx_obj.is_none()) value_fail("dx_out", "given, but need_dx is False");
  if (!need_dw && !dw_obj.is_none()) value_fail("dw_out", "given, but need_dw is False");
  if (!need_db && !db_obj.is_none()) value_fail("db_out", "given, but need_db is False");
  py::array dx, dw, db;
  bool has_dx = false;
  if (need_dx) dx = float32_or_bf16_out(dx_obj, "dx_out", dx16, {n, k}, &has_dx);
  const bool has_dw = need_dw && out_array(dw_obj, "dw_out", DType::float32, {k, m}, &dw);
  const bool has_db = need_db && out_array(db_obj, "db_out", DType::float32, {m}, &db);
  if (accumulate && need_dw && !has_dw)
    value_fail("dw_out", "accumulate=True adds into dw_out, which was not given");
  if (accumulate && need_db && !has_db)
    value_fail("db_out", "accumulate=True adds into db_out, which was not given");
  const py::array* y_ptr = has_y ? &y : nullptr;
  const py::array* z_ptr = has_preact ? &preact : nullptr;
  if (has_dx)
    require_no_overlap(dx, "dx_out", {{&dy, "dy"}, {&x, "x"}, {y_ptr, "y"}, {z_ptr, "preact"},
                                      {has_dw ? &dw : nullptr, "dw_out"},
                                      {has_db ? &db : nullptr, "db_out"}});
  if (has_dw)
    require_no_overlap(dw, "dw_out", {{&dy, "dy"}, {&x, "x"}, {y_ptr, "y"}, {z_ptr, "preact"},
                                      {has_db ? &db : nullptr, "db_out"}});
  if (has_db)
    require_no_overlap(db, "db_out", {{&dy, "dy"}, {&x, "x"}, {y_ptr, "y"}, {z_ptr, "preact"}});
  if (need_dw && !has_dw) dw = new_array<float>({k, m});
  if (need_db && !has_db) db = new_array<float>({m});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::shared_ptr<const lowp::Bf16DenseWeights> packed = w.current();
  const lowp::Bf16IoOut dxp = need_dx ? io_out_of(dx) : lowp::Bf16IoOut{};
  float* dwp = need_dw ? mptr<float>(dw) : nullptr;
  float* dbp = need_db ? mptr<float>(db) : nullptr;
  const lowp::Bf16Io dyp = io_of(dy), xp = io_of(x);
  const lowp::Bf16Io yp = use_y ? io_of(y) : lowp::Bf16Io{};
  const float* zp = has_preact ? cptr<float>(preact) : nullptr;
  {
    const GilRelease nogil;
    lowp::dense_backward_bf16(dxp, dwp, dbp, dyp, xp, *packed, yp, zp, n, act, accumulate,
                              threads);
  }
  return py::make_tuple(need_dx ? py::object(dx) : py::none(),
                        need_dw ? py::object(dw) : py::none(),
                        need_db ? py::object(db) : py::none());
}

// Test hook: dense_backward_bf16's gradients (dx, dw, db, all float32) of an activation whose
// derivative comes from y, with the two products run in the schedule named ("serial" or
// "side_by_side"), whatever the pool's state, for the tests that compare the two.
py::tuple dense_backward_bf16_schedule_test(const std::string& schedule, py::handle dy_obj,
                                            py::handle x_obj, py::handle w_obj, py::handle y_obj,
                                            py::handle activation, py::handle threads_obj) {
  lowp::BackwardSchedule order;
  if (schedule == "serial") {
    order = lowp::BackwardSchedule::serial;
  } else if (schedule == "side_by_side") {
    order = lowp::BackwardSchedule::side_by_side;
  } else {
    value_fail("schedule", "expected 'serial' or 'side_by_side', got '" + schedule + "'");
  }
  py::array dy = float32_or_bf16(dy_obj, "dy");
  py::array x = float32_or_bf16(x_obj, "x");
  py::array y = float32_or_bf16(y_obj, "y");
  const Bf16Weights& w = bf16_weights_arg(w_obj, "w");
  const index_t n = bf16_dense_rows(x, w, "x"), k = w.k(), m = w.m();
  require_shape(dy, "dy", {n, m}, "x.shape[0], w.shape[1]");
  require_shape(y, "y", {n, m}, "the shape of dy");
  if (!w.transposed()) value_fail("w", "expected Bf16Weights made with transposed=True");
  const Activation act = parse_activation(activation, py::none());
  if (!derivative_from_output(act))
    value_fail("activation", "expected one whose derivative comes from y, got '" +
                                 std::string(activation_name(act.kind)) + "'");
  py::array dx = new_array<float>({n, k}), dw = new_array<float>({k, m});
  py::array db = new_array<float>({m});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  const std::shared_ptr<const lowp::Bf16DenseWeights> packed = w.current();
  const lowp::Bf16IoOut dxp = io_out_of(dx);
  const lowp::Bf16Io dyp = io_of(dy), xp = io_of(x), yp = io_of(y);
  {
    const GilRelease nogil;
    lowp::dense_backward_bf16(dxp, mptr<float>(dw), mptr<float>(db), dyp, xp, *packed, yp,
                              nullptr, n, act, false, threads, order);
  }
  return py::make_tuple(dx, dw, db);
}

py::dict bf16_config() {
  const lowp::Bf16Choice& c = lowp::bf16_choice();
  py::dict d;
  d["path"] = lowp::bf16_path_name(c.path);
  d["best"] = lowp::bf16_path_name(c.best);
  d["forced"] = c.forced;
  d["requested"] = c.requested;
  d["note"] = c.note;
  // why the CPU's AMX tiles are not used ("" where they are, or where the CPU has none)
  d["amx_note"] = lowp::amx_support().note;
  py::list available;
  for (auto p : {lowp::Bf16Path::amx, lowp::Bf16Path::avx512_bf16, lowp::Bf16Path::emulated})
    if (lowp::bf16_path_supported(p)) available.append(lowp::bf16_path_name(p));
  d["available"] = available;
  return d;
}

// Dense weights quantized to int8 per output column and packed for the int8 product. Holds
// read-only copies of the int8 weights and their scales (what a saved model stores).
class QuantizedWeights {
 public:
  // From float32 weights (k, n): scales max |W(:, j)| / 127, rounding to nearest even.
  static QuantizedWeights quantize(py::handle w_obj, py::handle threads_obj) {
    py::array w = float32_array(w_obj, "w");
    require_ndim(w, "w", 2);
    const index_t k = w.shape(0), n = w.shape(1);
    check_depth(k, "w");
    const int threads = resolve_num_threads(thread_count(threads_obj));
    py::array wq = new_array<std::int8_t>({k, n});
    py::array scales = new_array<float>({n});
    bool finite;
    {
      const GilRelease nogil;
      finite = lowp::quantize_weights(cptr<float>(w), k, n, mptr<std::int8_t>(wq),
                                      mptr<float>(scales), threads);
    }
    if (!finite) value_fail("w", "expected finite weights, got inf or nan");
    return QuantizedWeights(wq, scales, threads);
  }

  // From int8 weights (k, n) in [-127, 127] and their float32 scales (n,), finite and >= 0.
  static QuantizedWeights from_int8(py::handle wq_obj, py::handle scales_obj,
                                    py::handle threads_obj) {
    py::array wq = require_array(wq_obj, "weights", "int8");
    if (wq.dtype().num() != py::dtype::of<std::int8_t>().num())
      type_fail("weights", "expected dtype int8, got " + dtype_string(wq));
    require_c_contiguous(wq, "weights");
    require_ndim(wq, "weights", 2);
    if (scales_obj.is_none())
      value_fail("scales", "expected the float32 scales of the int8 weights (one per column), "
                           "got None: int8 weights without scales have no meaning");
    py::array scales = float32_array(scales_obj, "scales");
    require_shape(scales, "scales", {static_cast<index_t>(wq.shape(1))}, "weights.shape[1]");
    check_depth(wq.shape(0), "weights");
    const float* sp = cptr<float>(scales);
    for (py::ssize_t j = 0; j < scales.size(); ++j)
      if (!(std::isfinite(sp[j]) && sp[j] >= 0.0f))
        value_fail("scales", "expected finite scales >= 0, got " + std::to_string(sp[j]) +
                                 " at column " + std::to_string(j));
    const auto* q = cptr<std::int8_t>(wq);
    for (py::ssize_t i = 0; i < wq.size(); ++i)
      if (q[i] == -128) value_fail("weights", "expected values in [-127, 127] (symmetric), got -128");
    return QuantizedWeights(copy_of(wq), copy_of(scales), resolve_num_threads(thread_count(threads_obj)));
  }

  const py::array& weights() const { return wq_; }
  const py::array& scales() const { return scales_; }
  const lowp::PackedInt8& packed() const { return *packed_; }
  py::tuple shape() const { return py::make_tuple(wq_.shape(0), wq_.shape(1)); }
  std::string repr() const {
    return "QuantizedWeights(shape=(" + std::to_string(wq_.shape(0)) + ", " +
           std::to_string(wq_.shape(1)) + "), int8 per-column symmetric)";
  }

 private:
  QuantizedWeights(py::array wq, py::array scales, int threads)
      : wq_(std::move(wq)), scales_(std::move(scales)) {
    wq_.attr("setflags")(py::arg("write") = false);
    scales_.attr("setflags")(py::arg("write") = false);
    const auto* q = cptr<std::int8_t>(wq_);
    const float* s = cptr<float>(scales_);
    const index_t k = wq_.shape(0), n = wq_.shape(1);
    auto packed = std::make_shared<lowp::PackedInt8>();
    {
      const GilRelease nogil;
      *packed = lowp::pack_int8(q, s, k, n, threads);
    }
    packed_ = packed;
  }
  static void check_depth(index_t k, const char* name) {
    if (k > lowp::kMaxInt8Depth)
      value_fail(name, "expected at most " + std::to_string(lowp::kMaxInt8Depth) +
                           " rows (input features; the int32 sums stay exact), got " +
                           std::to_string(k));
  }
  static py::array copy_of(const py::array& a) {
    py::array c(a.dtype(), std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()));
    std::memcpy(c.mutable_data(), a.data(), static_cast<size_t>(a.nbytes()));
    return c;
  }

  py::array wq_, scales_;
  std::shared_ptr<const lowp::PackedInt8> packed_;
};

lowp::Int8Path int8_path_named(const std::string& text) {
  lowp::Int8Path path;
  if (!lowp::int8_path_from_name(text, &path))
    value_fail("path", "expected 'amx', 'avx512_vnni' or 'emulated', got '" + text + "'");
  if (!lowp::int8_path_supported(path))
    value_fail("path", "'" + text + "' is not supported by this CPU/build/DENSEKIT_ISA");
  return path;
}

py::array dense_forward_int8_impl(const lowp::Int8Path* path, py::handle x_obj,
                                  py::handle w_obj, py::handle b_obj, py::handle activation,
                                  py::handle alpha, py::handle out_obj, py::handle threads_obj) {
  py::array x = float32_array(x_obj, "x");
  require_ndim(x, "x", 2);
  if (!py::isinstance<QuantizedWeights>(w_obj))
    type_fail("w", "expected densekit.kernels.QuantizedWeights (from QuantizedWeights.quantize "
                   "or .from_int8), got " + type_name(w_obj));
  const QuantizedWeights& w = w_obj.cast<const QuantizedWeights&>();
  const index_t m = x.shape(0), k = x.shape(1);
  const index_t n = w.weights().shape(1);
  if (k != w.weights().shape(0))
    value_fail("x", "expected " + std::to_string(w.weights().shape(0)) +
                        " columns (w.shape[0]), got shape " + shape_string(x));
  py::array b;
  const bool has_b = !b_obj.is_none();
  if (has_b) {
    b = float32_array(b_obj, "b");
    require_shape(b, "b", {n}, "w.shape[1]");
  }
  const Activation act = parse_activation(activation, alpha);
  py::array out;
  if (!out_array(out_obj, "out", DType::float32, {m, n}, &out)) out = new_array<float>({m, n});
  require_no_overlap(out, "out", {{&x, "x"}, {has_b ? &b : nullptr, "b"}});
  const int threads = resolve_num_threads(thread_count(threads_obj));
  lowp::Int8Epilogue ep;
  ep.bias = has_b ? cptr<float>(b) : nullptr;
  ep.activation = act;
  const float* xp = cptr<float>(x);
  float* yp = mptr<float>(out);
  {
    const GilRelease nogil;
    if (path != nullptr)
      lowp::dense_int8_with_path(*path, m, xp, w.packed(), yp, ep, threads);
    else
      lowp::dense_int8(m, xp, w.packed(), yp, ep, threads);
  }
  return out;
}

py::dict int8_config() {
  const lowp::Int8Choice& c = lowp::int8_choice();
  py::dict d;
  d["path"] = lowp::int8_path_name(c.path);
  d["best"] = lowp::int8_path_name(c.best);
  d["forced"] = c.forced;
  d["requested"] = c.requested;
  d["note"] = c.note;
  // why the CPU's AMX tiles are not used ("" where they are, or where the CPU has none)
  d["amx_note"] = lowp::amx_support().note;
  py::list available;
  for (auto p : {lowp::Int8Path::amx, lowp::Int8Path::avx512_vnni, lowp::Int8Path::emulated})
    if (lowp::int8_path_supported(p)) available.append(lowp::int8_path_name(p));
  d["available"] = available;
  return d;
}

}  // namespace

const lowp::PackedInt8* quantized_weights_of(py::handle obj, index_t* k, index_t* n) {
  if (!py::isinstance<QuantizedWeights>(obj)) return nullptr;
  const QuantizedWeights& w = obj.cast<const QuantizedWeights&>();
  *k = w.weights().shape(0);
  *n = w.weights().shape(1);
  return &w.packed();
}

bool is_bf16_weights(py::handle obj, index_t* k, index_t* m) {
  if (!py::isinstance<Bf16Weights>(obj)) return false;
  const Bf16Weights& w = obj.cast<const Bf16Weights&>();
  *k = w.k();
  *m = w.m();
  return true;
}

std::shared_ptr<const lowp::Bf16DenseWeights> bf16_weights_now(py::handle obj) {
  return obj.cast<const Bf16Weights&>().current();
}

void bind_lowp(py::module_& m) {
  py::class_<QuantizedWeights>(m, "QuantizedWeights",
                               "Dense weights (k, n) as int8 per output column (symmetric, "
                               "scale = ``max(abs(w[:, j])) / 127``), packed for "
                               "dense_forward_int8.")
      .def_static("quantize", &QuantizedWeights::quantize, py::arg("w"), py::kw_only(),
                  py::arg("num_threads") = py::none(),
                  "Quantize float32 weights (k, n), rounding to nearest even.")
      .def_static("from_int8", &QuantizedWeights::from_int8, py::arg("weights"),
                  py::arg("scales"), py::kw_only(), py::arg("num_threads") = py::none(),
                  "From int8 weights (k, n) in [-127, 127] and float32 scales (n,).")
      .def_property_readonly("weights", &QuantizedWeights::weights,
                             "The int8 weights (k, n), read-only.")
      .def_property_readonly("scales", &QuantizedWeights::scales,
                             "The float32 scales (n,), read-only.")
      .def_property_readonly("shape", &QuantizedWeights::shape, "(k, n).")
      .def("__repr__", &QuantizedWeights::repr);
  m.def(
      "dense_forward_int8",
      [](py::handle x, py::handle w, py::handle b, py::handle activation, py::handle alpha,
         py::handle out, py::handle threads) {
        return dense_forward_int8_impl(nullptr, x, w, b, activation, alpha, out, threads);
      },
      py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::kw_only(),
      py::arg("activation") = "linear", py::arg("alpha") = py::none(),
      py::arg("out") = py::none(), py::arg("num_threads") = py::none(),
      "y = act(x @ w + b) with w QuantizedWeights and x (float32) quantized per row on the fly "
      "(symmetric int8); exact int32 products (AVX512-VNNI where present), dequantized, bias "
      "and activation in float32. The same bits on every path and thread count.");
  m.def(
      "_dense_int8_path_test",
      [](const std::string& path, py::handle x, py::handle w, py::handle b,
         py::handle activation, py::handle alpha, py::handle out, py::handle threads) {
        const lowp::Int8Path p = int8_path_named(path);
        return dense_forward_int8_impl(&p, x, w, b, activation, alpha, out, threads);
      },
      py::arg("path"), py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::kw_only(),
      py::arg("activation") = "linear", py::arg("alpha") = py::none(),
      py::arg("out") = py::none(), py::arg("num_threads") = py::none(),
      "Test hook: dense_forward_int8 on a given path ('amx', 'avx512_vnni' or 'emulated').");
  m.def("int8_config", &int8_config,
        "The int8 product's path: in use, best, available, and DENSEKIT_INT8's request.");
  m.def("to_bfloat16", &to_bfloat16, py::arg("x"), py::kw_only(), py::arg("out") = py::none(),
        py::arg("num_threads") = py::none(),
        "x (float32, any shape) rounded to bfloat16, to nearest with ties to even, as "
        "ml_dtypes.bfloat16 does (subnormals kept, NaN stays NaN). Returns out.");
  m.def("from_bfloat16", &from_bfloat16, py::arg("x"), py::kw_only(),
        py::arg("out") = py::none(), py::arg("num_threads") = py::none(),
        "x (ml_dtypes.bfloat16, any shape) widened to float32 (exact). Returns out.");
  m.def(
      "matmul_bf16",
      [](py::handle a, py::handle b, py::handle out, bool trans_a, bool trans_b, py::handle bias,
         py::handle preact, py::handle activation, py::handle alpha, bool accumulate,
         const std::string& out_dtype, py::handle threads) {
        return matmul_bf16_impl(nullptr, a, b, out, trans_a, trans_b, bias, preact, activation,
                                alpha, accumulate, out_dtype, threads);
      },
      py::arg("a"), py::arg("b"), py::kw_only(), py::arg("out") = py::none(),
      py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("bias") = py::none(),
      py::arg("preact") = py::none(), py::arg("activation") = "linear",
      py::arg("alpha") = py::none(), py::arg("accumulate") = false,
      py::arg("out_dtype") = "float32", py::arg("num_threads") = py::none(),
      "op(a) @ op(b) for bfloat16 a and b with float32 accumulation (vdpbf16ps's pair rule, "
      "the same bits on every path and thread count), then bias (float32), preact (float32 "
      "copy of the pre-activation) and an elementwise activation in float32; the result in "
      "out_dtype 'float32' or 'bfloat16' (rounded to nearest even). accumulate=True adds to a "
      "float32 out.");
  m.def(
      "_matmul_bf16_path_test",
      [](const std::string& path, py::handle a, py::handle b, py::handle out, bool trans_a,
         bool trans_b, py::handle bias, py::handle preact, py::handle activation,
         py::handle alpha, bool accumulate, const std::string& out_dtype, py::handle threads) {
        const lowp::Bf16Path p = path_named(path);
        return matmul_bf16_impl(&p, a, b, out, trans_a, trans_b, bias, preact, activation, alpha,
                                accumulate, out_dtype, threads);
      },
      py::arg("path"), py::arg("a"), py::arg("b"), py::kw_only(), py::arg("out") = py::none(),
      py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("bias") = py::none(),
      py::arg("preact") = py::none(), py::arg("activation") = "linear",
      py::arg("alpha") = py::none(), py::arg("accumulate") = false,
      py::arg("out_dtype") = "float32", py::arg("num_threads") = py::none(),
      "Test hook: matmul_bf16 on a given path ('amx', 'avx512_bf16' or 'emulated').");
  py::class_<Bf16Weights>(m, "Bf16Weights",
                          "Dense weights (k, m) rounded to bfloat16 and packed for "
                          "dense_forward_bf16 (and, with transposed=True, for "
                          "dense_backward_bf16's dx). The float32 weights stay the master copy: "
                          "call pack(w) again after they change.")
      .def(py::init<py::handle, bool, py::handle>(), py::arg("w"), py::kw_only(),
           py::arg("transposed") = false, py::arg("num_threads") = py::none())
      .def("pack", &Bf16Weights::pack, py::arg("w"), py::kw_only(),
           py::arg("num_threads") = py::none(),
           "Round and pack new values of the float32 weights (same shape).")
      .def_property_readonly("shape", &Bf16Weights::shape, "(k, m).")
      .def_property_readonly("transposed", &Bf16Weights::transposed,
                             "Whether w.T is packed too (for dense_backward_bf16's dx).")
      .def("__repr__", &Bf16Weights::repr);
  m.def("dense_forward_bf16", &dense_forward_bf16_py, py::arg("x"), py::arg("w"),
        py::arg("b") = py::none(), py::kw_only(), py::arg("activation") = "linear",
        py::arg("alpha") = py::none(), py::arg("out") = py::none(),
        py::arg("preact_out") = py::none(), py::arg("out_dtype") = "float32",
        py::arg("num_threads") = py::none(),
        "y = act(bf16(x) @ bf16(w) + b): x (n, k) float32 (rounded to bfloat16 as it is "
        "packed) or bfloat16, w Bf16Weights, float32 accumulation (matmul_bf16's rule), bias "
        "and activation in float32, y in out_dtype ('float32' or 'bfloat16': rounded to "
        "nearest even), preact_out float32. The same bits on every path and thread count.");
  m.def("dense_backward_bf16", &dense_backward_bf16_py, py::arg("dy"), py::arg("x"),
        py::arg("w"), py::kw_only(), py::arg("y") = py::none(), py::arg("preact") = py::none(),
        py::arg("activation") = "linear", py::arg("alpha") = py::none(),
        py::arg("need_dx") = true, py::arg("need_dw") = true, py::arg("need_db") = true,
        py::arg("dx_out") = py::none(), py::arg("dw_out") = py::none(),
        py::arg("db_out") = py::none(), py::arg("accumulate") = false,
        py::arg("dx_dtype") = "float32", py::arg("num_threads") = py::none(),
        "Gradients of dense_forward_bf16: dz = dy * act'(.) and db in float32, dw = bf16(x).T "
        "@ bf16(dz) and dx = bf16(dz) @ bf16(w).T with float32 accumulation; dy, x and y "
        "float32 or bfloat16, dw and db float32, dx in dx_dtype ('float32' or 'bfloat16'). "
        "Returns (dx, dw, db), None for each not needed.");
  m.def("_dense_backward_bf16_schedule_test", &dense_backward_bf16_schedule_test,
        py::arg("schedule"), py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("y"),
        py::arg("activation"), py::kw_only(), py::arg("num_threads") = py::none(),
        "Test hook: dense_backward_bf16's (dx, dw, db) with its two products run in the "
        "schedule named ('serial' or 'side_by_side').");
  m.def("bf16_config", &bf16_config,
        "The bf16 product's path: in use, best, available, and DENSEKIT_BF16's request.");
}

}  // namespace densekit::bind
