"""Regularizers with Keras's names and formulas: a penalty added to the loss.

``L1L2(l1, l2)`` is ``l1 * sum(|x|) + l2 * sum(x**2)``; ``L1`` and ``L2`` are its two halves.
A layer's ``kernel_regularizer`` and ``bias_regularizer`` penalise its weights,
``activity_regularizer`` its output (divided by the batch size, as Keras 3 does). Training
adds the penalty to the loss and its gradient (``l1 * sign(x) + 2 * l2 * x``) to the
weights' or the output's gradient, through ``bind``: kernel calls and NumPy ufuncs on
preallocated buffers, no allocation and no Python loop over elements.
"""

from __future__ import annotations

import math

import numpy as np

from . import _registry, kernels

_BIG_NORM = 1e300  # clip_by_global_norm with this bound only measures the norm


def _factor(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (math.isfinite(value) and value >= 0)
    ):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


class Regularizer(_registry.Configurable):
    """A penalty ``l1 * sum(|x|) + l2 * sum(x**2)`` on an array (Keras's ``L1L2`` family).

    Calling one on an array returns its penalty; ``bind`` returns the call training makes.
    """

    l1 = 0.0
    l2 = 0.0

    def __call__(self, x) -> float:
        """The penalty of ``x`` (a float, computed in float64)."""
        x = np.asarray(x, dtype=np.float64)
        return self.l1 * float(np.abs(x).sum()) + self.l2 * float(np.square(x).sum())

    @property
    def active(self) -> bool:
        """Whether the penalty can be nonzero (a factor is nonzero)."""
        return self.l1 != 0 or self.l2 != 0

    @property
    def needs_scratch(self) -> bool:
        """Whether ``bind`` needs a scratch array shaped like ``x`` (the L1 half does)."""
        return self.l1 != 0

    def bind(
        self,
        x: np.ndarray,
        grad: np.ndarray | None,
        scratch=None,
        scale: float = 1.0,
        penalty: bool = True,
    ):
        """A call computing ``scale`` times the penalty of ``x`` (returned as a float) and,
        with ``grad``, adding ``scale`` times its gradient into ``grad``.

        Parameters
        ----------
        x : numpy.ndarray
            The penalised array (a weight, or a layer's output rows); read when called.
        grad : numpy.ndarray or None
            The gradient of the loss with respect to ``x``, shaped like it; None for the
            penalty alone.
        scratch : numpy.ndarray or None
            An array shaped like ``x``, of its dtype (needed when ``needs_scratch``).
        scale : float
            A factor on penalty and gradient (1 / batch size for an activity penalty).
        penalty : bool
            False: only the gradient (the call returns 0.0), for a penalty computed by
            another call.

        Returns
        -------
        callable
            ``call() -> float``.
        """
        l1, l2 = self.l1 * scale, self.l2 * scale
        if l1 != 0 and (scratch is None or scratch.shape != x.shape):
            raise ValueError("scratch: the L1 penalty needs a scratch array shaped like x")
        sign, vdot, measure, sgd_step = (
            np.sign,
            np.vdot,
            kernels.clip_by_global_norm,
            kernels.sgd_step,
        )

        def call() -> float:
            value = 0.0
            if l1 != 0:
                sign(x, out=scratch)  # sum(|x|) = sign(x) . x, and sign(x) is the gradient
                if penalty:
                    value += l1 * float(vdot(scratch, x))
                if grad is not None:
                    sgd_step(grad, scratch, lr=l1, maximize=True)  # grad += l1 * sign(x)
            if l2 != 0:
                if penalty:
                    value += l2 * measure([x], _BIG_NORM) ** 2
                if grad is not None:
                    sgd_step(grad, x, lr=2.0 * l2, maximize=True)  # grad += 2 * l2 * x
            return value

        return call


class L1L2(Regularizer):
    """``l1 * sum(|x|) + l2 * sum(x**2)``; both factors default to 0 (Keras's)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = _factor(l1, "l1"), _factor(l2, "l2")

    def get_config(self) -> dict:
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    """``l1 * sum(|x|)``; its gradient is ``l1 * sign(x)`` (0 at 0)."""

    def __init__(self, l1=0.01):
        self.l1 = _factor(l1, "l1")

    def get_config(self) -> dict:
        return {"l1": self.l1}


class L2(Regularizer):
    """``l2 * sum(x**2)``; its gradient is ``2 * l2 * x``."""

    def __init__(self, l2=0.01):
        self.l2 = _factor(l2, "l2")

    def get_config(self) -> dict:
        return {"l2": self.l2}


l1 = L1
l2 = L2
l1_l2 = L1L2

_REGISTRY = {"l1": L1, "l2": L2, "l1_l2": L1L2}
_BY_CLASS = {cls.__name__: cls for cls in _REGISTRY.values()}


def get(identifier, name: str = "kernel_regularizer") -> Regularizer | None:
    """A regularizer from None, a name (``"l1"``, ``"l2"``, ``"l1_l2"`` or a class name), a
    config dict or an instance.

    Parameters
    ----------
    identifier : None, str, dict or Regularizer
        What to resolve.
    name : str
        The argument's name in error messages.

    Returns
    -------
    Regularizer or None
        The regularizer (None for None).
    """
    return _registry.resolve_optional(
        identifier, Regularizer, _REGISTRY, _BY_CLASS, "regularizer", name
    )


def serialize(regularizer: Regularizer | None):
    """The config form ``{"class_name", "config"}`` of ``regularizer`` (None for None)."""
    if regularizer is None:
        return None
    return _registry.serialize(regularizer)


def deserialize(config) -> Regularizer | None:
    """The regularizer of a ``serialize`` result."""
    return get(config, "regularizer")
