"""Losses with Keras's names, each computed (value and gradient together) by one loss kernel.

Keras semantics: the per-sample loss is the mean over the last axis for the elementwise
losses (the sum for kl_divergence; categorical_hinge and cosine_similarity are functions of
the whole row), and ``"sum_over_batch_size"`` (the default) and ``"mean"`` divide the weighted
sum of per-sample losses by the batch size, ``"mean_with_sample_weight"`` by the sum of the
sample weights, ``"sum"`` not at all; ``"none"`` (or None) gives the weighted per-sample
losses. The cross-entropies work on logits: with ``from_logits=False`` a
model ending in softmax (categorical) or sigmoid (binary) is trained on the logits of that
last layer with the fused kernel, whose gradient goes straight to the logits; called on their
own, they take probabilities and turn them into logits first (clipped to [1e-7, 1 - 1e-7], as
Keras clips).
"""

from __future__ import annotations

import numpy as np

from . import _core, _registry, kernels

# Keras's reductions and the kernel reduction each runs on ("mean_with_sample_weight" then
# divides by the sum of the weights, see _WeightedMean).
_REDUCTIONS = {
    "sum_over_batch_size": "mean",
    "mean": "mean",
    "mean_with_sample_weight": "mean",
    "sum": "sum",
    "none": "none",
    None: "none",
}
_EPSILON = 1e-7


