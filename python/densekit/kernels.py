"""The kernel API of densekit: thin re-exports of the C++ core.

Every function checks its inputs before it releases the GIL, never converts or copies an
``out=`` array, and gives bitwise identical results for any ``num_threads``. Arrays are
NumPy arrays, C-contiguous, float32 or float64 (all of one call share one dtype).
The optimizer steps follow torch.optim's rules by default and Keras 3's with
``convention="keras"`` (where the two differ: epsilon placement, the momentum buffer,
weight decay); ``lion_step`` has Keras's one rule.
Shapes use Keras's layout: ``x`` is (n, k) for n samples of k features, the weight ``w`` is
(k, m) for m units, the bias ``b`` is (m,).
"""

from __future__ import annotations

from ._core import (
    ACTIVATION_INFO,
    ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    DenseChain,
    PackedWeights,
    QuantizedWeights,
    activation_backward,
    activation_forward,
    adagrad_step,
    adam_step,
    adamax_step,
    bf16_config,
    build_info,
    clip_by_global_norm,
    dense_backward,
    dense_forward,
    dense_forward_int8,
    from_bfloat16,
    huber,
    int8_config,
    lion_step,
    mae,
    matmul_bf16,
    mse,
    nadam_step,
    pack_weights,
    rmsprop_step,
    sgd_step,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    take_rows,
    to_bfloat16,
)

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_INFO",
    "LOSSES",
    "OPTIMIZERS",
    "DenseChain",
    "PackedWeights",
    "QuantizedWeights",
    "activation_backward",
    "activation_forward",
    "adagrad_step",
    "adam_step",
    "adamax_step",
    "bf16_config",
    "build_info",
    "clip_by_global_norm",
    "dense_backward",
    "dense_forward",
    "dense_forward_int8",
    "from_bfloat16",
    "huber",
    "int8_config",
    "lion_step",
    "mae",
    "matmul_bf16",
    "mse",
    "nadam_step",
    "pack_weights",
    "rmsprop_step",
    "sgd_step",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "take_rows",
    "to_bfloat16",
]
