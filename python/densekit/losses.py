"""Losses with Keras's names, each computed (value and gradient together) by one loss kernel.

Keras semantics: the per-sample loss is the mean over the last axis for the elementwise
losses, and ``"sum_over_batch_size"`` (the default) divides the weighted sum of per-sample
losses by the batch size. The cross-entropies work on logits: with ``from_logits=False`` a
model ending in softmax (categorical) or sigmoid (binary) is trained on the logits of that
last layer with the fused kernel, whose gradient goes straight to the logits; called on their
own, they take probabilities and turn them into logits first (clipped to [1e-7, 1 - 1e-7], as
Keras clips).
"""

from __future__ import annotations

import numpy as np

from . import _registry, kernels

_REDUCTIONS = {"sum_over_batch_size": "mean", "sum": "sum", "none": "none", None: "none"}
_EPSILON = 1e-7


class Loss(_registry.Configurable):
    """Base class. ``__call__(y_true, y_pred, sample_weight=None)`` returns the loss."""

    kernel_name: str = ""
    # "labels": integer class labels (n,); "dense": floats shaped like the prediction.
    target_kind = "dense"
    # The output activation this loss absorbs when from_logits is False (None: none).
    fused_activation: str | None = None
    from_logits = True

    def __init__(self, reduction="sum_over_batch_size", name=None):
        if reduction not in _REDUCTIONS:
            raise ValueError(
                f"reduction: expected 'sum_over_batch_size', 'sum' or 'none', got {reduction!r}"
            )
        self.reduction = reduction
        self.name = name or _NAME_OF_CLASS[type(self).__name__]

    @property
    def kernel(self):
        return getattr(kernels, self.kernel_name)

    @property
    def kernel_reduction(self) -> str:
        return _REDUCTIONS[self.reduction]

    def kernel_options(self) -> dict:
        """The loss's own keyword arguments to its kernel (delta, label_smoothing)."""
        return {}

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = np.ascontiguousarray(y_pred)
        if y_pred.dtype not in (np.float32, np.float64):
            y_pred = y_pred.astype(np.float32)
        if y_pred.ndim == 1:
            y_pred = y_pred[:, None]
        width = y_pred.shape[1] if y_pred.ndim == 2 else 1
        target = self.prepare_target(y_true, y_pred.shape[0], width, y_pred.dtype, "y_true")
        if not self.from_logits:
            y_pred = self._logits_of(y_pred)
        if sample_weight is not None:
            sample_weight = np.ascontiguousarray(sample_weight, dtype=y_pred.dtype)
        loss, _ = self.kernel(
            y_pred,
            target,
            reduction=self.kernel_reduction,
            sample_weight=sample_weight,
            compute_grad=False,
            **self.kernel_options(),
        )
        return loss

    def _logits_of(self, probabilities):
        raise NotImplementedError

    def prepare_target(self, y, n: int, width: int, dtype, name: str = "y") -> np.ndarray:
        """``y`` as the kernel's target array for n predictions of ``width`` outputs."""
        y = _as_array(y, name)
        if y.ndim == 1 and width == 1:
            y = y[:, None]
        if y.shape != (n, width):
            raise ValueError(
                f"{name}: expected shape ({n}, {width}) for {self.name}, got {y.shape}"
            )
        if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
            raise TypeError(f"{name}: expected numbers, got dtype {y.dtype}")
        return np.ascontiguousarray(y, dtype=dtype)

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}


def _as_array(y, name: str) -> np.ndarray:
    try:
        return np.asarray(y)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: cannot convert to an array ({error})") from None


class MeanSquaredError(Loss):
    kernel_name = "mse"


class MeanAbsoluteError(Loss):
    kernel_name = "mae"


class Huber(Loss):
    kernel_name = "huber"

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name=None):
        super().__init__(reduction, name)
        if not (isinstance(delta, (int, float)) and delta > 0):
            raise ValueError(f"delta: expected a number > 0, got {delta!r}")
        self.delta = float(delta)

    def kernel_options(self) -> dict:
        return {"delta": self.delta}

    def get_config(self) -> dict:
        return {**super().get_config(), "delta": self.delta}


