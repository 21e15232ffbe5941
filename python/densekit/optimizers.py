"""Optimizers with Keras's names and defaults, each step one kernel call over the model's flat
parameter buffer (every weight of a model is a view into one array, and so is every gradient).

The update rules are torch.optim's (the kernels follow them operation by operation):

- ``Adam``: ``p -= lr / (1 - beta_1**t) * m / (sqrt(v / (1 - beta_2**t)) + epsilon)``, epsilon
  outside the square root's bias correction as in torch (Keras puts the correction on
  epsilon); the default ``epsilon`` is Keras's 1e-7. ``weight_decay`` is decoupled, as Keras 3
  applies it (``p *= 1 - lr * weight_decay``), so ``Adam(weight_decay=w)`` equals ``AdamW``.
- ``SGD``: torch's momentum buffer ``v = momentum * v + g; p -= lr * v`` (Nesterov:
  ``p -= lr * (g + momentum * v)``), the same steps as Keras's with a constant rate.
- ``RMSprop``: ``p -= lr * g / (sqrt(avg(g**2)) + epsilon)``; ``rho`` is Keras's name for
  torch's ``alpha``.
- SGD and RMSprop add ``weight_decay * p`` to the gradient (torch's coupled L2 form).

``clipnorm`` clips each weight's gradient to that norm, ``global_clipnorm`` all of them
together, before the update (Keras). ``learning_rate`` is a float or a schedule.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _registry, kernels, schedules
from .schedules import LearningRateSchedule  # noqa: F401 - Keras: optimizers.schedules

_BIG_NORM = 1e300  # a clipping bound never reached: clip_by_global_norm then only measures


def _non_negative(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not value >= 0
    ):
        raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    return float(value)


def _fraction(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not 0 <= value < 1
    ):
        raise ValueError(f"{name}: expected a number in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class. A subclass names its state arrays and returns its kernel call."""

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        global_clipnorm=None,
        name=None,
        **kwargs,
    ):
        if kwargs:
            raise TypeError(f"unsupported optimizer arguments: {sorted(kwargs)}")
        if clipnorm is not None and global_clipnorm is not None:
            raise ValueError("clipnorm, global_clipnorm: set at most one of them")
        self.learning_rate = learning_rate
        self.weight_decay = (
            None if weight_decay is None else _non_negative(weight_decay, "weight_decay")
        )
        self.clipnorm = None if clipnorm is None else _positive_norm(clipnorm, "clipnorm")
        self.global_clipnorm = (
            None if global_clipnorm is None else _positive_norm(global_clipnorm, "global_clipnorm")
        )
        self.name = name or _NAME_OF_CLASS[type(self).__name__]
        self.iterations = 0
        self.variables: dict[str, np.ndarray] = {}  # state arrays, each shaped like the params
        self._params: np.ndarray | None = None

    # -- learning rate -----------------------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The rate of the next step (a schedule is evaluated at ``iterations``)."""
        if self._schedule is not None:
            return float(self._schedule(self.iterations))
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value) -> None:
        if isinstance(value, schedules.LearningRateSchedule):
            self._schedule, self._learning_rate = value, None
            return
        if getattr(self, "_schedule", None) is not None:
            raise TypeError(
                "learning_rate: this optimizer was created with a LearningRateSchedule; "
                "it cannot be set to a number"
            )
        self._schedule, self._learning_rate = None, _non_negative(value, "learning_rate")

    # -- building and stepping -----------------------------------------------------------
    def state_names(self) -> list[str]:
        return []

    def build(self, params: np.ndarray, grads: np.ndarray, grad_views: list[np.ndarray]) -> None:
        """Allocate the state for this parameter buffer (zeros) and prepare the step."""
        if self._params is not params:
            self.variables = {name: np.zeros_like(params) for name in self.state_names()}
            self.iterations = 0
        self._params, self._grads, self._grad_views = params, grads, grad_views
        self._clip = self._make_clip()
        self._update = self._make_update(params, grads)

    @property
    def built(self) -> bool:
        return self._params is not None

    def is_bound_to(self, params: np.ndarray) -> bool:
        """Whether ``build`` last bound this optimizer (and so its state) to ``params``."""
        return self._params is params

    def _make_clip(self):
        if self.global_clipnorm is not None:
            return functools.partial(
                kernels.clip_by_global_norm, [self._grads], self.global_clipnorm
            )
        if self.clipnorm is not None:
            calls = [
                functools.partial(kernels.clip_by_global_norm, [g], self.clipnorm)
                for g in self._grad_views
            ]
            return lambda: [call() for call in calls]
        return None

    def _make_update(self, params, grads):
        """A callable ``update(step=t, lr=rate)`` running the kernel over the flat buffers."""
        raise NotImplementedError

    def apply(self, schedule_step: int | None = None) -> None:
        """One update of the parameters from the gradients in the model's buffers. The rate
        of a schedule is taken at ``schedule_step`` (default: this optimizer's step count;
        hogwild workers pass the global one)."""
        step = self.iterations + 1
        at = step - 1 if schedule_step is None else schedule_step
        rate = self._learning_rate if self._schedule is None else float(self._schedule(at))
        if self._clip is not None:
            self._clip()
        self._update(step=step, lr=rate)
        self.iterations = step

    # -- configuration -----------------------------------------------------------------
    def get_config(self) -> dict:
        rate = (
            self._learning_rate if self._schedule is None else schedules.serialize(self._schedule)
        )
        return {
            "name": self.name,
            "learning_rate": rate,
            "weight_decay": self.weight_decay,
            "clipnorm": self.clipnorm,
            "global_clipnorm": self.global_clipnorm,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} learning_rate={self.learning_rate!r}>"


