"""Weight constraints with Keras's names and formulas, applied after each optimizer step.

A layer's ``kernel_constraint`` / ``bias_constraint`` projects the weight back onto its set
after every update, as Keras's optimizers do (``w.assign(constraint(w))``):

- ``MaxNorm(max_value=2, axis=0)``: ``w * clip(norm, 0, max_value) / (epsilon + norm)``,
- ``UnitNorm(axis=0)``: ``w / (epsilon + norm)``,
- ``NonNeg()``: ``max(w, 0)``,

where ``norm`` is the L2 norm along ``axis`` (for a Dense kernel (inputs, units), axis 0 is
each unit's incoming weights) and ``epsilon`` Keras's 1e-7. Training runs ``bind``'s call:
NumPy ufuncs on buffers allocated once, in place.
"""

from __future__ import annotations

import math

import numpy as np

from . import _registry

EPSILON = 1e-7  # keras.backend.epsilon()


def _axis(axis) -> int | tuple[int, ...]:
    if isinstance(axis, (list, tuple)):
        if not axis:
            raise ValueError("axis: expected an int or a non-empty list of ints, got []")
        return tuple(_axis(a) for a in axis)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis: expected an int or a list of ints, got {axis!r}")
    return int(axis)


def _axis_config(axis):
    return list(axis) if isinstance(axis, tuple) else axis


class Constraint(_registry.Configurable):
    """Base class: ``constraint(w)`` returns the projected array; ``bind(w)`` returns a call
    that projects ``w`` in place."""

    def __call__(self, w) -> np.ndarray:
        w = np.array(w, dtype=np.result_type(np.asarray(w).dtype, np.float32), copy=True)
        self.bind(w)()
        return w

    def bind(self, w: np.ndarray):
        """A call projecting ``w`` in place (its scratch buffers allocated now).

        Parameters
        ----------
        w : numpy.ndarray
            The weight (a view into the model's parameter buffer).

        Returns
        -------
        callable
            ``call() -> None``.
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}


class _NormConstraint(Constraint):
    """Shared by MaxNorm and UnitNorm: the L2 norms of ``w`` along ``axis``."""

    def _norm_buffers(self, w: np.ndarray):
        axis = self.axis if isinstance(self.axis, tuple) else (self.axis,)
        for a in axis:
            if not -w.ndim <= a < w.ndim:
                raise ValueError(
                    f"axis: {self.axis!r} is out of range for a weight of shape {w.shape}"
                )
        reduced = {a % w.ndim for a in axis}
        norm_shape = tuple(1 if d in reduced else n for d, n in enumerate(w.shape))
        return np.empty_like(w), np.empty(norm_shape, w.dtype), np.empty(norm_shape, w.dtype)

    def _norms_call(self, w, squares, norms):
        axis, square, add_reduce, sqrt = self.axis, np.square, np.add.reduce, np.sqrt

        def norms_of_w():
            square(w, out=squares)
            add_reduce(squares, axis=axis, keepdims=True, out=norms)
            sqrt(norms, out=norms)

        return norms_of_w


class MaxNorm(_NormConstraint):
    """Rescales the weights whose L2 norm along ``axis`` exceeds ``max_value`` to that norm
    (``w * clip(norm, 0, max_value) / (1e-7 + norm)``, Keras's formula)."""

    def __init__(self, max_value=2, axis=0):
        if (
            isinstance(max_value, bool)
            or not isinstance(max_value, (int, float, np.integer, np.floating))
            or not (math.isfinite(max_value) and max_value > 0)
        ):
            raise ValueError(f"max_value: expected a finite number > 0, got {max_value!r}")
        self.max_value = max_value
        self.axis = _axis(axis)

    def bind(self, w: np.ndarray):
        squares, norms, desired = self._norm_buffers(w)
        norms_of_w = self._norms_call(w, squares, norms)
        limit = w.dtype.type(self.max_value)
        epsilon = w.dtype.type(EPSILON)
        clip, add, divide, multiply = np.clip, np.add, np.divide, np.multiply

        def call() -> None:
            norms_of_w()
            clip(norms, 0, limit, out=desired)
            add(norms, epsilon, out=norms)
            divide(desired, norms, out=desired)
            multiply(w, desired, out=w)

        return call

    def get_config(self) -> dict:
        return {"max_value": self.max_value, "axis": _axis_config(self.axis)}


class UnitNorm(_NormConstraint):
    """Scales the weights to unit L2 norm along ``axis`` (``w / (1e-7 + norm)``)."""

    def __init__(self, axis=0):
        self.axis = _axis(axis)

    def bind(self, w: np.ndarray):
        squares, norms, _ = self._norm_buffers(w)
        norms_of_w = self._norms_call(w, squares, norms)
        epsilon = w.dtype.type(EPSILON)
        add, divide = np.add, np.divide

        def call() -> None:
            norms_of_w()
            add(norms, epsilon, out=norms)
            divide(w, norms, out=w)

        return call

    def get_config(self) -> dict:
        return {"axis": _axis_config(self.axis)}


class NonNeg(Constraint):
    """Sets the negative weights to 0 (``max(w, 0)``)."""

    def bind(self, w: np.ndarray):
        maximum, zero = np.maximum, w.dtype.type(0)

        def call() -> None:
            maximum(w, zero, out=w)

        return call


max_norm = MaxNorm
non_neg = NonNeg
unit_norm = UnitNorm

_REGISTRY = {"max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm}
_BY_CLASS = {cls.__name__: cls for cls in _REGISTRY.values()}


def get(identifier, name: str = "kernel_constraint") -> Constraint | None:
    """A constraint from None, a name (``"max_norm"``, ``"non_neg"``, ``"unit_norm"`` or a
    class name), a config dict or an instance.

    Parameters
    ----------
    identifier : None, str, dict or Constraint
        What to resolve.
    name : str
        The argument's name in error messages.

    Returns
    -------
    Constraint or None
        The constraint (None for None).
    """
    return _registry.resolve_optional(
        identifier, Constraint, _REGISTRY, _BY_CLASS, "constraint", name
    )


def serialize(constraint: Constraint | None):
    """The config form ``{"class_name", "config"}`` of ``constraint`` (None for None)."""
    if constraint is None:
        return None
    return _registry.serialize(constraint)


def deserialize(config) -> Constraint | None:
    """The constraint of a ``serialize`` result."""
    return get(config, "constraint")
