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
    build_info,
    categorical_hinge,
    clip_by_global_norm,
    cosine_similarity,
    dense_backward,
    dense_forward,
    hinge,
    huber,
    kl_divergence,
    log_cosh,
    mae,
    mape,
    mse,
    msle,
    pack_weights,
    poisson,
    rmsprop_step,
    sgd_step,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_cross_entropy,
    softmax_cross_entropy,
    softmax_focal_cross_entropy,
    squared_hinge,
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
    "build_info",
    "categorical_hinge",
    "clip_by_global_norm",
    "cosine_similarity",
    "dense_backward",
    "dense_forward",
    "hinge",
    "huber",
    "kl_divergence",
    "log_cosh",
    "mae",
    "mape",
    "mse",
    "msle",
    "pack_weights",
    "poisson",
    "rmsprop_step",
    "sgd_step",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_cross_entropy",
    "softmax_cross_entropy",
    "softmax_focal_cross_entropy",
    "squared_hinge",
    "take_rows",
]
