// Registration functions of the binding files; module.cpp calls each once.
#pragma once

#include <pybind11/pybind11.h>

#include "common.hpp"

#include <memory>

namespace densekit::lowp {
struct PackedInt8;
struct Bf16DenseWeights;
}  // namespace densekit::lowp

namespace densekit::bind {

// The packed int8 weights of a densekit.kernels.QuantizedWeights and its shape (k, n), or
// null when obj is not one (bindings/lowp.cpp; DenseChain takes them as steps).
const lowp::PackedInt8* quantized_weights_of(pybind11::handle obj, index_t* k, index_t* n);
// Whether obj is a densekit.kernels.Bf16Weights, with its shape (k, m).
bool is_bf16_weights(pybind11::handle obj, index_t* k, index_t* m);
// Its packed weights now (a call holds them: a pack on another thread packs into a spare).
std::shared_ptr<const lowp::Bf16DenseWeights> bf16_weights_now(pybind11::handle obj);

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