class _WeightedMean:
    """A loss kernel with Keras's "mean_with_sample_weight": the weighted sum of the per-sample
    losses divided by the sum of the weights (0 when that is 0, Keras's divide_no_nan), or the
    plain mean without weights. The gradient is scaled in place."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __call__(self, prediction, target, *, reduction="mean", sample_weight=None, **options):
        if sample_weight is None:
            return self.kernel(prediction, target, reduction="mean", **options)
        loss, grad = self.kernel(
            prediction, target, reduction="sum", sample_weight=sample_weight, **options
        )
        total = float(np.sum(sample_weight, dtype=np.float64))
        scale = 1.0 / total if total != 0.0 else 0.0
        if grad is not None:
            np.multiply(grad, grad.dtype.type(scale), out=grad)
        return loss * scale, grad


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
                "reduction: expected 'sum_over_batch_size', 'sum', 'mean', "
                f"'mean_with_sample_weight', 'none' or None, got {reduction!r}"
            )
        self.reduction = reduction
        self.name = name or _NAME_OF_CLASS[type(self).__name__]

    @property
    def kernel(self):
        """The loss kernel, called as ``kernel(prediction, target, reduction=...,
        sample_weight=..., **kernel_options())`` with ``kernel_reduction``."""
        kernel = getattr(kernels, self.kernel_name)
        return _WeightedMean(kernel) if self.reduction == "mean_with_sample_weight" else kernel

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
            if y.dtype == np.int64 and y.flags.c_contiguous:
                low, high = _core._label_bounds(y)  # one pass: a step's labels are int64
            else:
                low, high = y.min(), y.max()
            if low < 0 or high >= width:
                bad = low if low < 0 else high
                raise ValueError(
                    f"{name}: class label {bad} is outside [0, {width}) (the model has "
                    f"{width} outputs)"
                )
        return np.ascontiguousarray(y, dtype=np.int64)


class MeanAbsolutePercentageError(Loss):
    """``100 |y_true - y_pred| / max(|y_true|, 1e-7)``, averaged over the last axis."""

    kernel_name = "mape"


class MeanSquaredLogarithmicError(Loss):
    """``(log(max(y_pred, 1e-7) + 1) - log(max(y_true, 1e-7) + 1))^2``, averaged over the last
    axis."""

    kernel_name = "msle"


class LogCosh(Loss):
    """``log(cosh(y_pred - y_true))``, averaged over the last axis."""

    kernel_name = "log_cosh"


class Poisson(Loss):
    """``y_pred - y_true log(y_pred + 1e-7)``, averaged over the last axis."""

    kernel_name = "poisson"


class KLDivergence(Loss):
    """``t log(t / p)`` with both clipped to [1e-7, 1], summed over the last axis."""

    kernel_name = "kl_divergence"


class Hinge(Loss):
    """``max(1 - y_true y_pred, 0)``, averaged over the last axis. Targets are -1 or 1; targets
    that are all 0 or 1 are mapped to -1 and 1 (Keras decides this per batch, densekit over the
    whole target array it is given)."""

    kernel_name = "hinge"

    def prepare_target(self, y, n, width, dtype, name="y"):
        y = super().prepare_target(y, n, width, dtype, name)
        if np.all((y == 0) | (y == 1)):
            y = 2 * y - 1
        return np.ascontiguousarray(y)


class SquaredHinge(Hinge):
    """``max(1 - y_true y_pred, 0)^2``, averaged over the last axis (targets as for Hinge)."""

    kernel_name = "squared_hinge"


class CategoricalHinge(Loss):
    """``max(max((1 - y_true) y_pred) - sum(y_true y_pred) + 1, 0)`` per sample."""

    kernel_name = "categorical_hinge"


class CosineSimilarity(Loss):
    """``-sum(l2_normalize(y_true) l2_normalize(y_pred))`` per sample (over the last axis, the
    only axis densekit supports), between -1 and 1."""

    kernel_name = "cosine_similarity"

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name=None):
        super().__init__(reduction, name)
        if axis not in (-1, 1):
            raise ValueError(f"axis: expected -1 (the last axis), got {axis!r}")
        self.axis = -1

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis}


class BinaryFocalCrossentropy(BinaryCrossentropy):
    """Keras's binary focal cross-entropy ``b (1 - p_t)^gamma bce``, on logits like
    BinaryCrossentropy (exact: no clipping of probabilities)."""

    kernel_name = "sigmoid_focal_cross_entropy"

    def __init__(
        self,
        apply_class_balancing=False,
        alpha=0.25,
        gamma=2.0,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name=None,
    ):
        super().__init__(from_logits, label_smoothing, reduction, name)
        if not isinstance(apply_class_balancing, (bool, np.bool_)):
            raise TypeError(
                f"apply_class_balancing: expected True or False, got {apply_class_balancing!r}"
            )
        if not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha: expected a number, got {alpha!r}")
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"gamma: expected a number >= 0, got {gamma!r}")
        if axis not in (-1, 1):
            raise ValueError(f"axis: expected -1 (the last axis), got {axis!r}")
        self.apply_class_balancing = bool(apply_class_balancing)
        self.alpha, self.gamma, self.axis = float(alpha), float(gamma), -1

    def kernel_options(self) -> dict:
        return {
            **super().kernel_options(),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "apply_class_balancing": self.apply_class_balancing,
        }

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "apply_class_balancing": self.apply_class_balancing,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "axis": self.axis,
        }


class CategoricalFocalCrossentropy(CategoricalCrossentropy):
    """Keras's categorical focal cross-entropy ``sum_j alpha t_j (1 - p_j)^gamma (-log p_j)``,
    on logits like CategoricalCrossentropy (exact: no clipping of probabilities)."""

    kernel_name = "softmax_focal_cross_entropy"

    def __init__(
        self,
        alpha=0.25,
        gamma=2.0,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name=None,
    ):
        super().__init__(from_logits, label_smoothing, reduction, name)
        if not isinstance(alpha, (int, float)):
            raise TypeError(f"alpha: expected a number, got {alpha!r}")
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"gamma: expected a number >= 0, got {gamma!r}")
        if axis not in (-1, 1):
            raise ValueError(f"axis: expected -1 (the last axis), got {axis!r}")
        self.alpha, self.gamma, self.axis = float(alpha), float(gamma), -1

    def kernel_options(self) -> dict:
        return {**super().kernel_options(), "alpha": self.alpha, "gamma": self.gamma}

    def get_config(self) -> dict:
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma, "axis": -1}


_CLASSES = {
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "huber": Huber,
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "log_cosh": LogCosh,
    "poisson": Poisson,
    "kl_divergence": KLDivergence,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "cosine_similarity": CosineSimilarity,
    "binary_focal_crossentropy": BinaryFocalCrossentropy,
    "categorical_focal_crossentropy": CategoricalFocalCrossentropy,
}
_NAME_OF_CLASS = {cls.__name__: name for name, cls in _CLASSES.items()}
_ALIASES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "huber_loss": "huber",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "logcosh": "log_cosh",
    "kld": "kl_divergence",
    "kullback_leibler_divergence": "kl_divergence",
}
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
