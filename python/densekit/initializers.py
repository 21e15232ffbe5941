"""Weight initializers with Keras's names and formulas, reproducible from a seed.

An initializer is called once per weight when a model is built (NumPy, not on any hot
path): ``init(shape, dtype) -> ndarray``. Fans follow Keras for a Dense kernel of shape
(in, units): fan_in = in, fan_out = units. The ``*_normal`` variance-scaling initializers draw
from a normal truncated at two standard deviations, rescaled to keep the target variance.
"""

from __future__ import annotations

import math

import numpy as np

from . import _random, _registry

# Standard deviation of a unit normal truncated to [-2, 2] (Keras's correction constant).
_TRUNCATED_STDDEV = 0.87962566103423978


class Initializer(_registry.Configurable):
    """Base class: subclasses implement ``_draw(shape, rng) -> float64 ndarray``."""

    def __init__(self, seed=None):
        self.seed = _random.check_seed(seed)

    def __call__(self, shape, dtype="float32") -> np.ndarray:
        shape = tuple(int(d) for d in shape)
        rng = _random.generator(self.seed)
        return np.ascontiguousarray(self._draw(shape, rng), dtype=np.dtype(dtype))

    def _draw(self, shape, rng):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {"seed": self.seed}


def _fans(shape) -> tuple[float, float]:
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = math.prod(shape[:-2])
    return float(shape[-2] * receptive), float(shape[-1] * receptive)


def _truncated_normal(rng, shape, stddev):
    """Normal(0, stddev) truncated to two standard deviations, by redrawing the outliers."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * stddev


class VarianceScaling(Initializer):
    """Keras's VarianceScaling: variance ``scale / fan`` for fan in (fan_in, fan_out, fan_avg)."""

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"scale: expected a number > 0, got {scale!r}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"mode: expected 'fan_in', 'fan_out' or 'fan_avg', got {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(
                "distribution: expected 'truncated_normal', 'untruncated_normal' or 'uniform', "
                f"got {distribution!r}"
            )
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def _draw(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        variance = self.scale / max(1.0, fan)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * variance)
            return rng.uniform(-limit, limit, shape)
        if self.distribution == "untruncated_normal":
            return rng.standard_normal(shape) * math.sqrt(variance)
        return _truncated_normal(rng, shape, math.sqrt(variance) / _TRUNCATED_STDDEV)

    def get_config(self) -> dict:
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            "seed": self.seed,
        }


def _preset(scale, mode, distribution, doc):
    class Preset(VarianceScaling):
        __doc__ = doc

        def __init__(self, seed=None):
            super().__init__(scale, mode, distribution, seed)

        def get_config(self) -> dict:
            return {"seed": self.seed}

    return Preset


GlorotUniform = _preset(1.0, "fan_avg", "uniform", "U(-l, l), l = sqrt(6 / (fan_in + fan_out)).")
GlorotNormal = _preset(1.0, "fan_avg", "truncated_normal", "Truncated normal, var 2/(in+out).")
HeUniform = _preset(2.0, "fan_in", "uniform", "U(-l, l), l = sqrt(6 / fan_in).")
HeNormal = _preset(2.0, "fan_in", "truncated_normal", "Truncated normal, var 2 / fan_in.")
LecunUniform = _preset(1.0, "fan_in", "uniform", "U(-l, l), l = sqrt(3 / fan_in).")
LecunNormal = _preset(1.0, "fan_in", "truncated_normal", "Truncated normal, var 1 / fan_in.")
for _cls, _name in [
    (GlorotUniform, "GlorotUniform"),
    (GlorotNormal, "GlorotNormal"),
    (HeUniform, "HeUniform"),
    (HeNormal, "HeNormal"),
    (LecunUniform, "LecunUniform"),
    (LecunNormal, "LecunNormal"),
]:
    _cls.__name__ = _cls.__qualname__ = _name


class Zeros(Initializer):
    def __init__(self):
        super().__init__(None)

    def _draw(self, shape, rng):
        return np.zeros(shape)

    def get_config(self) -> dict:
        return {}


