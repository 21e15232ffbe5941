"""The coefficients of Q in float32 gelu's erfc (csrc/vecmath/vector_math.inc, gelu_parts):

    erfc(x) = t Q(2t - 1) exp(-x^2),  t = 1 / (1 + x / 2),  x >= 0,

so Q(u) = erfcx(x) / t over t in (0, 1] (u in (-1, 1]; t -> 0 as x -> inf, where erfcx(x) / t
tends to 1 / (2 sqrt(pi))). A degree-10 Chebyshev fit weighted towards equal relative error
(a few Lawson iterations), printed highest degree first as float32, with its relative error
evaluated exactly. Needs scipy (scipy.special.erfcx). Not part of the build or the tests.

    python -m tools.fit_gelu_erfc    # from the repository root
"""

from __future__ import annotations

import numpy as np
import scipy.special
from numpy.polynomial import chebyshev, polynomial

DEGREE = 10


def target(t: np.ndarray) -> np.ndarray:
    """erfcx(x) / t for t in [0, 1], x = 2 (1 - t) / t."""
    out = np.empty_like(t)
    small = t < 1e-9
    x = 2 * (1 - t[~small]) / t[~small]
    out[~small] = scipy.special.erfcx(x) / t[~small]
    out[small] = 1 / (2 * np.sqrt(np.pi))
    return out


def main() -> None:
    nodes = 20000
    u = np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
    q = target((u + 1) / 2)
    weights = np.ones_like(u)
    for _ in range(30):  # Lawson: weight the nodes by their relative error
        coefficients = chebyshev.chebfit(u, q, DEGREE, w=weights / q)
        error = np.abs(chebyshev.chebval(u, coefficients) / q - 1)
        weights = weights * np.sqrt(error / error.max()) + 1e-12
    power = chebyshev.cheb2poly(coefficients).astype(np.float32)
    grid = np.linspace(-1, 1, 400001)
    relative = np.abs(
        polynomial.polyval(grid, power.astype(np.float64)) / target((grid + 1) / 2) - 1
    )
    print(f"degree {DEGREE}: relative error {relative.max():.2e} with float32 coefficients")
    for c in power[::-1]:
        print(repr(float(c)))


if __name__ == "__main__":
    main()
