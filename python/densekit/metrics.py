"""Metrics with Keras's names: running means over the batches of an epoch.

During fit and evaluate the model binds each metric once per batch shape to its output and
target buffers (``bind``), so an update is a few NumPy calls into preallocated scratch (the
accuracies: argmax/compare/count) or one loss kernel (mse, mae), never a Python loop.
``update_state`` / ``result`` / ``reset_state`` work as in Keras for standalone use.

``output`` names what the bound prediction holds: "probabilities" (the model's real output),
or "logits" of a softmax/sigmoid output the loss absorbed. Accuracies are invariant to that
(argmax of logits is the argmax of the softmax; sigmoid(z) > t iff z > logit(t)); mse/mae are
not, and ask the model for probabilities (``needs_probabilities``).
"""

from __future__ import annotations

import math

import numpy as np

from . import _registry, kernels


class Metric(_registry.Configurable):
    """A running mean: ``total / count`` since the last ``reset_state``."""

    # "labels": integer labels (n,); "dense": floats shaped like the prediction.
    target_kind = "dense"
    needs_probabilities = False

    def __init__(self, name=None, dtype=None):
        self.name = name or _NAME_OF_CLASS[type(self).__name__]
        self.total = 0.0
        self.count = 0

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0

    def result(self) -> float:
        return float(self.total / self.count) if self.count else 0.0

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        if sample_weight is not None:
            raise ValueError("sample_weight: weighted metrics are not supported")
        y_pred = np.ascontiguousarray(y_pred)
        if y_pred.dtype not in (np.float32, np.float64):
            y_pred = y_pred.astype(np.float64)
        if y_pred.ndim == 1:
            y_pred = y_pred[:, None]
        y_true = np.asarray(y_true)
        if self.target_kind == "labels":
            y_true = np.ascontiguousarray(y_true.reshape(-1), dtype=np.int64)
        else:
            y_true = np.ascontiguousarray(y_true, dtype=y_pred.dtype).reshape(y_pred.shape)
        self.bind(y_true, y_pred, "probabilities")()

    def bind(self, y_true: np.ndarray, y_pred: np.ndarray, output: str):
        """A zero-argument callable that adds the batch in these buffers to the running mean."""
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} result={self.result():.6g}>"


class _LossMetric(Metric):
    kernel_name = ""
    needs_probabilities = True

    def bind(self, y_true, y_pred, output):
        kernel = getattr(kernels, self.kernel_name)
        n = y_pred.shape[0]

        def update():
            value, _ = kernel(y_pred, y_true, reduction="sum", compute_grad=False)
            self.total += value
            self.count += n

        return update


class MeanSquaredError(_LossMetric):
    kernel_name = "mse"


class MeanAbsoluteError(_LossMetric):
    kernel_name = "mae"


class MeanAbsolutePercentageError(_LossMetric):
    kernel_name = "mape"


class MeanSquaredLogarithmicError(_LossMetric):
    kernel_name = "msle"


class RootMeanSquaredError(_LossMetric):
    """The square root of the running mean of the per-sample squared error (Keras's RMSE)."""

    kernel_name = "mse"

    def result(self) -> float:
        return math.sqrt(super().result())


class SparseCategoricalAccuracy(Metric):
    """Share of rows whose argmax equals the integer label."""

    target_kind = "labels"

    def bind(self, y_true, y_pred, output):
        n = y_pred.shape[0]
        predicted = np.empty(n, np.int64)
        hits = np.empty(n, np.bool_)
        argmax, equal, count_nonzero = np.argmax, np.equal, np.count_nonzero

        def update():
            argmax(y_pred, axis=1, out=predicted)
            self.total += count_nonzero(equal(predicted, y_true, out=hits))
            self.count += n

        return update


class CategoricalAccuracy(Metric):
    """Share of rows whose argmax equals the argmax of the one-hot target."""

    def bind(self, y_true, y_pred, output):
        n = y_pred.shape[0]
        predicted = np.empty(n, np.int64)
        expected = np.empty(n, np.int64)
        hits = np.empty(n, np.bool_)
        argmax, equal, count_nonzero = np.argmax, np.equal, np.count_nonzero

        def update():
            argmax(y_pred, axis=1, out=predicted)
            argmax(y_true, axis=1, out=expected)
            self.total += count_nonzero(equal(predicted, expected, out=hits))
            self.count += n

        return update


class BinaryAccuracy(Metric):
    """Share of outputs where (prediction > threshold) equals the 0/1 target."""

    def __init__(self, name=None, dtype=None, threshold=0.5):
        super().__init__(name, dtype)
        if not 0 < threshold < 1:
            raise ValueError(f"threshold: expected a number in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)

    def bind(self, y_true, y_pred, output):
        threshold = self.threshold
        if output == "logits":
            threshold = math.log(threshold / (1 - threshold))
        above = np.empty(y_pred.shape, np.bool_)
        hits = np.empty(y_pred.shape, np.bool_)
        size = y_pred.size
        greater, equal, count_nonzero = np.greater, np.equal, np.count_nonzero

        def update():
            greater(y_pred, threshold, out=above)
            self.total += count_nonzero(equal(above, y_true, out=hits))
            self.count += size

        return update

    def get_config(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}


class Accuracy(Metric):
    """Share of outputs exactly equal to the target (Keras's plain ``Accuracy``)."""

    needs_probabilities = True

    def bind(self, y_true, y_pred, output):
        hits = np.empty(y_pred.shape, np.bool_)
        size = y_pred.size

        def update():
            self.total += np.count_nonzero(np.equal(y_pred, y_true, out=hits))
            self.count += size

        return update


_CLASSES = {
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "accuracy": Accuracy,
    "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "root_mean_squared_error": RootMeanSquaredError,
}
_NAME_OF_CLASS = {cls.__name__: name for name, cls in _CLASSES.items()}
_ALIASES = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
}
_BY_CLASS = {cls.__name__: cls for cls in _CLASSES.values()}


def get(identifier, loss=None, output_width: int | None = None) -> Metric:
    """A metric from a name or an instance. ``"accuracy"`` (or ``"acc"``) picks the accuracy
    that fits the loss, as Keras does: sparse categorical for integer labels, binary for one
    output, categorical otherwise. The metric is named as given."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if not isinstance(identifier, str):
        raise TypeError(
            f"metrics: expected metric names or densekit.metrics.Metric, got {identifier!r}"
        )
    if identifier in ("accuracy", "acc"):
        if loss is not None and loss.target_kind == "labels":
            return SparseCategoricalAccuracy(name=identifier)
        if output_width == 1:
            return BinaryAccuracy(name=identifier)
        return CategoricalAccuracy(name=identifier)
    key = _ALIASES.get(identifier, identifier)
    cls = _CLASSES.get(key) or _BY_CLASS.get(key)
    if cls is None:
        names = sorted([*_CLASSES, *_ALIASES, "acc"])
        raise ValueError(f"metrics: unknown metric {identifier!r}; expected one of {names}")
    return cls(name=identifier)


def serialize(metric: Metric) -> dict:
    return _registry.serialize(metric)


def deserialize(config: dict) -> Metric:
    return _registry.deserialize(config, _BY_CLASS, "metric class")
