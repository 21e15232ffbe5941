"""Dtype policies, as in Keras 3: what a layer computes in and what its variables are.

- ``"float32"`` / ``"float64"``: everything in that dtype (the model's dtype).
- ``"mixed_bfloat16"``: a Dense layer's products take bfloat16 operands (inputs, weights and,
  in training, the gradients that flow back, each rounded to nearest even as it is packed)
  with float32 accumulation; the weights, the optimizer state, the bias, the activation, the
  loss and every other layer stay float32. bfloat16 has float32's exponent range, so no loss
  scaling is needed (unlike float16).
- ``"int8_from_float32"``: what ``Sequential.quantize("int8")`` gives a Dense layer: int8
  weights per output column (symmetric, one float32 scale per column), inputs quantized per
  row on the fly, exact int32 products, a float32 epilogue. Inference only.

``set_global_policy`` sets the policy that layers made afterwards without ``dtype=`` take,
as Keras does; ``Dense(..., dtype="mixed_bfloat16")`` sets one layer's.
"""

from __future__ import annotations

import threading

from . import _registry

# name -> (compute dtype, variable dtype)
_POLICIES = {
    "float32": ("float32", "float32"),
    "float64": ("float64", "float64"),
    "mixed_bfloat16": ("bfloat16", "float32"),
    "int8_from_float32": ("float32", "float32"),
}
# What Keras names but densekit does not compute, and why (for the error message).
_REFUSED = {
    "mixed_float16": "float16 products are not implemented; use 'mixed_bfloat16' (no loss "
    "scaling needed)",
    "float16": "float16 is not supported; use 'mixed_bfloat16'",
    "bfloat16": "bfloat16 variables are not supported (the weights and optimizer state stay "
    "float32); use 'mixed_bfloat16'",
}


class DTypePolicy(_registry.Configurable):
    """A dtype policy by name: ``compute_dtype`` (what the layer's products take),
    ``variable_dtype`` (what its weights are) and ``quantization_mode`` (``"int8"`` for a
    quantized layer, else None)."""

    def __init__(self, name="float32"):
        if isinstance(name, DTypePolicy):
            name = name.name
        if not isinstance(name, str) or name not in _POLICIES:
            reason = _REFUSED.get(name) if isinstance(name, str) else None
            raise ValueError(
                f"dtype: expected a policy name, one of {sorted(_POLICIES)}, got {name!r}"
                + (f" ({reason})" if reason else "")
            )
        self.name = name
        self.compute_dtype, self.variable_dtype = _POLICIES[name]

    @property
    def quantization_mode(self) -> str | None:
        return "int8" if self.name.startswith("int8_") else None

    @property
    def is_mixed(self) -> bool:
        """Whether the layer computes in another dtype than its variables'."""
        return self.name != self.variable_dtype

    def get_config(self) -> dict:
        return {"name": self.name}

    def __eq__(self, other) -> bool:
        return isinstance(other, DTypePolicy) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f'<DTypePolicy "{self.name}">'


Policy = DTypePolicy  # Keras 2's name

_lock = threading.Lock()
_global = DTypePolicy("float32")


def set_global_policy(policy) -> None:
    """Set the policy of the layers made from now on without ``dtype=`` (a name or a
    ``DTypePolicy``; ``None`` restores ``"float32"``). Quantized policies are given by
    ``Sequential.quantize``, not globally."""
    global _global
    resolved = DTypePolicy("float32" if policy is None else policy)
    if resolved.quantization_mode is not None:
        raise ValueError(
            f"policy: {resolved.name!r} is given by model.quantize('int8'), not globally"
        )
    with _lock:
        _global = resolved


def global_policy() -> DTypePolicy:
    """The policy that layers made without ``dtype=`` take."""
    return _global


def is_policy_name(value) -> bool:
    """Whether ``value`` names a policy that is not a plain NumPy dtype."""
    return isinstance(value, DTypePolicy) or (
        isinstance(value, str) and (value in _POLICIES or value in _REFUSED)
    )


__all__ = ["DTypePolicy", "Policy", "global_policy", "set_global_policy"]
