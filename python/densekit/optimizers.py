"""Optimizers with Keras's names, defaults and update rules, each step one kernel call over the
model's flat parameter buffer (every weight of a model is a view into one array, and so is
every gradient).

The update rules are Keras 3's (the kernels' ``convention="keras"``), so that a Keras script
trains to the same weights within float32 rounding:

- ``SGD``: ``velocity = momentum * velocity - lr * g; p += velocity`` (Nesterov:
  ``p += momentum * velocity - lr * g``); the velocity holds the scaled step, so a rate that
  changes (a schedule, ``ReduceLROnPlateau``) acts as in Keras.
- ``Adam``/``AdamW``: ``p -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) +
  epsilon)``, epsilon added before the bias correction (torch adds it after);
  ``amsgrad=True`` normalises by the running maximum of ``v``.
- ``RMSprop``: ``p -= lr * g / sqrt(avg(g**2) + epsilon)`` (centered: minus ``avg(g)**2``
  inside the root); with momentum the buffer accumulates these scaled steps.
- ``Nadam``, ``Adamax``, ``Adagrad``, ``Lion``: Keras's rules (see each class).
- ``weight_decay`` is decoupled for every optimizer, as Keras applies it:
  ``p *= 1 - lr * weight_decay`` before the update, in the same kernel pass.

Around the update, as in Keras's base optimizer: ``gradient_accumulation_steps=k`` adds the
gradients of k - 1 batches into an accumulator and updates with the mean on the k-th;
``clipnorm`` clips each weight's gradient to that norm, ``global_clipnorm`` all of them together,
``clipvalue`` each element to ``[-clipvalue, clipvalue]``; ``use_ema`` keeps an exponential
moving average of the weights (``ema_momentum``), copies it into the weights every
``ema_overwrite_frequency`` steps if set, and at the end of ``fit``. ``learning_rate`` is a float
or a schedule, evaluated at the count of batches seen (Keras's ``iterations`` counts updates
when accumulating; ``Optimizer.iterations`` here always counts batches, what saving restores).

The kernels in ``densekit.kernels`` follow torch.optim's rules by default and Keras's with
``convention="keras"``.
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
    """Base class: Keras's options around the update rule. A subclass names its state arrays
    and returns its kernel call.

    Parameters
    ----------
    learning_rate : float or densekit.schedules.LearningRateSchedule
        The rate, or a schedule evaluated at the count of batches seen.
    weight_decay : float or None
        Decoupled weight decay, ``p *= 1 - lr * weight_decay`` before each update (Keras's).
    clipnorm, global_clipnorm, clipvalue : float or None
        At most one: clip each weight's gradient to this L2 norm, all of them together to
        this global norm, or each element to ``[-clipvalue, clipvalue]``.
    use_ema : bool
        Keep an exponential moving average of the weights (state ``"average"``); ``fit``
        ends by copying it into the weights.
    ema_momentum : float
        The average's momentum, in [0, 1].
    ema_overwrite_frequency : int or None
        With ``use_ema``, also copy the average into the weights every this many updates.
    gradient_accumulation_steps : int or None
        Update once every this many batches (>= 2), with the mean of their gradients (state
        ``"gradient_accumulator"``).
    name : str or None
        The optimizer's name (default: Keras's lower-case class name).
    **kwargs
        ``loss_scale_factor=None`` only (Keras's; densekit does not scale losses).

    Raises
    ------
    ValueError
        For a value out of range or two clipping options at once.
    TypeError
        For an unknown argument or a ``use_ema`` that is not a bool.
    """

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        global_clipnorm=None,
        clipvalue=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        if kwargs.pop("loss_scale_factor", None) is not None:
            raise ValueError(
                "loss_scale_factor: densekit trains in float32/float64 and does not scale "
                "losses; expected None"
            )
        if kwargs:
            raise TypeError(f"unsupported optimizer arguments: {sorted(kwargs)}")
        clips = {"clipnorm": clipnorm, "global_clipnorm": global_clipnorm, "clipvalue": clipvalue}
        if sum(value is not None for value in clips.values()) > 1:
            raise ValueError("clipnorm, global_clipnorm, clipvalue: set at most one of them")
        self.learning_rate = learning_rate
        self.weight_decay = (
            None if weight_decay is None else _non_negative(weight_decay, "weight_decay")
        )
        self.clipnorm = None if clipnorm is None else _positive_norm(clipnorm, "clipnorm")
        self.global_clipnorm = (
            None if global_clipnorm is None else _positive_norm(global_clipnorm, "global_clipnorm")
        )
        self.clipvalue = None if clipvalue is None else _positive_norm(clipvalue, "clipvalue")
        if not isinstance(use_ema, (bool, np.bool_)):
            raise TypeError(f"use_ema: expected True or False, got {use_ema!r}")
        self.use_ema = bool(use_ema)
        self.ema_momentum = _unit_interval(ema_momentum, "ema_momentum")
        self.ema_overwrite_frequency = _optional_count(
            ema_overwrite_frequency, "ema_overwrite_frequency", 1
        )
        self.gradient_accumulation_steps = _optional_count(
            gradient_accumulation_steps, "gradient_accumulation_steps", 2
        )
        self.name = name or _NAME_OF_CLASS[type(self).__name__]
        self.iterations = 0  # batches seen (Keras's internal count), what saving restores
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
        """The names of the state arrays, each shaped like the flat parameters: the update
        rule's (``_rule_state_names``), then ``"average"`` (``use_ema``) and
        ``"gradient_accumulator"`` (``gradient_accumulation_steps``)."""
        names = self._rule_state_names()
        if self.use_ema:
            names.append("average")
        if self.gradient_accumulation_steps:
            names.append("gradient_accumulator")
        return names

    def _rule_state_names(self) -> list[str]:
        return []

    def _initial_values(self) -> dict[str, float]:
        """State arrays that start at a value other than zero."""
        return {}

    def build(self, params: np.ndarray, grads: np.ndarray, grad_views: list[np.ndarray]) -> None:
        """Allocate the state for this parameter buffer (zeros) and prepare the step."""
        if self._params is not params:
            self.variables = {name: np.zeros_like(params) for name in self.state_names()}
            for name, value in self._initial_values().items():
                self.variables[name].fill(value)
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
        if self.clipvalue is not None:
            return functools.partial(
                np.clip, self._grads, -self.clipvalue, self.clipvalue, out=self._grads
            )
        return None

    def _make_update(self, params, grads):
        """A callable ``update(step=t, lr=rate)`` running the kernel over the flat buffers."""
        raise NotImplementedError

    def apply(self, schedule_step: int | None = None) -> None:
        """One step from the gradients in the model's buffers, as Keras's ``apply``: with
        gradient accumulation, adds them to the accumulator or updates with the mean; then
        clipping, the update (weight decay in it) and the moving average. The rate of a
        schedule is taken at ``schedule_step`` (default: this optimizer's count of batches;
        hogwild workers pass the global one)."""
        seen = self.iterations
        at = seen if schedule_step is None else schedule_step
        accumulate = self.gradient_accumulation_steps
        if accumulate and (seen + 1) % accumulate != 0:
            accumulator = self.variables["gradient_accumulator"]
            np.add(accumulator, self._grads, out=accumulator)
        else:
            if accumulate:  # the mean over the accumulated batches and this one
                accumulator = self.variables["gradient_accumulator"]
                np.add(self._grads, accumulator, out=self._grads)
                np.divide(self._grads, accumulate, out=self._grads)
                accumulator.fill(0)
            rate = self._learning_rate if self._schedule is None else float(self._schedule(at))
            if self._clip is not None:
                self._clip()
            self._update(step=self._update_count(seen) + 1, lr=rate)
        if self.use_ema:
            self._update_average(self._update_count(seen))
        self.iterations = seen + 1

    def _update_count(self, seen: int) -> int:
        """Keras's ``iterations``: the updates made after ``seen`` batches."""
        steps = self.gradient_accumulation_steps
        return seen // steps if steps else seen

    def _update_average(self, updates: int) -> None:
        """Keras's moving average of the weights: the first update's weights as they are,
        then ``average = m * average + (1 - m) * weights``; every
        ``ema_overwrite_frequency`` updates the weights take the average."""
        average = self.variables["average"]
        momentum = self.ema_momentum if updates != 0 else 0.0
        np.multiply(average, momentum, out=average)
        # the SGD kernel with maximize=True adds lr * grad: average += (1 - m) * weights
        kernels.sgd_step(average, self._params, lr=1.0 - momentum, maximize=True)
        frequency = self.ema_overwrite_frequency
        if frequency and (updates + 1) % frequency == 0:
            np.copyto(self._params, average)

    def finalized_parameters(self) -> np.ndarray | None:
        """What ``fit`` sets the weights to when it ends (Keras's
        ``finalize_variable_values``): the moving average with ``use_ema`` after at least one
        step, else None (the weights stay)."""
        if self.use_ema and self.iterations > 0 and self.built:
            return self.variables["average"]
        return None

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
            "clipvalue": self.clipvalue,
            "use_ema": self.use_ema,
            "ema_momentum": self.ema_momentum,
            "ema_overwrite_frequency": self.ema_overwrite_frequency,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
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


def _unit_interval(value, name: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.floating))
        or not 0 <= value <= 1
    ):
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def _optional_count(value, name: str, low: int) -> int | None:
    """None (or 0, Keras's "off" for these counts), or an int >= low."""
    if value is None or (isinstance(value, (int, np.integer)) and value == 0):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected None or an int >= {low}, got {value!r}")
    return int(value)


