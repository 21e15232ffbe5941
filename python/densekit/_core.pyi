# Type information for densekit._core, the C++ extension module.
from collections.abc import Sequence
from typing import Any, Literal, SupportsFloat, SupportsIndex, TypedDict

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
LabelArray = npt.NDArray[np.int32] | npt.NDArray[np.int64]
Reduction = Literal["mean", "sum", "none"]
Convention = Literal["torch", "keras"]
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
    "silu",
    "selu",
    "relu6",
    "hard_sigmoid",
    "softsign",
    "mish",
    "log_softmax",
    "exponential",
]

class ActivationInfo(TypedDict):
    alpha: float | None  # the default alpha, None when the activation takes none
    needs_preactivation: bool  # the derivative needs z (leaky_relu: only for alpha <= 0)
    derivative_from_output: Literal["always", "never", "alpha > 0"]
    fused_in_tile: bool  # applied on registers inside the matrix-product tile
    vector_math: bool  # has a vector form on ISAs with vector math
    elementwise: bool  # False for softmax and log_softmax (over the last axis)

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
def relu_forward(
    z: FloatArray,
    *,
    max_value: float | None = None,
    negative_slope: float = 0.0,
    threshold: float = 0.0,
    out: FloatArray | None = None,
    num_threads: int | None = None,
) -> FloatArray:
    """Keras's ``relu(z, negative_slope, max_value, threshold)`` elementwise.

    ``min(z, max_value)`` above the threshold, ``negative_slope * (z - threshold)`` below
    it, 0 at it (NaN stays NaN); computed as Keras computes it (torch backend), so float32
    gives its bits. Every parameter is a number >= 0; ``max_value=None`` sets no cap.
    ``out`` may be ``z`` itself.
    """

