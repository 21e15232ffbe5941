"""Metrics with Keras's names, definitions and defaults.

A metric keeps its running sums in one float64 array, ``state`` (Keras's variables: a total
and a count, confusion counts per threshold, per-class sums); ``result()`` is a function of
the state, and the states of two runs over disjoint batches add up to the state over both
(Hogwild! workers and data-parallel ranks add theirs). During fit and evaluate the model
binds each metric once per batch shape to its output, target and, for the weighted metrics
(``compile(weighted_metrics=...)``), sample-weight buffers (``bind``), so that an update is
one kernel call (confusion counts, top-k hits, loss sums) or a few NumPy calls into
preallocated scratch, never a Python loop. ``update_state`` / ``result`` / ``reset_state``
work as in Keras for standalone use, with or without ``sample_weight``.

``output`` names what the bound prediction holds: "probabilities" (the model's real output),
or "logits" of a softmax/sigmoid output the loss absorbed. The accuracies are invariant to
that (argmax of logits is the argmax of the softmax; sigmoid(z) > t iff z > logit(t)); the
other metrics are not, and ask the model for probabilities (``needs_probabilities``).
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np

from . import _registry, kernels

# Keras's backend.epsilon(), in the F-scores and AUC's end thresholds.
_EPSILON = 1e-7
# Keras's threshold of Precision and Recall with top_k and no thresholds (metrics_utils.NEG_INF).
_NEG_INF = -1e10


class Metric(_registry.Configurable):
    """The base class: a weighted running mean, ``total / count`` since the last
    ``reset_state`` (0 before any sample, as Keras's divide_no_nan).

    Subclasses define ``bind``; those that keep other sums than a total and a count also
    define ``state_shape`` and ``result``.

    Parameters
    ----------
    name : str or None
        The name in the logs (default: Keras's name of the class).
    dtype : str or None
        Accepted for Keras compatibility; the state is float64.
    """

    # "labels": integer labels (n,); "dense": floats shaped like the prediction.
    target_kind = "dense"
    needs_probabilities = False

    def __init__(self, name=None, dtype=None):
        self.name = name or _NAME_OF_CLASS[type(self).__name__]
        self.state = np.zeros(self.state_shape(None))
        self._width = None

    # -- state ---------------------------------------------------------------------------
    def state_shape(self, width: int | None) -> tuple[int, ...]:
        """The shape of ``state`` for predictions of ``width`` outputs (None: not known yet)."""
        return (2,)

    def build(self, width: int) -> None:
        """Size the state for predictions of ``width`` outputs: a new zero state when its
        shape changes (the model does this when it makes its training state).

        Parameters
        ----------
        width : int
            The number of outputs per sample.
        """
        shape = self.state_shape(width)
        if self.state.shape != shape:
            self.state = np.zeros(shape)
        self._width = width

    def reset_state(self) -> None:
        """Start over: every sum of the state back to 0."""
        self.state.fill(0.0)

    @property
    def total(self) -> float:
        """The running mean's weighted sum (``state[0]``)."""
        return float(self.state[0])

    @property
    def count(self) -> float:
        """The running mean's weight: samples, or the sum of their weights (``state[1]``)."""
        return float(self.state[1])

    def result(self):
        """The metric's value: a float, or an array for a metric with one value per class,
        output or threshold (as Keras returns a tensor of that shape)."""
        total, count = self.state
        return float(total / count) if count else 0.0

    def __copy__(self):
        other = type(self).__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.state = self.state.copy()
        return other

    # -- updates -------------------------------------------------------------------------
    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add a batch, as Keras's ``update_state``.

        Parameters
        ----------
        y_true : array_like
            The targets: integer labels (n,) for the sparse metrics, else shaped like
            ``y_pred``.
        y_pred : array_like
            The predictions, (n,) or (n, d).
        sample_weight : array_like or None
            A weight per sample ((n,), or (n, 1)) or one for all.

        Raises
        ------
        TypeError
            When an argument cannot be converted to numbers.
        ValueError
            When the shapes do not fit, or ``y_pred`` has another width than the batches
            the state holds.
        """
        y_pred = np.ascontiguousarray(y_pred)
        if y_pred.dtype not in (np.float32, np.float64):
            y_pred = y_pred.astype(np.float64)
        if y_pred.ndim == 1:
            y_pred = y_pred[:, None]
        if y_pred.ndim != 2:
            raise ValueError(f"y_pred: expected shape (n,) or (n, d), got {y_pred.shape}")
        n, width = y_pred.shape
        y_true = np.asarray(y_true)
        if self.target_kind == "labels":
            y_true = np.ascontiguousarray(y_true.reshape(-1), dtype=np.int64)
        else:
            y_true = np.ascontiguousarray(y_true, dtype=y_pred.dtype).reshape(y_pred.shape)
        weights = None
        if sample_weight is not None:
            weights = _weights_of(sample_weight, n, y_pred.dtype)
        if self._width != width:
            if self._width is not None and self.state_shape(width) != self.state.shape:
                raise ValueError(
                    f"y_pred: expected {self._width} outputs per sample (the batches "
                    f"{self.name!r} holds), got {width}; make a new metric for another width"
                )
            self.build(width)
        if weights is None:
            self.bind(y_true, y_pred, "probabilities")()
        else:
            self.bind(y_true, y_pred, "probabilities", sample_weight=weights)()

    def bind(self, y_true: np.ndarray, y_pred: np.ndarray, output: str, sample_weight=None):
        """A zero-argument callable that adds the batch in these buffers to the state.

        Parameters
        ----------
        y_true : numpy.ndarray
            The targets' buffer.
        y_pred : numpy.ndarray
            The predictions' buffer, (n, d).
        output : {"probabilities", "logits"}
            What ``y_pred`` holds (see the module docstring).
        sample_weight : numpy.ndarray or None
            The (n,) weights' buffer of a weighted metric, else None.

        Returns
        -------
        callable
            The update; it reads the buffers when called.
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        result = self.result()
        shown = f"{result:.6g}" if np.ndim(result) == 0 else np.array2string(result, precision=6)
        return f"<{type(self).__name__} name={self.name!r} result={shown}>"


def _weights_of(sample_weight, n: int, dtype) -> np.ndarray:
    """Standalone ``sample_weight`` as an (n,) array of ``dtype``."""
    try:
        weights = np.asarray(sample_weight, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"sample_weight: cannot convert to an array ({error})") from None
    if weights.ndim == 0:
        weights = np.full(n, weights, dtype)
    elif weights.shape == (n, 1):
        weights = weights.reshape(n)
    if weights.shape != (n,):
        raise ValueError(
            f"sample_weight: expected a number or one weight per sample, shape ({n},), "
            f"got {weights.shape}"
        )
    return np.ascontiguousarray(weights)


def _divide_no_nan(numerator, denominator):
    """``numerator / denominator``, 0 where the denominator is 0 (Keras's divide_no_nan)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = np.true_divide(numerator, denominator)
    return np.where(denominator == 0, 0.0, quotient)


def _as_result(values: np.ndarray):
    """A float for one value, else the array (as Keras returns a tensor of that shape)."""
    return float(values) if np.ndim(values) == 0 else np.asarray(values, np.float64)


def _add_hits(state: np.ndarray, hits: np.ndarray, sample_weight):
    """The call that adds ``hits`` (bool, (n,) or (n, d), filled before each call) to a
    running mean of the samples' shares of hits: unweighted, the hits and the outputs;
    weighted, each row's hits times its weight and d times the weights (the mean Keras
    takes, which divides each row by d)."""
    count_nonzero, size = np.count_nonzero, hits.size
    if sample_weight is None:

        def add():
            state[0] += count_nonzero(hits)
            state[1] += size

        return add
    width = hits.shape[1] if hits.ndim == 2 else 1
    row_hits = np.empty(hits.shape[0])
    weighted = np.empty(hits.shape[0])

    def add_weighted():
        if hits.ndim == 2:
            np.sum(hits, axis=1, dtype=np.float64, out=row_hits)
        else:
            np.copyto(row_hits, hits)
        np.multiply(row_hits, sample_weight, out=weighted)
        state[0] += weighted.sum()
        state[1] += width * np.sum(sample_weight, dtype=np.float64)

    return add_weighted


# -- running means ------------------------------------------------------------------------
class _LossMetric(Metric):
    kernel_name = ""
    needs_probabilities = True

    def bind(self, y_true, y_pred, output, sample_weight=None):
        kernel = getattr(kernels, self.kernel_name)
        state, n = self.state, y_pred.shape[0]
        if sample_weight is None:

            def update():
                value, _ = kernel(y_pred, y_true, reduction="sum", compute_grad=False)
                state[0] += value
                state[1] += n

            return update

        def weighted_update():
            value, _ = kernel(
                y_pred, y_true, reduction="sum", sample_weight=sample_weight, compute_grad=False
            )
            state[0] += value
            state[1] += np.sum(sample_weight, dtype=np.float64)

        return weighted_update


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

    def bind(self, y_true, y_pred, output, sample_weight=None):
        n = y_pred.shape[0]
        predicted = np.empty(n, np.int64)
        hits = np.empty(n, np.bool_)
        add = _add_hits(self.state, hits, sample_weight)
        argmax, equal = np.argmax, np.equal

        def update():
            argmax(y_pred, axis=1, out=predicted)
            equal(predicted, y_true, out=hits)
            add()

        return update


class CategoricalAccuracy(Metric):
    """Share of rows whose argmax equals the argmax of the one-hot target."""

    def bind(self, y_true, y_pred, output, sample_weight=None):
        n = y_pred.shape[0]
        predicted = np.empty(n, np.int64)
        expected = np.empty(n, np.int64)
        hits = np.empty(n, np.bool_)
        add = _add_hits(self.state, hits, sample_weight)
        argmax, equal = np.argmax, np.equal

        def update():
            argmax(y_pred, axis=1, out=predicted)
            argmax(y_true, axis=1, out=expected)
            equal(predicted, expected, out=hits)
            add()

        return update


class BinaryAccuracy(Metric):
    """Share of outputs where (prediction > threshold) equals the 0/1 target.

    Parameters
    ----------
    name : str or None
        The name in the logs.
    dtype : str or None
        Accepted for Keras compatibility.
    threshold : float
        In (0, 1).
    """

    def __init__(self, name=None, dtype=None, threshold=0.5):
        super().__init__(name, dtype)
        if not 0 < threshold < 1:
            raise ValueError(f"threshold: expected a number in (0, 1), got {threshold!r}")
        self.threshold = float(threshold)

    def bind(self, y_true, y_pred, output, sample_weight=None):
        threshold = self.threshold
        if output == "logits":
            threshold = math.log(threshold / (1 - threshold))
        above = np.empty(y_pred.shape, np.bool_)
        hits = np.empty(y_pred.shape, np.bool_)
        add = _add_hits(self.state, hits, sample_weight)
        greater, equal = np.greater, np.equal

        def update():
            greater(y_pred, threshold, out=above)
            equal(above, y_true, out=hits)
            add()

        return update

    def get_config(self) -> dict:
        return {"name": self.name, "threshold": self.threshold}


class Accuracy(Metric):
    """Share of outputs exactly equal to the target (Keras's plain ``Accuracy``)."""

    needs_probabilities = True

    def bind(self, y_true, y_pred, output, sample_weight=None):
        hits = np.empty(y_pred.shape, np.bool_)
        add = _add_hits(self.state, hits, sample_weight)

        def update():
            np.equal(y_pred, y_true, out=hits)
            add()

        return update


def _top_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k: expected an int >= 1, got {k!r}")
    return int(k)


class TopKCategoricalAccuracy(Metric):
    """Share of rows whose target class (the argmax of the one-hot target) is among the
    ``k`` largest predictions, a tie with the k-th largest counting as in (Keras's
    ``in_top_k``; one ``top_k_hits`` kernel call per batch).

    Parameters
    ----------
    k : int
        How many of the largest predictions count.
    name : str
        The name in the logs.
    dtype : str or None
        Accepted for Keras compatibility.
    """

    needs_probabilities = True  # softmax can round distinct logits to equal probabilities

    def __init__(self, k=5, name="top_k_categorical_accuracy", dtype=None):
        super().__init__(name, dtype)
        self.k = _top_k(k)

    def bind(self, y_true, y_pred, output, sample_weight=None):
        state, k, top_k_hits = self.state, self.k, kernels.top_k_hits

        def update():
            hits, weight = top_k_hits(y_pred, y_true, k, sample_weight=sample_weight)
            state[0] += hits
            state[1] += weight

        return update

    def get_config(self) -> dict:
        return {"name": self.name, "k": self.k}


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    """Share of rows whose integer label is among the ``k`` largest predictions (see
    ``TopKCategoricalAccuracy``).

    Parameters
    ----------
    k : int
        How many of the largest predictions count.
    name : str
        The name in the logs.
    dtype : str or None
        Accepted for Keras compatibility.
    """

    target_kind = "labels"

    def __init__(self, k=5, name="sparse_top_k_categorical_accuracy", dtype=None):
        super().__init__(k, name, dtype)


# -- confusion counts: Precision, Recall, AUC ------------------------------------------------
def _thresholds(thresholds, default: float) -> list[float]:
    """Keras's thresholds argument as a list, each in [0, 1] (``default`` when None)."""
    if thresholds is None:
        return [default]
    values = list(thresholds) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not 0.0 <= float(value) <= 1.0
        ):
            raise ValueError(f"thresholds: expected numbers in [0, 1], got {thresholds!r}")
    if not values:
        raise ValueError("thresholds: expected at least one threshold, got none")
    return [float(value) for value in values]


def _class_id(class_id):
    if class_id is None:
        return None
    if isinstance(class_id, bool) or not isinstance(class_id, numbers.Integral) or class_id < 0:
        raise ValueError(f"class_id: expected None or an int >= 0, got {class_id!r}")
    return int(class_id)


class _ConfusionMetric(Metric):
    """Metrics over the confusion counts at thresholds: ``state`` is (4, thresholds) (or
    (4, thresholds, labels) per label) of true positives, false positives, true negatives
    and false negatives, added by one ``confusion_counts`` kernel call per batch at the
    thresholds in ascending order (``self._order`` gives each threshold's place there)."""

    needs_probabilities = True  # thresholds apply to probabilities, as in Keras
    top_k = None
    class_id = None
    multi_label = False

    def _set_thresholds(self, values) -> None:
        values = np.asarray(values, np.float64)
        self._order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        self._sorted = np.sort(values, kind="stable")

    def state_shape(self, width):
        if self.multi_label:
            return (4, len(self._sorted), 0 if width is None else width)
        return (4, len(self._sorted))

    def build(self, width: int) -> None:
        if self.class_id is not None and self.class_id >= width:
            raise ValueError(
                f"class_id: expected a class in [0, {width}) for {width} outputs, "
                f"got {self.class_id}"
            )
        super().build(width)

    def _column_weight(self, dtype):
        return None

    def _probabilities(self, y_pred):
        """The bound predictions the counts are taken on, and the call that fills them."""
        return y_pred, None

    def bind(self, y_true, y_pred, output, sample_weight=None):
        thresholds = self._sorted.astype(y_pred.dtype)
        column_weight = self._column_weight(y_pred.dtype)
        predictions, prepare = self._probabilities(y_pred)
        state, counts = self.state, kernels.confusion_counts
        top_k, class_id, multi_label = self.top_k, self.class_id, self.multi_label

        def update():
            if prepare is not None:
                prepare()
            counts(
                predictions,
                y_true,
                thresholds,
                sample_weight=sample_weight,
                column_weight=column_weight,
                top_k=top_k,
                class_id=class_id,
                multi_label=multi_label,
                out=state,
                accumulate=True,
            )

        return update

    def _ratio(self, numerator: int, other: int):
        """``count[numerator] / (count[numerator] + count[other])`` per threshold, in the
        order the thresholds were given."""
        top, rest = self.state[numerator], self.state[other]
        return _as_result(_divide_no_nan(top, top + rest)[self._order].squeeze())


class Precision(_ConfusionMetric):
    """true positives / (true positives + false positives), as Keras's ``Precision``.

    An output is predicted positive when its probability is > the threshold, and is a
    positive when its target is not 0; every output of every sample counts, unless
    ``class_id`` picks one. With ``top_k``, only the k largest outputs of a sample can be
    predicted positive (ties go to the lower class; Keras's backends leave that order
    unspecified).

    Parameters
    ----------
    thresholds : float, list of float or None
        In [0, 1]; the result is one value per threshold (a float for one). Default: 0.5,
        or, with ``top_k``, any probability counts.
    top_k : int or None
        Only the k largest outputs of each sample count as predicted positive.
    class_id : int or None
        Count this output (class) only.
    name : str or None
        The name in the logs (default ``"precision"``).
    dtype : str or None
        Accepted for Keras compatibility.
    """

    _counts = (0, 1)  # true positives, false positives

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.init_thresholds = thresholds
        self.top_k = None if top_k is None else _top_k(top_k)
        self.class_id = _class_id(class_id)
        default = 0.5 if top_k is None else _NEG_INF
        self.thresholds = _thresholds(thresholds, default)  # as Keras parses them
        self._set_thresholds(self.thresholds)
        super().__init__(name, dtype)

    def result(self):
        return self._ratio(*self._counts)

    def get_config(self) -> dict:
        thresholds = self.init_thresholds
        if isinstance(thresholds, np.ndarray):
            thresholds = thresholds.tolist()
        return {
            "name": self.name,
            "thresholds": thresholds,
            "top_k": self.top_k,
            "class_id": self.class_id,
        }


class Recall(Precision):
    """true positives / (true positives + false negatives), as Keras's ``Recall`` (see
    ``Precision`` for the arguments).

    Parameters
    ----------
    thresholds : float, list of float or None
        In [0, 1]; the result is one value per threshold (a float for one).
    top_k : int or None
        Only the k largest outputs of each sample count as predicted positive.
    class_id : int or None
        Count this output (class) only.
    name : str or None
        The name in the logs (default ``"recall"``).
    dtype : str or None
        Accepted for Keras compatibility.
    """

    _counts = (0, 3)  # true positives, false negatives


_CURVES = {"roc": "ROC", "pr": "PR", "prgain": "PRGAIN"}
_SUMMATIONS = ("interpolation", "minoring", "majoring")


class AUC(_ConfusionMetric):
    """Area under the ROC or precision-recall curve, as Keras's ``AUC``.

    The confusion counts are taken at ``num_thresholds`` thresholds: -1e-7, the
    ``num_thresholds - 2`` evenly spaced inner thresholds (or ``thresholds``), and 1 + 1e-7.
    The area is then a Riemann sum over them: ``"interpolation"`` takes the mean height
    (for the PR curve, Keras's interpolation of Davis & Goadrich: true positives and
    predicted positives vary linearly between thresholds, not the precision),
    ``"minoring"`` the lower and ``"majoring"`` the higher end.

    Parameters
    ----------
    num_thresholds : int
        > 1; ignored when ``thresholds`` is given.
    curve : {"ROC", "PR", "PRGAIN"}
        The curve (lower case is accepted).
    summation_method : {"interpolation", "minoring", "majoring"}
        How each interval's height is taken.
    name : str or None
        The name in the logs (default ``"auc"``).
    dtype : str or None
        Accepted for Keras compatibility.
    thresholds : list of float or None
        The inner thresholds (sorted here).
    multi_label : bool
        Count each output (label) separately and average their areas; else every output
        of every sample is one binary decision.
    num_labels : int or None
        Accepted for Keras compatibility (the width comes from the data).
    label_weights : list of float or None
        One weight per output: with ``multi_label``, the areas' weighted mean; without,
        each output's weight in the counts.
    from_logits : bool
        The predictions are logits: a sigmoid turns them into probabilities first.
    """

    def __init__(
        self,
        num_thresholds=200,
        curve="ROC",
        summation_method="interpolation",
        name=None,
        dtype=None,
        thresholds=None,
        multi_label=False,
        num_labels=None,
        label_weights=None,
        from_logits=False,
    ):
        if not isinstance(curve, str) or curve.lower() not in _CURVES:
            raise ValueError(f"curve: expected 'ROC', 'PR' or 'PRGAIN', got {curve!r}")
        if not isinstance(summation_method, str) or summation_method.lower() not in _SUMMATIONS:
            raise ValueError(
                "summation_method: expected 'interpolation', 'minoring' or 'majoring', "
                f"got {summation_method!r}"
            )
        for flag, value in (("multi_label", multi_label), ("from_logits", from_logits)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{flag}: expected True or False, got {value!r}")
        self.curve = _CURVES[curve.lower()]
        self.summation_method = summation_method.lower()
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(float(t) for t in _as_list(thresholds, "thresholds"))
            if any(not math.isfinite(t) for t in inner):
                raise ValueError(f"thresholds: expected finite numbers, got {thresholds!r}")
            self.num_thresholds = len(inner) + 2
        else:
            if (
                isinstance(num_thresholds, bool)
                or not isinstance(num_thresholds, numbers.Integral)
                or num_thresholds <= 1
            ):
                raise ValueError(f"num_thresholds: expected an int > 1, got {num_thresholds!r}")
            self.num_thresholds = int(num_thresholds)
            inner = [(i + 1) / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
        self.thresholds = [0.0 - _EPSILON, *inner, 1.0 + _EPSILON]
        self._set_thresholds(self.thresholds)
        self.multi_label = bool(multi_label)
        if num_labels is not None and not self.multi_label:
            raise ValueError("num_labels: needed only when multi_label is True")
        if num_labels is not None and (
            isinstance(num_labels, bool)
            or not isinstance(num_labels, numbers.Integral)
            or num_labels < 1
        ):
            raise ValueError(f"num_labels: expected None or an int >= 1, got {num_labels!r}")
        self.num_labels = num_labels
        self.label_weights = None
        if label_weights is not None:
            self.label_weights = [float(w) for w in _as_list(label_weights, "label_weights")]
        self.from_logits = bool(from_logits)
        super().__init__(name, dtype)

    def build(self, width: int) -> None:
        if self.label_weights is not None and len(self.label_weights) != width:
            raise ValueError(
                f"label_weights: expected one weight per output ({width}), "
                f"got {len(self.label_weights)}"
            )
        super().build(width)

    def _column_weight(self, dtype):
        if self.label_weights is None or self.multi_label:
            return None  # multi_label: the weights average the labels' areas instead
        return np.asarray(self.label_weights, dtype)

    def _probabilities(self, y_pred):
        if not self.from_logits:
            return y_pred, None
        probabilities = np.empty_like(y_pred)
        forward = kernels.activation_forward
        return probabilities, lambda: forward(y_pred, "sigmoid", out=probabilities)

    def result(self) -> float:
        tp, fp, tn, fn = self.state
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._average(self._interpolated_pr_terms(tp, fp, fn))
        recall = _divide_no_nan(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _divide_no_nan(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, _divide_no_nan(tp, tp + fp)
        else:  # PRGAIN, with Keras's fixes where the gains diverge
            scale = _divide_no_nan(tp + fn, tn + fp)
            recall_gain = 1.0 - scale * _divide_no_nan(fn, tp)
            precision_gain = 1.0 - scale * _divide_no_nan(fp, tp)
            recall_gain = np.maximum(np.where(tp == 0, 0.0, recall_gain), 0.0)
            x, y = recall_gain, np.where(tp == 0, 1.0, precision_gain)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return self._average((x[:-1] - x[1:]) * heights)

    @staticmethod
    def _interpolated_pr_terms(tp, fp, fn):
        """Keras's interpolate_pr_auc: per interval, the area under a precision that is a
        ratio of linearly varying true and predicted positives."""
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _divide_no_nan(dtp, np.maximum(dp, 0.0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _divide_no_nan(p[:-1], np.maximum(p[1:], 0.0)), 1.0)
        return _divide_no_nan(
            slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0.0)
        )

    def _average(self, terms) -> float:
        """The area: the sum of the terms, per label and averaged with ``multi_label``."""
        if not self.multi_label:
            return float(np.sum(terms))
        by_label = np.sum(terms, axis=0)
        if self.label_weights is None:
            return float(np.mean(by_label)) if by_label.size else float("nan")
        weights = np.asarray(self.label_weights)
        return float(_divide_no_nan(np.sum(by_label * weights), np.sum(weights)))

    def get_config(self) -> dict:
        config = {
            "name": self.name,
            "num_thresholds": self.num_thresholds,
            "curve": self.curve,
            "summation_method": self.summation_method,
            "multi_label": self.multi_label,
            "num_labels": self.num_labels,
            "label_weights": self.label_weights,
            "from_logits": self.from_logits,
        }
        if self._init_from_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config


def _as_list(values, name: str) -> list:
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"{name}: expected a list of numbers, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name}: expected a list of numbers, got {values!r}")
    return list(values)


# -- per-class sums: F-scores, R2 ----------------------------------------------------------
class FBetaScore(Metric):
    """The F-beta score, ``(1 + beta^2) precision recall / (beta^2 precision + recall)``,
    per class from weighted sums, as Keras's ``FBetaScore``.

    The state holds, per class (or summed over classes for ``"micro"``), the weighted true
    positives, false positives, false negatives and the targets' sum (the support). Targets
    enter as numbers (0/1 for class membership).

    Parameters
    ----------
    average : {None, "micro", "macro", "weighted"}
        None: one score per class (an array); "micro": from the counts summed over the
        classes; "macro": the classes' mean; "weighted": their mean weighted by support.
    beta : float
        > 0: recall weighs beta times as much as precision.
    threshold : float or None
        In (0, 1]: an output is predicted positive when it is > threshold; None: the
        largest output(s) of each sample (those equal to the row's maximum, if not ~0).
    name : str
        The name in the logs.
    dtype : str or None
        Accepted for Keras compatibility.
    """

    needs_probabilities = True

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(
                f"average: expected None, 'micro', 'macro' or 'weighted', got {average!r}"
            )
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not beta > 0:
            raise ValueError(f"beta: expected a number > 0, got {beta!r}")
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, numbers.Real)
            or not 0.0 < threshold <= 1.0
        ):
            raise ValueError(f"threshold: expected None or a number in (0, 1], got {threshold!r}")
        self.average = average
        self.beta = float(beta)
        self.threshold = None if threshold is None else float(threshold)
        super().__init__(name, dtype)

    def state_shape(self, width):
        if self.average == "micro":
            return (4,)
        return (4, 0 if width is None else width)

    def bind(self, y_true, y_pred, output, sample_weight=None):
        shape = y_pred.shape
        predicted = np.empty(shape, np.bool_)
        scratch = np.empty(shape, np.bool_)
        row_max = np.empty((shape[0], 1), y_pred.dtype)
        magnitude = np.empty(shape, y_pred.dtype)
        positive = np.empty(shape)  # the predictions as 0/1
        truth = np.empty(shape)  # the targets, weighted
        term = np.empty(shape)
        complement = np.empty(shape)
        axis = None if self.average == "micro" else 0
        weights = None if sample_weight is None else sample_weight[:, None]
        state, threshold = self.state, self.threshold

        def update():
            if threshold is None:  # the row's largest output(s), unless about 0
                np.max(y_pred, axis=1, keepdims=True, out=row_max)
                np.greater_equal(y_pred, row_max, out=predicted)
                np.abs(y_pred, out=magnitude)
                np.greater(magnitude, 1e-9, out=scratch)
                np.logical_and(predicted, scratch, out=predicted)
            else:
                np.greater(y_pred, threshold, out=predicted)
            np.copyto(positive, predicted)
            np.copyto(truth, y_true)
            if weights is not None:
                np.multiply(truth, weights, out=truth)
            # true positives: predicted * target; false negatives: (1 - predicted) * target
            np.multiply(positive, truth, out=term)
            state[0] += term.sum(axis=axis)
            np.subtract(1.0, positive, out=complement)
            np.multiply(complement, truth, out=term)
            state[2] += term.sum(axis=axis)
            state[3] += truth.sum(axis=axis)
            # false positives: predicted * (1 - target)
            np.subtract(1.0, y_true, out=complement)
            if weights is not None:
                np.multiply(complement, weights, out=complement)
            np.multiply(positive, complement, out=term)
            state[1] += term.sum(axis=axis)

        return update

    def result(self):
        tp, fp, fn, support = self.state
        beta2 = self.beta**2
        precision = tp / (tp + fp + _EPSILON)
        recall = tp / (tp + fn + _EPSILON)
        score = precision * recall / (beta2 * precision + recall + _EPSILON) * (1.0 + beta2)
        if self.average == "weighted":
            return float(np.sum(score * support / (np.sum(support) + _EPSILON)))
        if self.average is not None:
            return float(np.mean(score)) if np.size(score) else float("nan")
        return _as_result(score)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "average": self.average,
            "beta": self.beta,
            "threshold": self.threshold,
        }


class F1Score(FBetaScore):
    """The F1 score, ``2 precision recall / (precision + recall)`` (``FBetaScore`` with
    beta = 1), as Keras's ``F1Score``.

    Parameters
    ----------
    average : {None, "micro", "macro", "weighted"}
        See ``FBetaScore``.
    threshold : float or None
        See ``FBetaScore``.
    name : str
        The name in the logs.
    dtype : str or None
        Accepted for Keras compatibility.
    """

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self) -> dict:
        config = super().get_config()
        del config["beta"]
        return config


