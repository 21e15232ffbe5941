// densekit._core: the extension module. This file defines the module, the thread
// controls and build facts; each kernel family registers itself from its own file.
// The binding files are the only code that includes pybind11.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "bindings.hpp"
#include "checks.hpp"
#include "gemm/gemm.hpp"
#include "parallel.hpp"

namespace py = pybind11;

namespace densekit::bind {
namespace {

py::dict build_info() {
  py::dict info;
  info["version"] = DENSEKIT_VERSION;
  info["openmp"] = openmp_enabled();
  // The build's DENSEKIT_OPENMP setting: "auto", "on" or "off" (see CMakeLists.txt).
  info["openmp_mode"] = DENSEKIT_OPENMP_MODE;
#if defined(_OPENMP)
  info["openmp_version"] = static_cast<int>(_OPENMP);
#else
  info["openmp_version"] = py::none();
#endif
  info["hardware_threads"] = hardware_threads();
  // Parallel regions: densekit's own pool (default) or OpenMP (DENSEKIT_THREADING=openmp,
  // possible only when OpenMP is compiled in); spin_us: how long idle pool workers spin.
  info["threading"] = threading() == Threading::openmp && openmp_enabled() ? "openmp" : "pool";
  info["spin_us"] = spin_microseconds();
  info["gemm_kernel_float32"] = gemm::gemm_kernel_name<float>();
  info["gemm_kernel_float64"] = gemm::gemm_kernel_name<double>();
  // The matrix-product engine's ISA: chosen once (at import) from the CPU's features,
  // lowered by DENSEKIT_ISA when set; gemm_isa_note says why a request was not honoured.
  const gemm::IsaChoice& choice = gemm::isa_choice();
  const gemm::CpuFeatures& cpu = gemm::cpu_features();
  info["gemm_isa"] = gemm::isa_name(choice.isa);
  info["gemm_isa_best"] = gemm::isa_name(choice.best);
  info["gemm_isa_forced"] = choice.forced;
  info["gemm_isa_requested"] = choice.requested.empty() ? py::object(py::none())
                                                        : py::object(py::str(choice.requested));
  info["gemm_isa_note"] = choice.note;
  py::list available;
  py::dict kernels;
  for (gemm::Isa isa : {gemm::Isa::avx512, gemm::Isa::avx2, gemm::Isa::portable}) {
    if (!gemm::isa_supported(isa)) continue;
    available.append(gemm::isa_name(isa));
    kernels[gemm::isa_name(isa)] = py::make_tuple(gemm::gemm_kernel_name<float>(isa),
                                                  gemm::gemm_kernel_name<double>(isa));
  }
  info["gemm_isas_available"] = available;
  info["gemm_kernels_by_isa"] = kernels;
  py::dict features;
  features["sse2"] = cpu.sse2;
  features["avx"] = cpu.avx;
  features["avx2"] = cpu.avx2;
  features["fma"] = cpu.fma;
  features["avx512f"] = cpu.avx512f;
  features["avx512bw"] = cpu.avx512bw;
  features["avx512vl"] = cpu.avx512vl;
  features["amx_tile"] = cpu.amx_tile;
  features["avx512_bf16"] = cpu.avx512_bf16;
  features["avx512_vnni"] = cpu.avx512_vnni;
  features["amx_bf16"] = cpu.amx_bf16;
  features["amx_int8"] = cpu.amx_int8;
  info["cpu_features"] = features;
#if defined(__VERSION__)
  info["compiler"] = __VERSION__;
#endif
  return info;
}

}  // namespace
}  // namespace densekit::bind

// Not declared free-threading safe (no py::mod_gil_not_used()): GilRelease walks the
// interpreter's thread list, which only the GIL guards, and the thread budget reads Python's
// activity from waits to retake the GIL. A free-threaded interpreter (3.13t, 3.14t) therefore
// turns the GIL on when it imports this module, and no free-threaded wheels are built.
PYBIND11_MODULE(_core, m) {
  using namespace densekit;
  m.doc() = "densekit compute core: multi-threaded C++ kernels; every compute call releases the GIL.";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  m.def("get_num_threads", &default_num_threads,
        "The process-wide default number of threads used by kernels called with "
        "num_threads=None.");
  m.def(
      "set_num_threads",
      [](py::handle n) {
        const int value = bind::thread_count(n, "n");
        if (value == 0) {
          reset_default_num_threads();
        } else {
          set_default_num_threads(value);
        }
      },
      py::arg("n"),
      "Set the process-wide default number of threads (honoured in every thread); None goes "
      "back to the automatic default, which concurrent callers share.");
  m.def("num_threads_is_explicit", &default_is_explicit,
        "Whether set_num_threads(n) fixed the default (else it is automatic and shared).");
  m.def("hardware_threads", &hardware_threads,
        "CPUs this process may run on (affinity), capped by OMP_NUM_THREADS when set.");
  m.def("build_info", &bind::build_info, "Facts about this build: OpenMP, kernels in use.");

  // Test hook: a task inside a parallel region throws; the error must surface as ValueError
  // on the calling thread after the region, with the GIL released during the region.
  m.def(
      "_raise_in_parallel_region",
      [](index_t n_tasks, int num_threads, index_t failing_task) {
        const bind::GilRelease nogil;
        parallel_for(n_tasks, num_threads, [&](index_t task) {
          if (task == failing_task)
            throw ArgumentError("task " + std::to_string(task) + " failed on purpose");
        });
      },
      py::arg("n_tasks"), py::arg("num_threads"), py::arg("failing_task"));

  // Test hook: how many distinct threads ran the tasks of one region of a kernel-like call
  // (each task sleeps, so overlapping callers really overlap).
  m.def(
      "_probe_region_threads",
      [](index_t n_tasks, py::handle num_threads, int sleep_ms) {
        const int threads = resolve_num_threads(bind::thread_count(num_threads));
        const bind::GilRelease nogil;
        std::vector<int> ran(static_cast<size_t>(std::max<index_t>(n_tasks, 0)), 0);
        parallel_tasks(n_tasks, threads, [&](int participant, index_t task) {
          ran[static_cast<size_t>(task)] = participant;
          std::this_thread::sleep_for(std::chrono::milliseconds(sleep_ms));
        });
        std::sort(ran.begin(), ran.end());
        return static_cast<int>(std::unique(ran.begin(), ran.end()) - ran.begin());
      },
      py::arg("n_tasks"), py::arg("num_threads") = py::none(), py::arg("sleep_ms") = 0);

  m.def(
      "_forget_busy_python", &forget_python_thread_busy,
      "Test hook: forget that a Python thread was seen busy.");

  // The engine's tuning knobs are read now: a bad DENSEKIT_GEMM_TUNE fails the import with
  // its message, instead of a kernel call later with the GIL released.
  gemm::read_tuning();

  bind::bind_activations(m);
  bind::bind_dense(m);
  bind::bind_gemm_testing(m);
  bind::bind_losses(m);
  bind::bind_metrics(m);
  bind::bind_optim(m);
  bind::bind_data(m);
  bind::bind_lowp(m);
  bind::bind_normalization(m);
}
