"""Activation names as Keras spells them, resolved to the kernels' names (and their alpha).

The numbers are computed by the kernels; the names, alphas and which derivative needs the
pre-activation come from their table (``densekit.kernels.ACTIVATION_INFO``). Keras's defaults
are kept: ``leaky_relu`` has negative slope 0.2 and ``gelu`` is the exact (erf) form;
``gelu_tanh`` is the tanh approximation. ``swish`` is Keras's other name for ``silu`` (and
resolves to it, so a saved model names ``silu``); ``hard_sigmoid`` is Keras 3's
``relu6(x + 3) / 6``.
"""

from __future__ import annotations

from typing import NamedTuple

from ._core import ACTIVATION_INFO


class Activation(NamedTuple):
    name: str  # the kernel's name
    alpha: float | None  # only leaky_relu and elu take one


# Keras's defaults where they differ from the kernels' (leaky_relu: 0.2, torch's 0.01).
_KERAS_ALPHA = {"leaky_relu": 0.2}

_ALIASES = {
    name: Activation(name, _KERAS_ALPHA.get(name, info["alpha"]))
    for name, info in ACTIVATION_INFO.items()
}
_ALIASES[None] = _ALIASES["linear"]
# Keras's other names for the same functions.
_ALIASES["swish"] = _ALIASES["silu"]

# Activations whose derivative the dense kernel computes from the pre-activation, so the
# forward pass must keep it.
NEEDS_PREACTIVATION = frozenset(
    name for name, info in ACTIVATION_INFO.items() if info["needs_preactivation"]
)


def get(identifier, name: str = "activation") -> Activation:
    """Resolve an activation name (or None, meaning linear)."""
    if isinstance(identifier, Activation):
        return identifier
    if identifier is not None and not isinstance(identifier, str):
        raise TypeError(f"{name}: expected an activation name or None, got {identifier!r}")
    try:
        return _ALIASES[identifier]
    except KeyError:
        known = ", ".join(repr(k) for k in _ALIASES if k is not None)
        raise ValueError(
            f"{name}: unknown activation {identifier!r}; expected one of {known}"
        ) from None


def serialize(activation: Activation) -> str:
    """The name that ``get`` maps back to the same activation."""
    return activation.name