class R2Score(Metric):
    """The coefficient of determination, ``1 - residual sum of squares / total sum of
    squares`` per output, as Keras's ``R2Score``.

    Parameters
    ----------
    class_aggregation : {"uniform_average", "variance_weighted_average", None}
        The outputs' mean, their mean weighted by the targets' variance, or one score per
        output (an array).
    num_regressors : int
        >= 0: the adjusted R2 for that many independent variables (Keras counts every
        output of every sample as a data point; with too few, the plain R2 and a warning).
    name : str
        The name in the logs.
    dtype : str or None
        Accepted for Keras compatibility.
    """

    needs_probabilities = True

    def __init__(
        self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None
    ):
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ValueError(
                "class_aggregation: expected None, 'uniform_average' or "
                f"'variance_weighted_average', got {class_aggregation!r}"
            )
        if (
            isinstance(num_regressors, bool)
            or not isinstance(num_regressors, numbers.Integral)
            or num_regressors < 0
        ):
            raise ValueError(f"num_regressors: expected an int >= 0, got {num_regressors!r}")
        self.class_aggregation = class_aggregation
        self.num_regressors = int(num_regressors)
        super().__init__(name, dtype)

    def state_shape(self, width):
        # per output: the weighted sums of targets, of their squares, of the squared
        # errors, and of the weights; then the count of target values seen
        return (4 * (0 if width is None else width) + 1,)

    def bind(self, y_true, y_pred, output, sample_weight=None):
        n, width = y_pred.shape
        sums = self.state[: 4 * width].reshape(4, width)
        seen = self.state[4 * width :]
        error = np.empty((n, width))
        weighted = np.empty((n, width))
        column = np.empty(width)
        weights = None if sample_weight is None else sample_weight[:, None]

        def update():
            np.copyto(weighted, y_true)
            if weights is not None:
                np.multiply(weighted, weights, out=weighted)
            sums[0] += np.sum(weighted, axis=0, out=column)
            np.multiply(weighted, y_true, out=weighted)
            sums[1] += np.sum(weighted, axis=0, out=column)
            np.subtract(y_true, y_pred, out=error)
            np.square(error, out=error)
            if weights is not None:
                np.multiply(error, weights, out=error)
            sums[2] += np.sum(error, axis=0, out=column)
            sums[3] += n if weights is None else np.sum(sample_weight, dtype=np.float64)
            seen[0] += n * width

        return update

    def result(self):
        width = (self.state.size - 1) // 4
        total_y, total_y2, residual, count = self.state[: 4 * width].reshape(4, width)
        samples = float(self.state[-1])
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = total_y / count
            total = total_y2 - total_y * mean
            raw = 1.0 - residual / total
            raw = np.where(np.isinf(raw), 0.0, raw)
            if self.class_aggregation == "uniform_average":
                score = np.mean(raw) if raw.size else np.float64("nan")
            elif self.class_aggregation == "variance_weighted_average":
                score = np.sum(total * raw) / np.sum(total)
            else:
                score = raw
        if self.num_regressors:
            if self.num_regressors > samples - 1:
                warnings.warn(
                    "More independent predictors than datapoints in adjusted R2 score. "
                    "Falling back to standard R2 score.",
                    UserWarning,
                    stacklevel=2,
                )
            elif self.num_regressors == samples - 1:
                warnings.warn(
                    "Division by zero in Adjusted R2 score. Falling back to standard R2 score.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                score = 1.0 - (1.0 - score) * (samples - 1.0) / (
                    samples - self.num_regressors - 1.0
                )
        return _as_result(score)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "class_aggregation": self.class_aggregation,
            "num_regressors": self.num_regressors,
        }