_KERAS = {"convention": "keras"}


class SGD(Optimizer):
    """Gradient descent with optional momentum, Keras's rule.

    ``velocity = momentum * velocity - lr * g``, then ``p += velocity`` (Nesterov:
    ``p += momentum * velocity - lr * g``), held in the state array ``"velocity"``.
    ``densekit.kernels.sgd_step`` computes torch's rule by default.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = _fraction(momentum, "momentum")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")
        self.nesterov = bool(nesterov)

    def _rule_state_names(self):
        return ["velocity"] if self.momentum else []

    def _make_update(self, params, grads):
        options = {"weight_decay": self.weight_decay or 0.0, **_KERAS}
        if self.momentum:
            options.update(
                momentum=self.momentum, velocity=self.variables["velocity"], nesterov=self.nesterov
            )
        update = functools.partial(kernels.sgd_step, params, grads, **options)
        return lambda step, lr: update(lr=lr)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam, Keras's rule: ``p -= lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m /
    (sqrt(v) + epsilon)`` (torch adds epsilon after the bias correction instead).
    ``amsgrad=True`` uses the running maximum of ``v``."""

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

    def _rule_state_names(self):
        return ["m", "v", "v_max"] if self.amsgrad else ["m", "v"]

    def _make_update(self, params, grads):
        state = self.variables
        options = {
            "beta1": self.beta_1,
            "beta2": self.beta_2,
            "eps": self.epsilon,
            "weight_decay": self.weight_decay or 0.0,
            **_KERAS,
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
    """RMSprop, Keras's rule: ``step = lr * g / sqrt(avg(g**2) + epsilon)`` (centered: minus
    ``avg(g)**2`` inside the root); with momentum ``buffer = momentum * buffer + step`` and
    ``p -= buffer``, else ``p -= step``. torch puts epsilon outside the root and the rate
    outside the buffer."""

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

    def _rule_state_names(self):
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
            **_KERAS,
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


class Nadam(Optimizer):
    """Adam with Nesterov momentum, Keras's rule: the momentum schedule
    ``mu_t = beta_1 * (1 - 0.5 * 0.96**t)`` and
    ``p -= lr * (mu_(t+1) * m / (1 - prod mu_1..mu_(t+1)) + (1 - mu_t) * g /
    (1 - prod mu_1..mu_t)) / (sqrt(v / (1 - beta_2**t)) + epsilon)``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self._mu_product: tuple[int, float] | None = None  # (update count, product)

    def _rule_state_names(self):
        return ["m", "v"]

    def _make_update(self, params, grads):
        state = self.variables
        update = functools.partial(
            kernels.nadam_step,
            params,
            grads,
            state["m"],
            state["v"],
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=self.weight_decay or 0.0,
            **_KERAS,
        )

        def nadam(step, lr):
            # The product carried from the previous update; recomputed by the kernel when the
            # count moved otherwise (a loaded state, a Hogwild merge).
            carried = self._mu_product
            known = carried[1] if carried is not None and carried[0] == step - 1 else None
            self._mu_product = (step, update(step=step, lr=lr, mu_product=known))

        return nadam

    def momentum_product(self) -> float:
        """``mu_1 * ... * mu_t`` after ``t = iterations`` updates, as Keras keeps it (its
        Nadam's ``u_product`` variable) and the kernel computes it: the product of the last
        update, or computed from the step count in Keras's arithmetic.

        Returns
        -------
        float
            The product (1.0 before the first update).
        """
        steps = self._update_count(self.iterations)
        if steps == 0:
            return 1.0
        carried = self._mu_product
        if carried is not None and carried[0] == steps:
            return carried[1]
        dtype = self._params.dtype if self._params is not None else np.float32
        empty = np.zeros(0, dtype)
        # the kernel on no parameters: the product through `steps` and nothing else
        return kernels.nadam_step(
            empty,
            empty,
            empty.copy(),
            empty.copy(),
            step=steps,
            lr=0.0,
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            **_KERAS,
        )

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


class Adamax(Optimizer):
    """Adam's infinity-norm variant, Keras's rule: ``u = max(beta_2 * u, |g|)``,
    ``p -= lr * m / ((u + epsilon) * (1 - beta_1**t))`` (torch puts epsilon into ``u``)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _fraction(beta_1, "beta_1")
        self.beta_2 = _fraction(beta_2, "beta_2")
        self.epsilon = _non_negative(epsilon, "epsilon")

    def _rule_state_names(self):
        return ["m", "u"]

    def _make_update(self, params, grads):
        state = self.variables
        return functools.partial(
            kernels.adamax_step,
            params,
            grads,
            state["m"],
            state["u"],
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=self.weight_decay or 0.0,
            **_KERAS,
        )

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return config


class Adagrad(Optimizer):
    """Adagrad, Keras's rule: ``accumulator += g**2; p -= lr * g / sqrt(accumulator +
    epsilon)``, the accumulator starting at ``initial_accumulator_value`` (torch: epsilon
    outside the root, starting at 0)."""

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value = _non_negative(
            initial_accumulator_value, "initial_accumulator_value"
        )
        self.epsilon = _non_negative(epsilon, "epsilon")

    def _rule_state_names(self):
        return ["accumulator"]

    def _initial_values(self):
        return {"accumulator": self.initial_accumulator_value}

    def _make_update(self, params, grads):
        update = functools.partial(
            kernels.adagrad_step,
            params,
            grads,
            self.variables["accumulator"],
            eps=self.epsilon,
            weight_decay=self.weight_decay or 0.0,
            **_KERAS,
        )
        return lambda step, lr: update(lr=lr)

    def get_config(self):
        config = super().get_config()
        config.update(
            initial_accumulator_value=self.initial_accumulator_value, epsilon=self.epsilon
        )
        return config


class Lion(Optimizer):
    """Lion (Chen et al. 2023), Keras's rule: ``p -= lr * sign(beta_1 * m + (1 - beta_1) *
    g)``, then ``m = beta_2 * m + (1 - beta_2) * g``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = _unit_interval(beta_1, "beta_1")
        self.beta_2 = _unit_interval(beta_2, "beta_2")
        if self.beta_1 == 0:
            raise ValueError("beta_1: expected a number in (0, 1], got 0 (Keras's range)")

    def _rule_state_names(self):
        return ["m"]

    def _make_update(self, params, grads):
        update = functools.partial(
            kernels.lion_step,
            params,
            grads,
            self.variables["m"],
            beta1=self.beta_1,
            beta2=self.beta_2,
            weight_decay=self.weight_decay or 0.0,
        )
        return lambda step, lr: update(lr=lr)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2)
        return config


_CLASSES = {
    "sgd": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "nadam": Nadam,
    "adamax": Adamax,
    "adagrad": Adagrad,
    "lion": Lion,
}
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


# The options every optimizer's config has had since the update rules became Keras's; a config
# without them was written under torch's rules.
_KERAS_OPTIONS = {
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "gradient_accumulation_steps": None,
}


def with_current_options(config: dict) -> dict:
    """A serialized optimizer (``serialize``'s form) with the options added since it may have
    been written filled in with their defaults: what ``serialize(deserialize(config))``
    gives. A copy; ``config`` is unchanged."""
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        return config
    return {**config, "config": {**_KERAS_OPTIONS, **inner}}


def legacy_state_factors(config: dict, optimizer: Optimizer) -> dict[str, float]:
    """Factors that turn the state saved with ``config`` into ``optimizer``'s meaning, for
    files written under torch's rules (their configs lack the Keras options): SGD's velocity
    held gradients (Keras's holds ``-lr * g``) and RMSprop's momentum buffer unscaled steps
    (Keras's ``lr`` times them), so both scale by the rate of the next step. Empty for a
    current file and for state whose meaning is the same (moments, averages)."""
    inner = config.get("config", {})
    if set(_KERAS_OPTIONS) <= set(inner) or "velocity" not in optimizer.variables:
        return {}
    rate = optimizer.learning_rate  # at the restored step count: the next step's rate
    if isinstance(optimizer, SGD):
        return {"velocity": -rate}
    if isinstance(optimizer, RMSprop):
        return {"velocity": rate}
    return {}


def serialize(optimizer: Optimizer) -> dict:
    return _registry.serialize(optimizer)


def deserialize(config: dict) -> Optimizer:
    return _registry.deserialize(config, _BY_CLASS, "optimizer class")
