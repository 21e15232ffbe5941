"""Activation names as Keras spells them, resolved to the kernels' names (and their alpha).

The numbers are computed by the kernels (``densekit.kernels.ACTIVATIONS``); this module only
names them. Keras's defaults are kept: ``leaky_relu`` has negative slope 0.2 and ``gelu`` is
the exact (erf) form; ``gelu_tanh`` is the tanh approximation.
"""

from __future__ import annotations

from typing import NamedTuple


class Activation(NamedTuple):
    name: str  # the kernel's name
    alpha: float | None  # only leaky_relu and elu take one


_ALIASES = {
    None: Activation("linear", None),
    "linear": Activation("linear", None),
    "relu": Activation("relu", None),
    "leaky_relu": Activation("leaky_relu", 0.2),
    "elu": Activation("elu", 1.0),
    "sigmoid": Activation("sigmoid", None),
    "tanh": Activation("tanh", None),
    "softplus": Activation("softplus", None),
    "gelu": Activation("gelu", None),
    "gelu_tanh": Activation("gelu_tanh", None),
    "softmax": Activation("softmax", None),
}

# Activations whose derivative the dense kernel computes from the pre-activation, so the
# forward pass must keep it.
NEEDS_PREACTIVATION = frozenset({"elu", "softplus", "gelu", "gelu_tanh"})


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
