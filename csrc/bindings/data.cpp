// Bindings of take_rows (numpy.take(source, indices, axis=0, out=out) without the GIL) and of
// empty and zeros (numpy.empty / numpy.zeros with the data on a 64-byte boundary).
#include "data.hpp"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "parallel.hpp"

namespace densekit::bind {
namespace {

py::array take_rows_py(py::handle source_obj, py::handle indices_obj, py::handle out_obj,
                       py::handle threads_obj) {
  py::array source = require_array(source_obj, "source", "any dtype");
  require_c_contiguous(source, "source");
  if (source.ndim() < 1) value_fail("source", "expected at least one axis, got a 0-d array");
  if (source.dtype().attr("hasobject").cast<bool>())
    type_fail("source", "arrays holding Python objects (dtype " + dtype_string(source) +
                            ") hold references and cannot be copied without the GIL");
  py::array indices = require_array(indices_obj, "indices", "int32 or int64");
  const bool int64 = indices.dtype().num() == py::dtype::of<std::int64_t>().num() ||
                     (indices.dtype().kind() == 'i' && indices.itemsize() == 8);
  const bool int32 = indices.dtype().kind() == 'i' && indices.itemsize() == 4;
  if (!int64 && !int32)
    type_fail("indices", "expected dtype int32 or int64, got " + dtype_string(indices));
  require_c_contiguous(indices, "indices");
  require_ndim(indices, "indices", 1);
  const int threads = resolve_num_threads(thread_count(threads_obj));

  const index_t rows = static_cast<index_t>(source.shape(0));
  const index_t count = static_cast<index_t>(indices.shape(0));
  const index_t bad = int64 ? first_index_out_of_range(cptr<std::int64_t>(indices), count, rows)
                            : first_index_out_of_range(cptr<std::int32_t>(indices), count, rows);
  if (bad >= 0) {
    const long long value = int64 ? cptr<std::int64_t>(indices)[bad]
                                  : cptr<std::int32_t>(indices)[bad];
    value_fail("indices", "expected values in [0, " + std::to_string(rows) + "), got " +
                              std::to_string(value) + " at position " + std::to_string(bad));
  }
  std::vector<py::ssize_t> shape(source.shape(), source.shape() + source.ndim());
  shape[0] = count;
  py::array out;
  if (out_obj.is_none()) {
    out = aligned_array(source.dtype(), shape);
  } else {
    out = require_array(out_obj, "out", "the dtype of source");
    if (!out.dtype().is(source.dtype()) && !(out.dtype().num() == source.dtype().num() &&
                                             out.itemsize() == source.itemsize()))
      type_fail("out", "expected dtype " + dtype_string(source) + " (the dtype of source), got " +
                           dtype_string(out) + " (out= arrays are never converted)");
    require_c_contiguous(out, "out");
    require_shape(out, "out", std::vector<index_t>(shape.begin(), shape.end()));
    require_writeable(out, "out");
    require_no_overlap(out, "out", {{&source, "source"}, {&indices, "indices"}});
  }
  const index_t row_bytes = count == 0 ? 0 : static_cast<index_t>(out.nbytes()) / count;
  void* dst = out.mutable_data();
  const void* src = source.data();
  const void* idx = indices.data();
  const GilRelease nogil;
  if (int64) {
    take_rows(dst, src, static_cast<const std::int64_t*>(idx), count, row_bytes, threads);
  } else {
    take_rows(dst, src, static_cast<const std::int32_t*>(idx), count, row_bytes, threads);
  }
  return out;
}

// numpy.empty(shape, dtype) for numeric dtypes (bool, integers, floats, complex, and NumPy's
// bfloat16 from ml_dtypes), C order, the data 64-byte aligned (aligned_array).
py::array empty_py(py::handle shape_obj, py::handle dtype_obj) {
  std::vector<py::ssize_t> dims;
  auto dimension = [&](py::handle d) {
    // an int or anything with __index__ (NumPy's integers; not bool, nor an ndarray of
    // several elements, which __index__ refuses)
    PyObject* index_ptr = py::isinstance<py::bool_>(d) ? nullptr : PyNumber_Index(d.ptr());
    if (index_ptr == nullptr) {
      PyErr_Clear();
      type_fail("shape", "expected an int or a sequence of ints, got " + type_name(d));
    }
    const auto index = py::reinterpret_steal<py::object>(index_ptr);
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
    if (overflow != 0 || v < 0)
      value_fail("shape", "expected dimensions in [0, 2^63), got " + std::string(py::str(index)));
    dims.push_back(static_cast<py::ssize_t>(v));
  };
  if (py::isinstance<py::sequence>(shape_obj) && !py::isinstance<py::str>(shape_obj)) {
    // each item held while it is read: a sequence such as an ndarray makes its items anew
    const auto shape = py::reinterpret_borrow<py::sequence>(shape_obj);
    for (size_t i = 0; i < shape.size(); ++i) dimension(py::object(shape[i]));
  } else {
    dimension(shape_obj);
  }
  py::dtype dtype;
  try {
    dtype = py::dtype::from_args(py::reinterpret_borrow<py::object>(dtype_obj));
  } catch (py::error_already_set&) {
    type_fail("dtype", "expected a NumPy dtype, got " + std::string(py::repr(dtype_obj)));
  }
  const char kind = dtype.kind();
  // ml_dtypes' bfloat16 is of kind 'V' without fields; structured dtypes are refused
  const bool plain_void = kind == 'V' && dtype.attr("fields").is_none() && dtype.itemsize() > 0;
  const bool numeric = std::string("biufc").find(kind) != std::string::npos || plain_void;
  if (!numeric || dtype.attr("hasobject").cast<bool>())
    type_fail("dtype", "expected a numeric dtype (bool, integer, float, complex, bfloat16), "
                       "got " + std::string(py::str(dtype)));
  return aligned_array(dtype, dims);
}

// numpy.zeros(shape, dtype), the data 64-byte aligned: empty_py, then zero bytes (zero for
// every numeric dtype, bfloat16 included).
py::array zeros_py(py::handle shape_obj, py::handle dtype_obj) {
  py::array a = empty_py(shape_obj, dtype_obj);
  void* data = a.mutable_data();
  const size_t bytes = static_cast<size_t>(a.nbytes());
  {
    const GilRelease nogil;
    std::memset(data, 0, bytes);
  }
  return a;
}

}  // namespace

void bind_data(py::module_& m) {
  m.def("take_rows", &take_rows_py, py::arg("source"), py::arg("indices"), py::kw_only(),
        py::arg("out") = py::none(), py::arg("num_threads") = py::none(),
        "out[i] = source[indices[i]] along the first axis (numpy.take(..., axis=0)), with the "
        "GIL released; indices are checked first.");
  m.def("empty", &empty_py, py::arg("shape"), py::arg("dtype") = py::str("float32"),
        "A new uninitialised C-contiguous array, as numpy.empty(shape, dtype), whose data "
        "starts on a 64-byte boundary (a cache line), as torch aligns its tensors; numeric "
        "dtypes only (bool, integers, floats, complex, ml_dtypes.bfloat16).");
  m.def("zeros", &zeros_py, py::arg("shape"), py::arg("dtype") = py::str("float32"),
        "A new zero C-contiguous array, as numpy.zeros(shape, dtype), whose data starts on a "
        "64-byte boundary; the dtypes of empty.");
}

}  // namespace densekit::bind
