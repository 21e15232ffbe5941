// Registration functions of the binding files; module.cpp calls each once.
#pragma once

#include <pybind11/pybind11.h>

namespace densekit::bind {

void bind_activations(pybind11::module_& m);
void bind_dense(pybind11::module_& m);
void bind_gemm_testing(pybind11::module_& m);
void bind_losses(pybind11::module_& m);
void bind_metrics(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
void bind_data(pybind11::module_& m);
void bind_lowp(pybind11::module_& m);
void bind_normalization(pybind11::module_& m);

}  // namespace densekit::bind
