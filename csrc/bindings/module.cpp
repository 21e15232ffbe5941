// densekit._core: the extension module. This file defines the module, the thread
// controls and build facts; each kernel family registers itself from its own file.
// The binding files are the only code that includes pybind11.
#include <pybind11/pybind11.h>

#include <string>

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
#if defined(_OPENMP)
  info["openmp_version"] = static_cast<int>(_OPENMP);
#else
  info["openmp_version"] = py::none();
#endif
  info["hardware_threads"] = hardware_threads();
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
  info["cpu_features"] = features;
#if defined(__VERSION__)
  info["compiler"] = __VERSION__;
#endif
  return info;
}

}  // namespace
}  // namespace densekit::bind

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
  using namespace densekit;
  m.doc() = "densekit compute core: OpenMP C++ kernels; every compute call releases the GIL.";

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
        if (value == 0) bind::value_fail("n", "expected an int >= 1, got None");
        set_default_num_threads(value);
      },
      py::arg("n"), "Set the process-wide default number of threads (honoured in every thread).");
  m.def("hardware_threads", &hardware_threads,
        "CPUs this process may run on (affinity), capped by OMP_NUM_THREADS when set.");
  m.def("build_info", &bind::build_info, "Facts about this build: OpenMP, kernels in use.");

  bind::bind_activations(m);
  bind::bind_dense(m);
  bind::bind_gemm_testing(m);
  bind::bind_losses(m);
  bind::bind_optim(m);
}