def relu_backward(
    dy: FloatArray,
    z: FloatArray,
    *,
    max_value: float | None = None,
    negative_slope: float = 0.0,
    threshold: float = 0.0,
    out: FloatArray | None = None,
    num_threads: int | None = None,
) -> FloatArray:
    """``dz = dy * relu'(z)`` for ``relu_forward``'s parameters.

    The derivative is 1 for ``threshold < z <= max_value``, ``negative_slope`` below the
    threshold and 0 elsewhere (at the threshold, above the cap, at NaN). ``out`` may be
    ``dy`` itself.
    """

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
def mape(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def msle(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def log_cosh(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def poisson(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def kl_divergence(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def hinge(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def squared_hinge(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def categorical_hinge(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def cosine_similarity(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def sigmoid_focal_cross_entropy(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
    label_smoothing: float = 0.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
    apply_class_balancing: bool = False,
) -> tuple[float | FloatArray, FloatArray | None]: ...
def softmax_focal_cross_entropy(
    prediction: FloatArray,
    target: FloatArray,
    *,
    reduction: Reduction = "mean",
    sample_weight: FloatArray | None = None,
    compute_grad: bool = True,
    grad_out: FloatArray | None = None,
    num_threads: int | None = None,
    label_smoothing: float = 0.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
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
    convention: Convention = "torch",
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
    decoupled_weight_decay: bool | None = None,
    v_max: FloatArray | None = None,
    maximize: bool = False,
    convention: Convention = "torch",
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
    convention: Convention = "torch",
    num_threads: int | None = None,
) -> None: ...
def nadam_step(
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
    decoupled_weight_decay: bool | None = None,
    momentum_decay: float | None = None,
    mu_product: float | None = None,
    maximize: bool = False,
    convention: Convention = "torch",
    num_threads: int | None = None,
) -> float: ...
def adamax_step(
    param: FloatArray,
    grad: FloatArray,
    m: FloatArray,
    u: FloatArray,
    *,
    step: SupportsIndex,
    lr: SupportsFloat,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    maximize: bool = False,
    convention: Convention = "torch",
    num_threads: int | None = None,
) -> None: ...
def adagrad_step(
    param: FloatArray,
    grad: FloatArray,
    sum: FloatArray,
    *,
    lr: SupportsFloat,
    step: SupportsIndex | None = None,
    lr_decay: float = 0.0,
    eps: float = 1e-10,
    weight_decay: float = 0.0,
    maximize: bool = False,
    convention: Convention = "torch",
    num_threads: int | None = None,
) -> None: ...
def lion_step(
    param: FloatArray,
    grad: FloatArray,
    m: FloatArray,
    *,
    lr: SupportsFloat,
    beta1: float = 0.9,
    beta2: float = 0.99,
    weight_decay: float = 0.0,
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
def empty(
    shape: SupportsIndex | Sequence[SupportsIndex], dtype: npt.DTypeLike = "float32"
) -> npt.NDArray[Any]: ...
def zeros(
    shape: SupportsIndex | Sequence[SupportsIndex], dtype: npt.DTypeLike = "float32"
) -> npt.NDArray[Any]: ...

# Metric kernels (csrc/metrics.hpp): prediction and target (n, d); float64 sums.
def confusion_counts(
    prediction: FloatArray,
    target: FloatArray,
    thresholds: FloatArray,
    *,
    sample_weight: FloatArray | None = None,
    column_weight: FloatArray | None = None,
    top_k: int | None = None,
    class_id: int | None = None,
    multi_label: bool = False,
    out: npt.NDArray[np.float64] | None = None,
    accumulate: bool = False,
    num_threads: int | None = None,
) -> npt.NDArray[np.float64]: ...
def top_k_hits(
    prediction: FloatArray,
    target: LabelArray | FloatArray,
    k: int,
    *,
    sample_weight: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[float, float]: ...

# Normalization kernels (csrc/normalization.hpp): x is (n, k), statistics per feature (k,),
# layer norm's per row (n,).
def feature_moments(
    x: FloatArray,
    *,
    mean_out: FloatArray | None = None,
    variance_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[FloatArray, FloatArray]: ...
def batch_norm_forward(
    x: FloatArray,
    gamma: FloatArray | None,
    beta: FloatArray | None,
    moving_mean: FloatArray | None = None,
    moving_variance: FloatArray | None = None,
    *,
    training: bool,
    epsilon: SupportsFloat = 1e-3,
    out: FloatArray | None = None,
    mean_out: FloatArray | None = None,
    variance_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> FloatArray | tuple[FloatArray, FloatArray, FloatArray]: ...
def batch_norm_backward(
    dy: FloatArray,
    x: FloatArray,
    gamma: FloatArray | None,
    mean: FloatArray,
    variance: FloatArray,
    *,
    training: bool,
    epsilon: SupportsFloat = 1e-3,
    need_dx: bool = True,
    need_dgamma: bool = True,
    need_dbeta: bool = True,
    dx_out: FloatArray | None = None,
    dgamma_out: FloatArray | None = None,
    dbeta_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]: ...
def batch_norm_update_moving(
    moving_mean: FloatArray,
    moving_variance: FloatArray,
    mean: FloatArray,
    variance: FloatArray,
    *,
    momentum: SupportsFloat = 0.99,
) -> None: ...
def layer_norm_forward(
    x: FloatArray,
    gamma: FloatArray | None,
    beta: FloatArray | None,
    *,
    epsilon: SupportsFloat = 1e-3,
    out: FloatArray | None = None,
    mean_out: FloatArray | None = None,
    inv_std_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
def layer_norm_backward(
    dy: FloatArray,
    x: FloatArray,
    gamma: FloatArray | None,
    mean: FloatArray,
    inv_std: FloatArray,
    *,
    need_dx: bool = True,
    need_dgamma: bool = True,
    need_dbeta: bool = True,
    dx_out: FloatArray | None = None,
    dgamma_out: FloatArray | None = None,
    dbeta_out: FloatArray | None = None,
    num_threads: int | None = None,
) -> tuple[FloatArray | None, FloatArray | None, FloatArray | None]: ...
def normalization_forward(
    x: FloatArray,
    mean: FloatArray,
    variance: FloatArray,
    *,
    invert: bool = False,
    out: FloatArray | None = None,
    num_threads: int | None = None,
) -> FloatArray: ...
def normalization_backward(
    dy: FloatArray,
    variance: FloatArray,
    *,
    invert: bool = False,
    out: FloatArray | None = None,
    num_threads: int | None = None,
) -> FloatArray: ...
def _raise_in_parallel_region(n_tasks: int, num_threads: int, failing_task: int) -> None: ...
def _probe_region_threads(
    n_tasks: int, num_threads: int | None = None, sleep_ms: int = 0
) -> int: ...
def _forget_busy_python() -> None: ...
def _fma_peak(dtype: str, steps: int, *, num_threads: int | None = None) -> float: ...
def _loss_log_isa_test(isa: str, x: FloatArray, *, log1p: bool = False) -> FloatArray: ...

# Low precision (csrc/lowp): bfloat16 arrays are NumPy arrays of ml_dtypes.bfloat16.
Bf16Array = npt.NDArray[Any]

class LowpConfig(TypedDict):
    path: str  # in use: "avx512_bf16" / "avx512_vnni", or "emulated"
    best: str
    forced: bool  # DENSEKIT_BF16 / DENSEKIT_INT8 chose it
    requested: str
    note: str  # why a request was not honoured
    available: list[str]

def to_bfloat16(
    x: npt.NDArray[np.float32], *, out: Bf16Array | None = None, num_threads: int | None = None
) -> Bf16Array: ...
def from_bfloat16(
    x: Bf16Array, *, out: npt.NDArray[np.float32] | None = None, num_threads: int | None = None
) -> npt.NDArray[np.float32]: ...
def matmul_bf16(
    a: Bf16Array,
    b: Bf16Array,
    *,
    out: npt.NDArray[np.float32] | Bf16Array | None = None,
    trans_a: bool = False,
    trans_b: bool = False,
    bias: npt.NDArray[np.float32] | None = None,
    preact: npt.NDArray[np.float32] | None = None,
    activation: ActivationName | None = "linear",
    alpha: float | None = None,
    accumulate: bool = False,
    out_dtype: Literal["float32", "bfloat16"] = "float32",
    num_threads: int | None = None,
) -> npt.NDArray[np.float32] | Bf16Array: ...
def _matmul_bf16_path_test(
    path: str,
    a: Bf16Array,
    b: Bf16Array,
    *,
    out: npt.NDArray[np.float32] | Bf16Array | None = None,
    trans_a: bool = False,
    trans_b: bool = False,
    bias: npt.NDArray[np.float32] | None = None,
    preact: npt.NDArray[np.float32] | None = None,
    activation: ActivationName | None = "linear",
    alpha: float | None = None,
    accumulate: bool = False,
    out_dtype: Literal["float32", "bfloat16"] = "float32",
    num_threads: int | None = None,
) -> npt.NDArray[np.float32] | Bf16Array: ...
def bf16_config() -> LowpConfig: ...

class Bf16Weights:
    def __init__(
        self,
        w: npt.NDArray[np.float32],
        *,
        transposed: bool = False,
        num_threads: int | None = None,
    ) -> None: ...
    def pack(self, w: npt.NDArray[np.float32], *, num_threads: int | None = None) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def transposed(self) -> bool: ...

def dense_forward_bf16(
    x: npt.NDArray[np.float32] | Bf16Array,
    w: Bf16Weights,
    b: npt.NDArray[np.float32] | None = None,
    *,
    activation: ActivationName | None = "linear",
    alpha: float | None = None,
    out: npt.NDArray[np.float32] | Bf16Array | None = None,
    preact_out: npt.NDArray[np.float32] | None = None,
    out_dtype: Literal["float32", "bfloat16"] = "float32",
    num_threads: int | None = None,
) -> npt.NDArray[np.float32] | Bf16Array: ...
def dense_backward_bf16(
    dy: npt.NDArray[np.float32] | Bf16Array,
    x: npt.NDArray[np.float32] | Bf16Array,
    w: Bf16Weights,
    *,
    y: npt.NDArray[np.float32] | Bf16Array | None = None,
    preact: npt.NDArray[np.float32] | None = None,
    activation: ActivationName | None = "linear",
    alpha: float | None = None,
    need_dx: bool = True,
    need_dw: bool = True,
    need_db: bool = True,
    dx_out: npt.NDArray[np.float32] | Bf16Array | None = None,
    dw_out: npt.NDArray[np.float32] | None = None,
    db_out: npt.NDArray[np.float32] | None = None,
    accumulate: bool = False,
    dx_dtype: Literal["float32", "bfloat16"] = "float32",
    num_threads: int | None = None,
) -> tuple[
    npt.NDArray[np.float32] | Bf16Array | None,
    npt.NDArray[np.float32] | None,
    npt.NDArray[np.float32] | None,
]: ...

class QuantizedWeights:
    @staticmethod
    def quantize(
        w: npt.NDArray[np.float32], *, num_threads: int | None = None
    ) -> QuantizedWeights: ...
    @staticmethod
    def from_int8(
        weights: npt.NDArray[np.int8],
        scales: npt.NDArray[np.float32] | None,
        *,
        num_threads: int | None = None,
    ) -> QuantizedWeights: ...
    @property
    def weights(self) -> npt.NDArray[np.int8]: ...
    @property
    def scales(self) -> npt.NDArray[np.float32]: ...
    @property
    def shape(self) -> tuple[int, int]: ...

def dense_forward_int8(
    x: npt.NDArray[np.float32],
    w: QuantizedWeights,
    b: npt.NDArray[np.float32] | None = None,
    *,
    activation: ActivationName | None = "linear",
    alpha: float | None = None,
    out: npt.NDArray[np.float32] | None = None,
    num_threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def _dense_int8_path_test(
    path: str,
    x: npt.NDArray[np.float32],
    w: QuantizedWeights,
    b: npt.NDArray[np.float32] | None = None,
    *,
    activation: ActivationName | None = "linear",
    alpha: float | None = None,
    out: npt.NDArray[np.float32] | None = None,
    num_threads: int | None = None,
) -> npt.NDArray[np.float32]: ...
def int8_config() -> LowpConfig: ...