# -- the registry ---------------------------------------------------------------------------
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
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "precision": Precision,
    "recall": Recall,
    "auc": AUC,
    "f1_score": F1Score,
    "f_beta_score": FBetaScore,
    "r2_score": R2Score,
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
    """A metric from a name, a config or an instance (returned as it is).

    Names are Keras's: each class's name and its snake-case form (``"auc"``,
    ``"f1_score"``, ``"top_k_categorical_accuracy"``...) and the aliases ``"mse"``,
    ``"mae"``, ``"mape"``, ``"msle"``; the metric is named as given. ``"accuracy"`` (or
    ``"acc"``) picks the accuracy that fits the loss, as Keras does: sparse categorical for
    integer labels, binary for one output, categorical otherwise.

    Parameters
    ----------
    identifier : str, dict or Metric
        The metric.
    loss : densekit.losses.Loss or None
        The compiled loss (for ``"accuracy"``).
    output_width : int or None
        The model's output width (for ``"accuracy"``).

    Returns
    -------
    Metric
        The metric.

    Raises
    ------
    TypeError
        When ``identifier`` is of another type.
    ValueError
        When the name is unknown.
    """
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


def log_names(names: list[str], weighted: list[bool]) -> list[str]:
    """The logs' key of each metric, as Keras's compile names them: a repeated name gets
    ``_1``, ``_2``... among the metrics; a weighted metric whose name is taken becomes
    ``weighted_<name>`` (then ``_1``, ``_2``...).

    Parameters
    ----------
    names : list of str
        The metrics' names: first those of ``metrics``, then those of ``weighted_metrics``.
    weighted : list of bool
        Whether each is a weighted metric.

    Returns
    -------
    list of str
        One key per metric.
    """
    seen: dict[str, int] = {}
    keys = []
    for name, is_weighted in zip(names, weighted):
        if name not in seen:
            seen[name] = 1
            keys.append(name)
        elif not is_weighted:
            keys.append(f"{name}_{seen[name]}")
            seen[name] += 1
        else:
            name = f"weighted_{name}"
            if name not in seen:
                seen[name] = 1
            else:
                index = seen[name]
                seen[name] += 1
                name = f"{name}_{index}"
            keys.append(name)
    return keys
