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

Whether bf16 pays depends on the CPU: AMX tiles (Intel Xeon 4th generation on) run bf16
products many times faster than float32, AVX512-BF16 on AMD Zen 4 twice as fast, but
AVX512-BF16 alone on Intel runs at half float32's rate and the emulated path (neither) slower
still. The first mixed layer a process builds measures the bf16 path against float32 (a few
milliseconds, skipped on AMX) and warns (``SlowBfloat16Warning``) where bf16 is not clearly
faster, as TensorFlow's mixed precision warns on a GPU without fast float16.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

from . import _core, _registry, kernels

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


class SlowBfloat16Warning(RuntimeWarning):
    """mixed_bfloat16 on a CPU whose bf16 products are not clearly faster than float32's."""


# The bf16 path's peak must reach this multiple of float32's for mixed_bfloat16 to pay: a
# step also rounds and packs its operands (AVX512-BF16 on Intel Xeon without AMX: 0.5x,
# a train step 1.4x slower than float32; on Zen 4: 2x; AMX: 14x).
BF16_PAYS_RATIO = 1.5
_checked = False


def _peak_gflops(dtype: str, steps: int) -> float:
    """The best of three 1-thread runs of the register-only multiply-add probe, GFLOP/s."""
    _core._fma_peak(dtype, steps // 10, num_threads=1)  # warm the code and the clock
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        ops = _core._fma_peak(dtype, steps, num_threads=1)
        best = max(best, ops / max(time.perf_counter() - start, 1e-9) / 1e9)
    return best


def _outside_densekit() -> int:
    """The stacklevel of the innermost caller outside the densekit package (the user's
    compile, fit or predict), for warnings.warn."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_bf16_speed() -> None:
    """Warn once per process (``SlowBfloat16Warning``) when this CPU's bf16 products run
    slower than ``BF16_PAYS_RATIO`` times its float32 multiply-adds; called when a
    mixed_bfloat16 layer is first planned. Free where the path is AMX; else ~1-3 ms of
    probes on one thread."""
    global _checked
    with _lock:
        if _checked:
            return
        _checked = True
    config = kernels.bf16_config()
    if config["path"] == "amx":
        return
    bf16, fp32 = _peak_gflops("bfloat16", 100_000), _peak_gflops("float32", 200_000)
    if bf16 >= BF16_PAYS_RATIO * fp32:
        return
    why = f" (AMX: {config['amx_note']})" if config["amx_note"] else ""
    if config["forced"]:
        why = f" (DENSEKIT_BF16={config['requested']!r} forces it; the best path is "
        why += f"{config['best']!r})"
    warnings.warn(
        f"mixed_bfloat16: this CPU computes bf16 products on the {config['path']!r} path"
        f"{why} at about {bf16:.0f} GFLOP/s per core, against {fp32:.0f} for float32: "
        "training and inference will likely be slower than with the float32 policy",
        SlowBfloat16Warning,
        stacklevel=_outside_densekit(),
    )


__all__ = [
    "DTypePolicy",
    "Policy",
    "SlowBfloat16Warning",
    "check_bf16_speed",
    "global_policy",
    "set_global_policy",
]
