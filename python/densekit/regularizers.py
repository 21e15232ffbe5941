"""Weight regularizers (Keras's ``L2``): a penalty ``l2 * sum(w**2)`` added to the loss.

The model adds the penalty's gradient ``2 * l2 * w`` to the kernel's gradient and the
penalty to the reported loss, both with kernel calls (see ``models.py``).
"""

from __future__ import annotations

from . import _registry


class Regularizer(_registry.Configurable):
    """A weight penalty: its config is its factors."""


class L2(Regularizer):
    def __init__(self, l2=0.01):
        if not (isinstance(l2, (int, float)) and l2 >= 0):
            raise ValueError(f"l2: expected a number >= 0, got {l2!r}")
        self.l2 = float(l2)

    def get_config(self) -> dict:
        return {"l2": self.l2}


l2 = L2


def get(identifier, name: str = "kernel_regularizer") -> Regularizer | None:
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if identifier in ("l2", "L2"):
        return L2()
    if isinstance(identifier, dict) and identifier.get("class_name") == "L2":
        return L2.from_config(identifier.get("config", {}))
    raise ValueError(f"{name}: expected None, 'l2' or a regularizers.L2, got {identifier!r}")


def serialize(regularizer: Regularizer | None):
    if regularizer is None:
        return None
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}
