"""Learning-rate schedules (Keras's ``optimizers.schedules``): ``schedule(step) -> rate``.

``step`` is the optimizer's iteration count before the update (0 for the first step), as in
Keras. Evaluated once per training step in Python: one scalar, no arrays.
"""

from __future__ import annotations

import math

from . import _registry


class LearningRateSchedule(_registry.Configurable):
    def __call__(self, step: int) -> float:
        raise NotImplementedError


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected a number > 0, got {value!r}")
    return float(value)


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (floored if staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        self.initial_learning_rate = _positive(initial_learning_rate, "initial_learning_rate")
        self.decay_steps = _positive(decay_steps, "decay_steps")
        self.decay_rate = _positive(decay_rate, "decay_rate")
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: int) -> float:
        exponent = step / self.decay_steps
        if self.staircase:
            exponent = math.floor(exponent)
        return self.initial_learning_rate * self.decay_rate**exponent

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
            "staircase": self.staircase,
            "name": self.name,
        }


class CosineDecay(LearningRateSchedule):
    """Optional linear warmup from ``initial_learning_rate`` to ``warmup_target`` over
    ``warmup_steps``, then a cosine from the peak down to ``alpha * peak`` over
    ``decay_steps``, constant after (Keras's formula)."""

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        alpha=0.0,
        name=None,
        warmup_target=None,
        warmup_steps=0,
    ):
        if isinstance(initial_learning_rate, bool) or not initial_learning_rate >= 0:
            raise ValueError(
                f"initial_learning_rate: expected a number >= 0, got {initial_learning_rate!r}"
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = _positive(decay_steps, "decay_steps")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.name = name
        self.warmup_target = None if warmup_target is None else float(warmup_target)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected an int >= 0, got {warmup_steps!r}")
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        peak = self.initial_learning_rate
        if self.warmup_target is not None:
            if step < self.warmup_steps:
                fraction = step / self.warmup_steps
                return peak + (self.warmup_target - peak) * fraction
            peak = self.warmup_target
            step -= self.warmup_steps
        progress = min(step, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)

    def get_config(self) -> dict:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
        }


_BY_CLASS = {cls.__name__: cls for cls in (ExponentialDecay, CosineDecay)}


def serialize(schedule: LearningRateSchedule) -> dict:
    return _registry.serialize(schedule)


def deserialize(config: dict) -> LearningRateSchedule:
    return _registry.deserialize(config, _BY_CLASS, "learning-rate schedule")
