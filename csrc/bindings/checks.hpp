// Boundary checks shared by the binding files. Every array argument is taken as a plain
// Python object and checked here, so the messages name the argument, the expectation and
// what arrived; nothing is converted or copied. Shape, layout, writeability and overlap
// problems raise ValueError; wrong types and dtypes raise TypeError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "activations.hpp"
#include "common.hpp"
#include "parallel.hpp"

namespace densekit::bind {

namespace py = pybind11;

enum class DType { float32, float64 };

// Releases the GIL for a kernel call and, on the way back, tells the thread budget how long
// taking the GIL again took (a wait means another Python thread was running Python). With no
// other Python thread there is nothing to leave a core to: a slow retake is then the OS
// scheduling this process late on a loaded machine, and is not reported.
//
// A thread (a daemon thread, say) whose kernel returns while the interpreter finalizes must
// not take the GIL: CPython ends such a thread with pthread_exit, whose forced unwinding
// cannot pass a destructor (std::terminate: the process aborts). The thread then stays
// parked, holding nothing, until the process exits, which is what CPython 3.14 does itself.
// The destructor is noexcept(false) so that the unwinding passes it in the narrow race where
// finalization starts between the check and the retake.
class GilRelease {
 public:
  GilRelease() : state_(PyEval_SaveThread()) {}
  ~GilRelease() noexcept(false) {
    if (interpreter_finalizing()) park_forever();
    const auto start = std::chrono::steady_clock::now();
    PyEval_RestoreThread(state_);
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (other_python_threads()) note_gil_reacquire_wait(waited);
  }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  // Safe without the GIL: an atomic read of the runtime's finalizing state.
  static bool interpreter_finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing() != 0;
#else
    return _Py_IsFinalizing() != 0;
#endif
  }

  [[noreturn]] static void park_forever() {
    for (;;) std::this_thread::sleep_for(std::chrono::hours(24));
  }

  // With the GIL held: whether this interpreter has a thread state besides this one.
  static bool other_python_threads() {
    const PyThreadState* head = PyInterpreterState_ThreadHead(PyInterpreterState_Get());
    return head != nullptr && PyThreadState_Next(const_cast<PyThreadState*>(head)) != nullptr;
  }

  PyThreadState* state_;
};

inline std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

