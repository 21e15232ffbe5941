"""The kernel API of densekit: thin re-exports of the C++ core.

Every function checks its inputs before it releases the GIL, never converts or copies an
``out=`` array, and gives bitwise identical results for any ``num_threads``. Arrays are
NumPy arrays, C-contiguous, float32 or float64 (all of one call share one dtype).
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
    activation_backward,
    activation_forward,
    adam_step,
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_update_moving,
    build_info,
    clip_by_global_norm,
    dense_backward,
    dense_forward,
    feature_moments,
    huber,
    layer_norm_backward,
    layer_norm_forward,
    mae,
    mse,
    normalization_backward,
    normalization_forward,
    pack_weights,
    rmsprop_step,
    sgd_step,
    sigmoid_binary_cross_entropy,
    softmax_cross_entropy,
    take_rows,
)

__all__ = [
    "ACTIVATIONS",
    "ACTIVATION_INFO",
    "LOSSES",
    "OPTIMIZERS",
    "DenseChain",
    "PackedWeights",
    "activation_backward",
    "activation_forward",
    "adam_step",
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_update_moving",
    "build_info",
    "clip_by_global_norm",
    "dense_backward",
    "dense_forward",
    "feature_moments",
    "huber",
    "layer_norm_backward",
    "layer_norm_forward",
    "mae",
    "mse",
    "normalization_backward",
    "normalization_forward",
    "pack_weights",
    "rmsprop_step",
    "sgd_step",
    "sigmoid_binary_cross_entropy",
    "softmax_cross_entropy",
    "take_rows",
]