class _CrossEntropy(Loss):
    def __init__(
        self, from_logits=False, label_smoothing=0.0, reduction="sum_over_batch_size", name=None
    ):
        super().__init__(reduction, name)
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits: expected True or False, got {from_logits!r}")
        if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing <= 1):
            raise ValueError(
                f"label_smoothing: expected a number in [0, 1], got {label_smoothing!r}"
            )
        self.from_logits = bool(from_logits)
        self.label_smoothing = float(label_smoothing)

    def kernel_options(self) -> dict:
        return {"label_smoothing": self.label_smoothing}

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(from_logits=self.from_logits, label_smoothing=self.label_smoothing)
        return config


class BinaryCrossentropy(_CrossEntropy):
    """Sigmoid cross-entropy; targets in [0, 1] shaped like the prediction."""

    kernel_name = "sigmoid_binary_cross_entropy"
    fused_activation = "sigmoid"

    def _logits_of(self, probabilities):
        p = np.clip(probabilities, _EPSILON, 1 - _EPSILON)
        return np.ascontiguousarray(np.log(p) - np.log1p(-p))


class CategoricalCrossentropy(_CrossEntropy):
    """Softmax cross-entropy against class probabilities (one-hot rows) shaped (n, classes)."""

    kernel_name = "softmax_cross_entropy"
    fused_activation = "softmax"

    def _logits_of(self, probabilities):
        p = probabilities / probabilities.sum(axis=-1, keepdims=True)
        return np.ascontiguousarray(np.log(np.clip(p, _EPSILON, 1 - _EPSILON)))

    def prepare_target(self, y, n, width, dtype, name="y"):
        if width < 2:
            raise ValueError(f"{self.name} needs an output of at least 2 classes, got {width}")
        return super().prepare_target(y, n, width, dtype, name)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Softmax cross-entropy against integer class labels (n,) in [0, classes)."""

    target_kind = "labels"

    def __init__(self, from_logits=False, reduction="sum_over_batch_size", name=None):
        super().__init__(from_logits, 0.0, reduction, name)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["label_smoothing"]
        return config

    def prepare_target(self, y, n, width, dtype, name="y"):
        if width < 2:
            raise ValueError(f"{self.name} needs an output of at least 2 classes, got {width}")
        y = _as_array(y, name)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.shape != (n,):
            raise ValueError(
                f"{name}: expected {n} integer class labels, shape ({n},), got {y.shape}"
            )
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
                raise ValueError(f"{name}: expected integer class labels, got non-integer floats")
        elif y.dtype.kind not in "iu":
            raise TypeError(f"{name}: expected integer class labels, got dtype {y.dtype}")
        if n:
            low, high = y.min(), y.max()
            if low < 0 or high >= width:
                bad = low if low < 0 else high
                raise ValueError(
                    f"{name}: class label {bad} is outside [0, {width}) (the model has "
                    f"{width} outputs)"
                )
        return np.ascontiguousarray(y, dtype=np.int64)


_CLASSES = {
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}
_NAME_OF_CLASS = {cls.__name__: name for name, cls in _CLASSES.items()}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber_loss": "huber"}
_BY_CLASS = {cls.__name__: cls for cls in _CLASSES.values()}


def get(identifier) -> Loss:
    """A loss from a name (``"mse"``, ``"sparse_categorical_crossentropy"``) or an instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier, identifier)
        cls = _CLASSES.get(key) or _BY_CLASS.get(key)
        if cls is not None:
            return cls()
        names = sorted([*_CLASSES, *_ALIASES])
        raise ValueError(f"loss: unknown loss {identifier!r}; expected one of {names}")
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"loss: expected a loss name or a densekit.losses.Loss, got {identifier!r}")


def serialize(loss: Loss) -> dict:
    return _registry.serialize(loss)


def deserialize(config: dict) -> Loss:
    return _registry.deserialize(config, _BY_CLASS, "loss class")
