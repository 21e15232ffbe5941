# Type information for densekit._core, the C++ extension module.
from collections.abc import Sequence
from typing import Any, Literal, SupportsFloat, SupportsIndex, TypedDict

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.int32] | npt.NDArray[np.int64]
Reduction = Literal["mean", "sum", "none"]
ActivationName = Literal[
    "linear",
    "relu",
    "leaky_relu",
    "elu",
    "sigmoid",
    "tanh",
    "softplus",
    "gelu",
    "gelu_tanh",
    "softmax",
]

class ActivationInfo(TypedDict):
    alpha: float | None  # the default alpha, None when the activation takes none
    needs_preactivation: bool  # the derivative needs z (leaky_relu: only for alpha <= 0)
    derivative_from_output: Literal["always", "never", "alpha > 0"]
    fused_in_tile: bool  # applied on registers inside the matrix-product tile
    vector_math: bool  # has a vector form on ISAs with vector math
    elementwise: bool  # False for softmax (over the last axis)

# The activation table (csrc/activation_table.hpp), in its row order.
ACTIVATIONS: tuple[ActivationName, ...]
ACTIVATION_INFO: dict[ActivationName, ActivationInfo]
LOSSES: tuple[str, ...]
OPTIMIZERS: tuple[str, ...]

def get_num_threads() -> int: ...
def set_num_threads(n: int | None) -> None: ...
def num_threads_is_explicit() -> bool: ...
def hardware_threads() -> int: ...
def build_info() -> dict[str, object]: ...
def activation_forward(
    z: FloatArray,
    activation: ActivationName | None,
    *,
    out: FloatArray | None = None,
    alpha: float | None = None,
    num_threads: int | None = None,
) -> FloatArray: ...
def activation_backward(
    dy: FloatArray,
    activation: ActivationName | None,
    *,
    y: FloatArray | None = None,
    z: FloatArray | None = None,
    out: FloatArray | None = None,
    alpha: float | None = None,
    num_threads: int | None = None,
) -> FloatArray: ...

class PackedWeights:
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    @property
    def weights(self) -> FloatArray: ...
    @property
    def packed_nbytes(self) -> int: ...

def pack_weights(w: FloatArray, *, num_threads: int | None = None) -> PackedWeights: ...
def dense_forward(
    x: FloatArray,
    w: FloatArray | PackedWeights,
    b: FloatArray | None = None,
    activation: ActivationName | None = "linear",
    *,
    out: FloatArray | None = None,
    preact_out: FloatArray | None = None,
    alpha: float | None = None,
    num_threads: int | None = None,
) -> FloatArray: ...

class DenseChain:
    """A model's inference as one kernel call: each step is ``(w, b, activation)`` or
    ``(w, b, activation, alpha)``, ``w`` None for an activation alone. The arrays are held
    (not copied): changes of their values show in the next call."""

    def __init__(
        self,
        steps: Sequence[
            tuple[FloatArray | None, FloatArray | None, ActivationName | None]
            | tuple[FloatArray | None, FloatArray | None, ActivationName | None, float | None]
        ],
    ) -> None: ...
    def __call__(
        self, x: FloatArray, *, out: FloatArray | None = None, num_threads: int | None = None
    ) -> FloatArray: ...
    def __len__(self) -> int: ...
    @property
    def input_width(self) -> int: ...
    @property
    def output_width(self) -> int: ...

def dense_backward(
    dy: FloatArray,
    x: FloatArray,
    w: FloatArray,
    y: FloatArray | None = None,
    preact: FloatArray | None = None,
    activation: ActivationName | None = "linear",
    *,
    need_dx: bool = True,
    need_db: bool = True,
    need_dw: bool = True,
    dx_out: FloatArray | None = None,
    dw_out: FloatArray | None = None,
    db_out: FloatArray | None = None,
    accumulate: bool = False,
    alpha: float | None = None,
    num_threads: int | None = None,
) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]: ...
def mse(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def mae(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def huber(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
    delta: float = 1.0,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def softmax_cross_entropy(
    prediction: FloatArray,
    target: FloatArray | LabelArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
    label_smoothing: float = 0.0,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def sigmoid_binary_cross_entropy(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
    label_smoothing: float = 0.0,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def sgd_step(
    param: FloatArray,
    grad: FloatArray,
    *,
    lr: SupportsFloat,
    momentum: float = 0.0,
    velocity: FloatArray | None = None,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    dampening: float = 0.0,
    maximize: bool = False,
    step: SupportsIndex | None = None,
    num_threads: int | None = None,
) -> None: ...
def adam_step(
    param: FloatArray,
    grad: FloatArray,
    m: FloatArray,
    v: FloatArray,
    *,
    step: SupportsIndex,
    lr: SupportsFloat,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    v_max: FloatArray | None = None,
    maximize: bool = False,
    num_threads: int | None = None,
) -> None: ...
def rmsprop_step(
    param: FloatArray,
    grad: FloatArray,
    square_avg: FloatArray,
    *,
    lr: SupportsFloat,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    velocity: FloatArray | None = None,
    centered: bool = False,
    grad_avg: FloatArray | None = None,
    maximize: bool = False,
    num_threads: int | None = None,
) -> None: ...
def clip_by_global_norm(
    grads: Sequence[FloatArray], max_norm: SupportsFloat, *, num_threads: int | None = None
) -> float: ...
def take_rows(
    source: npt.NDArray[np.generic],
    indices: LabelArray,
    *,
    out: npt.NDArray[np.generic] | None = None,
    num_threads: int | None = None,
) -> npt.NDArray[np.generic]: ...
def _raise_in_parallel_region(n_tasks: int, num_threads: int, failing_task: int) -> None: ...
def _probe_region_threads(
    n_tasks: int, num_threads: int | None = None, sleep_ms: int = 0
) -> int: ...
def _forget_busy_python() -> None: ...
def _fma_peak(dtype: str, steps: int, *, num_threads: int | None = None) -> float: ...