def _positive_norm(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


class SGD(Optimizer):
    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _fraction(momentum, "momentum")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def state_names(self):
        return ["velocity"] if self.momentum else []

    def _make_update(self, params, grads):
        options = {"weight_decay": self.weight_decay or 0.0}
        if self.momentum:
            options.update(
                momentum=self.momentum, velocity=self.variables["velocity"], nesterov=self.nesterov
            )
            return functools.partial(kernels.sgd_step, params, grads, **options)
        update = functools.partial(kernels.sgd_step, params, grads, **options)
        return lambda step, lr: update(lr=lr)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        **kwargs,
    ):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self.amsgrad = bool(amsgrad)

    def state_names(self):
        return ["m", "v", "v_max"] if self.amsgrad else ["m", "v"]

    def _make_update(self, params, grads):
        state = self.variables
        options = {
            "beta1": self.beta_1,
            "beta2": self.beta_2,
            "eps": self.epsilon,
            "weight_decay": self.weight_decay or 0.0,
            "decoupled_weight_decay": True,
        }
        if self.amsgrad:
            options["v_max"] = state["v_max"]
        return functools.partial(
            kernels.adam_step, params, grads, state["m"], state["v"], **options
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon, amsgrad=self.amsgrad
        )
        return config


class AdamW(Adam):
    """Adam with decoupled weight decay, Keras's default ``weight_decay=0.004``."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    def __init__(
        self,
        learning_rate=0.001,
        rho=0.9,
        momentum=0.0,
        epsilon=1e-7,
        centered=False,
        **kwargs,
    ):
        super().__init__(learning_rate, **kwargs)
        self.rho = _fraction(rho, "rho")
        self.momentum = _fraction(momentum, "momentum")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self.centered = bool(centered)

    def state_names(self):
        names = ["square_avg"]
        if self.momentum:
            names.append("velocity")
        if self.centered:
            names.append("grad_avg")
        return names

    def _make_update(self, params, grads):
        state = self.variables
        options = {
            "alpha": self.rho,
            "eps": self.epsilon,
            "weight_decay": self.weight_decay or 0.0,
            "momentum": self.momentum,
            "centered": self.centered,
        }
        if self.momentum:
            options["velocity"] = state["velocity"]
        if self.centered:
            options["grad_avg"] = state["grad_avg"]
        update = functools.partial(
            kernels.rmsprop_step, params, grads, state["square_avg"], **options
        )
        return lambda step, lr: update(lr=lr)

    def get_config(self):
        config = super().get_config()
        config.update(
            rho=self.rho, momentum=self.momentum, epsilon=self.epsilon, centered=self.centered
        )
        return config


_CLASSES = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
_NAME_OF_CLASS = {cls.__name__: name for name, cls in _CLASSES.items()}
_BY_CLASS = {cls.__name__: cls for cls in _CLASSES.values()}


def get(identifier) -> Optimizer:
    """An optimizer from a name (``"adam"``, Keras's defaults) or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _CLASSES.get(identifier.lower()) or _BY_CLASS.get(identifier)
        if cls is None:
            raise ValueError(
                f"optimizer: unknown optimizer {identifier!r}; expected one of {sorted(_CLASSES)}"
            )
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(
        f"optimizer: expected a name or a densekit.optimizers.Optimizer, got {identifier!r}"
    )


def serialize(optimizer: Optimizer) -> dict:
    return _registry.serialize(optimizer)


def deserialize(config: dict) -> Optimizer:
    return _registry.deserialize(config, _BY_CLASS, "optimizer class")