class Ones(Zeros):
    def _draw(self, shape, rng):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        super().__init__(None)
        self.value = float(value)

    def _draw(self, shape, rng):
        return np.full(shape, self.value)

    def get_config(self) -> dict:
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def _draw(self, shape, rng):
        return rng.normal(self.mean, self.stddev, shape)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class TruncatedNormal(Initializer):
    """Normal(``mean``, ``stddev``) with the values more than two standard deviations from
    the mean discarded and drawn again (Keras's definition: no rescaling, so the spread is
    about 0.88 ``stddev``)."""

    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        super().__init__(seed)
        self.mean = _finite(mean, "mean")
        self.stddev = _finite(stddev, "stddev")
        if not self.stddev > 0:
            raise ValueError(f"stddev: expected a number > 0, got {stddev!r}")

    def _draw(self, shape, rng):
        return self.mean + _truncated_normal(rng, shape, self.stddev)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class Orthogonal(Initializer):
    """``gain`` times an orthogonal matrix (Keras's formula): the Q of the QR factorization
    of a standard normal (max(r, c), min(r, c)) matrix, its columns' signs set by R's
    diagonal so that Q is uniform over the orthogonal matrices, transposed when the weight
    is wider than tall. A (rows, cols) weight then has orthonormal columns (rows >= cols) or
    orthonormal rows (rows < cols), scaled by ``gain``. Leading dimensions of a weight of
    more than two are folded into the rows."""

    def __init__(self, gain=1.0, seed=None):
        super().__init__(seed)
        self.gain = _finite(gain, "gain")

    def _draw(self, shape, rng):
        if len(shape) < 2:
            raise ValueError(
                f"shape: Orthogonal initializes weights of two or more dimensions, got {shape}"
            )
        rows, cols = math.prod(shape[:-1]), shape[-1]
        normal = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(normal)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q.reshape(shape)

    def get_config(self) -> dict:
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    """``gain`` times the identity matrix of a 2-D weight: ones on the main diagonal, also
    for a non-square (rows, cols) weight (``numpy.eye(rows, cols)``), as in Keras."""

    def __init__(self, gain=1.0):
        super().__init__(None)
        self.gain = _finite(gain, "gain")

    def _draw(self, shape, rng):
        if len(shape) != 2:
            raise ValueError(f"shape: Identity initializes 2-D weights only, got {shape}")
        return self.gain * np.eye(*shape)

    def get_config(self) -> dict:
        return {"gain": self.gain}


def _finite(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not math.isfinite(value)
    ):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def _draw(self, shape, rng):
        return rng.uniform(self.minval, self.maxval, shape)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


_REGISTRY = {
    "glorot_uniform": GlorotUniform,
    "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform,
    "he_normal": HeNormal,
    "lecun_uniform": LecunUniform,
    "lecun_normal": LecunNormal,
    "zeros": Zeros,
    "ones": Ones,
    "constant": Constant,
    "random_normal": RandomNormal,
    "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal,
    "orthogonal": Orthogonal,
    "identity": Identity,
    "variance_scaling": VarianceScaling,
}
_BY_CLASS = {cls.__name__: cls for cls in _REGISTRY.values()}
# Keras 3 also writes these two under their older class names
_BY_CLASS.update(OrthogonalInitializer=Orthogonal, IdentityInitializer=Identity)


def get(identifier, name: str = "initializer") -> Initializer:
    """An initializer from a name (``"he_normal"``), a config dict or an instance."""
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        cls = _REGISTRY.get(identifier) or _BY_CLASS.get(identifier)
        if cls is None:
            raise ValueError(
                f"{name}: unknown initializer {identifier!r}; expected one of {sorted(_REGISTRY)}"
            )
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"{name}: expected an initializer name or instance, got {identifier!r}")


def serialize(initializer: Initializer) -> dict:
    return _registry.serialize(initializer)


def deserialize(config: dict) -> Initializer:
    return _registry.deserialize(config, _BY_CLASS, "initializer class")