inline std::string shape_string(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    if (d > 0) s += ", ";
    s += std::to_string(a.shape(d));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

inline std::string shape_string(const std::vector<index_t>& shape) {
  std::string s = "(";
  for (size_t d = 0; d < shape.size(); ++d) {
    if (d > 0) s += ", ";
    s += std::to_string(shape[d]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

inline std::vector<index_t> shape_of(const py::array& a) {
  return std::vector<index_t>(a.shape(), a.shape() + a.ndim());
}

inline std::string dtype_string(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

[[noreturn]] inline void type_fail(const char* name, const std::string& what) {
  throw py::type_error(std::string(name) + ": " + what);
}

[[noreturn]] inline void value_fail(const char* name, const std::string& what) {
  throw py::value_error(std::string(name) + ": " + what);
}

// True/False (numpy.bool_ too); anything else would silently pick a branch by truthiness.
inline bool flag(py::handle obj, const char* name) {
  if (py::isinstance<py::bool_>(obj)) return obj.cast<bool>();
  if (py::isinstance(obj, py::module_::import("numpy").attr("bool_")))
    return PyObject_IsTrue(obj.ptr()) == 1;
  type_fail(name, "expected True or False, got " + type_name(obj));
}

// A NumPy array, C-contiguous, in native byte order. `expected` describes the dtype wanted.
inline py::array require_array(py::handle obj, const char* name, const char* expected) {
  if (!py::isinstance<py::array>(obj))
    type_fail(name, std::string("expected a numpy.ndarray of ") + expected + ", got " +
                        type_name(obj));
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().byteorder() == '>')
    type_fail(name, std::string("expected ") + expected + " in native byte order, got " +
                        dtype_string(a));
  return a;
}

inline void require_c_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    value_fail(name, "expected a C-contiguous array, got a non-contiguous view of shape " +
                         shape_string(a) + " (use numpy.ascontiguousarray)");
}

// A C-contiguous float32/float64 array.
inline py::array float_array(py::handle obj, const char* name, DType* dtype) {
  py::array a = require_array(obj, name, "float32 or float64");
  const int num = a.dtype().num();
  if (num == py::dtype::of<float>().num()) {
    *dtype = DType::float32;
  } else if (num == py::dtype::of<double>().num()) {
    *dtype = DType::float64;
  } else {
    type_fail(name, "expected dtype float32 or float64, got " + dtype_string(a));
  }
  require_c_contiguous(a, name);
  return a;
}

// run(float{}) or run(double{}) for the dtype: one generic body serves both element types.
template <class Run>
decltype(auto) for_dtype(DType dtype, Run&& run) {
  return dtype == DType::float32 ? run(float{}) : run(double{});
}

inline const char* dtype_name(DType d) { return d == DType::float32 ? "float32" : "float64"; }

// A C-contiguous array with the same float dtype as an earlier argument.
inline py::array float_array_like(py::handle obj, const char* name, DType dtype,
                                  const char* reference_name) {
  DType got;
  py::array a = require_array(obj, name, dtype_name(dtype));
  const int num = a.dtype().num();
  if (num == py::dtype::of<float>().num()) {
    got = DType::float32;
  } else if (num == py::dtype::of<double>().num()) {
    got = DType::float64;
  } else {
    type_fail(name, std::string("expected dtype ") + dtype_name(dtype) + " (the dtype of " +
                        reference_name + "), got " + dtype_string(a));
  }
  if (got != dtype)
    type_fail(name, std::string("expected dtype ") + dtype_name(dtype) + " (the dtype of " +
                        reference_name + "), got " + dtype_string(a));
  require_c_contiguous(a, name);
  return a;
}

inline void require_ndim(const py::array& a, const char* name, int ndim) {
  if (a.ndim() != ndim)
    value_fail(name, "expected a " + std::to_string(ndim) + "-d array, got shape " +
                         shape_string(a));
}

inline void require_shape(const py::array& a, const char* name,
                          const std::vector<index_t>& expected, const char* why = nullptr) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
  for (size_t d = 0; ok && d < expected.size(); ++d) ok = a.shape(d) == expected[d];
  if (!ok) {
    std::string message = "expected shape " + shape_string(expected);
    if (why != nullptr) message += std::string(" (") + why + ")";
    value_fail(name, message + ", got " + shape_string(a));
  }
}

inline void require_writeable(const py::array& a, const char* name) {
  if (!a.writeable()) value_fail(name, "expected a writeable array, got a read-only one");
}

inline bool memory_overlaps(const py::array& a, const py::array& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto a0 = reinterpret_cast<std::uintptr_t>(a.data());
  const auto b0 = reinterpret_cast<std::uintptr_t>(b.data());
  return a0 < b0 + static_cast<std::uintptr_t>(b.nbytes()) &&
         b0 < a0 + static_cast<std::uintptr_t>(a.nbytes());
}

struct __attribute__((visibility("hidden"))) Named {
  const py::array* array;
  const char* name;
};

// An output must not share memory with any input (nor another output).
inline void require_no_overlap(const py::array& out, const char* name,
                               std::initializer_list<Named> others) {
  for (const Named& other : others) {
    if (other.array != nullptr && memory_overlaps(out, *other.array))
      value_fail(name, std::string("must not share memory with ") + other.name);
  }
}

// An out= argument: None (returns false) or a writeable C-contiguous array of exactly the
// expected shape and dtype. Never converted.
inline bool out_array(py::handle obj, const char* name, DType dtype,
                      const std::vector<index_t>& shape, py::array* result) {
  if (obj.is_none()) return false;
  py::array a = require_array(obj, name, dtype_name(dtype));
  const int want = dtype == DType::float32 ? py::dtype::of<float>().num()
                                           : py::dtype::of<double>().num();
  if (a.dtype().num() != want)
    type_fail(name, std::string("expected dtype ") + dtype_name(dtype) + ", got " +
                        dtype_string(a) + " (out= arrays are never converted)");
  require_c_contiguous(a, name);
  require_shape(a, name, shape);
  require_writeable(a, name);
  *result = a;
  return true;
}

// NumPy's tracemalloc domain: aligned_array traces its data there, as NumPy traces its own, so
// that tracemalloc counts these arrays as it counts numpy.empty's.
constexpr unsigned int kNumpyTraceDomain = 389047;
// CPython's tracemalloc.h declares these without extern "C" (3.9-3.13), which under C++ names
// mangled symbols that libpython does not have; declared again here with C linkage.
namespace cpython {
extern "C" int PyTraceMalloc_Track(unsigned int domain, std::uintptr_t ptr, size_t size);
extern "C" int PyTraceMalloc_Untrack(unsigned int domain, std::uintptr_t ptr);
}  // namespace cpython

// A new C-contiguous array whose data starts on a 64-byte boundary (NumPy's own allocations
// start 16 bytes into a line): a row of 64 bytes then lies in one cache line, which the AMX
// tiles need to read an operand in place or accumulate into an output (a tile row across two
// lines halves their rate), as torch aligns its tensors. The storage belongs to a capsule
// that is the array's base.
inline py::array aligned_array(const py::dtype& dtype, const std::vector<py::ssize_t>& dims) {
  auto no_memory = [&](const std::string& size) {
    std::string shape;
    for (const py::ssize_t d : dims) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    const std::string what = "unable to allocate " + size + " for an array of shape (" + shape +
                             (dims.size() == 1 ? ",)" : ")") + " and dtype " +
                             std::string(py::str(dtype));
    PyErr_SetString(PyExc_MemoryError, what.c_str());
    throw py::error_already_set();
  };
  constexpr size_t kMaxBytes = size_t(1) << 62;  // beyond any machine; no overflow below it
  size_t bytes = static_cast<size_t>(dtype.itemsize());
  for (const py::ssize_t d : dims) {
    if (d < 0) throw py::value_error("array dimensions must be >= 0");
    if (d > 0 && bytes > kMaxBytes / static_cast<size_t>(d)) no_memory("more than 2^62 bytes");
    bytes *= static_cast<size_t>(d);
  }
  bytes = std::max<size_t>(64, (bytes + 63) / 64 * 64);
  void* data = std::aligned_alloc(64, bytes);
  if (data == nullptr) no_memory(std::to_string(bytes) + " bytes");
  py::capsule owner;
  try {
    owner = py::capsule(data, [](void* p) {
      cpython::PyTraceMalloc_Untrack(kNumpyTraceDomain, reinterpret_cast<std::uintptr_t>(p));
      std::free(p);
    });
  } catch (...) {
    std::free(data);
    throw;
  }
  cpython::PyTraceMalloc_Track(kNumpyTraceDomain, reinterpret_cast<std::uintptr_t>(data), bytes);
  return py::array(dtype, dims, data, owner);
}

template <typename T>
py::array new_array(const std::vector<index_t>& shape) {
  return aligned_array(py::dtype::of<T>(), std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

inline py::array new_array(DType dtype, const std::vector<index_t>& shape) {
  return dtype == DType::float32 ? new_array<float>(shape) : new_array<double>(shape);
}

template <typename T>
const T* cptr(const py::array& a) {
  return static_cast<const T*>(a.data());
}

template <typename T>
T* mptr(py::array& a) {
  return static_cast<T*>(a.mutable_data());
}

// None -> 0 (the process default); otherwise an int >= 1, capped at 2**16 (more threads than
// that are never run; a count beyond 64 bits is capped the same way).
inline int thread_count(py::handle obj, const char* name = "num_threads") {
  if (obj.is_none()) return 0;
  if (!py::isinstance<py::int_>(obj) || py::isinstance<py::bool_>(obj))
    type_fail(name, "expected an int >= 1 or None, got " + type_name(obj));
  int overflow = 0;
  const long long value = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  if (overflow < 0 || (overflow == 0 && value < 1))
    value_fail(name, "expected an int >= 1 or None, got " + py::str(obj).cast<std::string>());
  if (overflow > 0) return 1 << 16;
  return static_cast<int>(std::min<long long>(value, 1 << 16));
}

// A real number (int or float, not bool), finite unless allow_nonfinite.
inline double real_number(py::handle obj, const char* name, bool allow_nonfinite = false) {
  if (py::isinstance<py::bool_>(obj) ||
      !(py::isinstance<py::float_>(obj) || py::isinstance<py::int_>(obj) ||
        py::hasattr(obj, "__float__")))
    type_fail(name, "expected a real number, got " + type_name(obj));
  const double value = py::float_(py::reinterpret_borrow<py::object>(obj)).cast<double>();
  if (!allow_nonfinite && !std::isfinite(value))
    value_fail(name, "expected a finite number, got " + std::to_string(value));
  return value;
}

// Activation name (None means linear) and its alpha (None means the default).
Activation parse_activation(py::handle name, py::handle alpha, const char* arg = "activation");

}  // namespace densekit::bind
