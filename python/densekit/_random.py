"""Seeds for everything random in the model layer: initializers, dropout and shuffling.

``set_random_seed`` makes every later unseeded draw reproducible (like
``keras.utils.set_random_seed``); explicit seeds always win.
"""

from __future__ import annotations

import numpy as np

_global_rng: np.random.Generator | None = None


def set_random_seed(seed: int) -> None:
    """Make unseeded initializers, dropout layers and ``fit`` shuffling reproducible."""
    global _global_rng
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed: expected an int >= 0, got {seed!r}")
    _global_rng = np.random.default_rng(int(seed))


def draw_seed() -> int:
    """A fresh seed: from the global generator when one is set, else from OS entropy."""
    if _global_rng is not None:
        return int(_global_rng.integers(0, 2**63 - 1))
    return int(np.random.SeedSequence().entropy % (2**63 - 1))


def check_seed(seed, name: str = "seed") -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"{name}: expected an int >= 0 or None, got {seed!r}")
    return int(seed)


def generator(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(draw_seed() if seed is None else seed)
