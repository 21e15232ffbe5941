"""Plain matrix product y = x @ w: densekit's dense_forward without bias or activation against
np.matmul and torch.matmul, each writing into a preallocated out= array.

Shapes are (n, k, m): x is (n, k), w is (k, m), y is (n, m); FLOPs = 2 n k m.
Run alone: python -m bench.gemm [options].
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from densekit import kernels

from . import peers
from .config import Settings
from .harness import Case, Impl, Skip, Tolerance, random_array

FAMILY = "gemm"
SQUARE = (256, 512, 1024, 2048, 4096)
MLP_SHAPES = (
    (1, 784, 256),
    (32, 784, 256),
    (64, 784, 256),
    (256, 784, 256),
    (1024, 1024, 1024),
    (8192, 512, 512),
    (64, 4096, 4096),
)
# Rounding of a k-term dot product differs with the summation order; atol covers the entries
# that cancel to near zero.
PRODUCT_TOLERANCE = {
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
}
QUICK_MAX_FLOP = {"float32": 3e9, "float64": 1e9}


def in_quick(n: int, k: int, m: int, dtype: str) -> bool:
    """--quick keeps the float32 squares up to 2048 and other shapes up to QUICK_MAX_FLOP."""
    if dtype == "float32" and n == k == m:
        return n <= 2048
    return 2.0 * n * k * m <= QUICK_MAX_FLOP[dtype]


def shape_name(n: int, k: int, m: int) -> str:
    return f"{n}x{k}x{m}"


def product_case(
    family: str,
    name: str,
    n: int,
    k: int,
    m: int,
    dtype: str,
    threads: int,
    flops_per_nkm: int,
    work_formula: str,
    densekit: Impl,
    case_peers: list[Impl],
    tolerance: Tolerance | None = None,
    notes: list[str] | None = None,
) -> Case:
    """A case on an (n, k) x (k, m) product shape, rated in GFLOP/s (flops_per_nkm * n*k*m);
    the tolerance defaults to PRODUCT_TOLERANCE."""
    return Case(
        family=family,
        name=name,
        shape=shape_name(n, k, m),
        dtype=dtype,
        threads=threads,
        work=float(flops_per_nkm) * n * k * m,
        unit="GFLOP/s",
        work_formula=work_formula,
        tolerance=PRODUCT_TOLERANCE[dtype] if tolerance is None else tolerance,
        densekit=densekit,
        peers=case_peers,
        notes=notes or [],
    )


def matmul_case(
    n: int, k: int, m: int, dtype: str, threads: int, peer_names: tuple[str, ...]
) -> Case:
    rng = np.random.default_rng(n * 31 + k * 7 + m)
    x = random_array(rng, (n, k), dtype)
    w = random_array(rng, (k, m), dtype)
    y = {lib: np.empty((n, m), dtype) for lib in ("densekit", *peer_names)}

    def run_densekit():
        return kernels.dense_forward(x, w, out=y["densekit"], num_threads=threads)

    def run_numpy():
        return np.matmul(x, w, out=y["numpy"])

    case_peers = []
    if "numpy" in peer_names:
        case_peers.append(Impl("numpy", run_numpy))
    if "torch" in peer_names and peers.torch is not None:
        x_t, w_t = peers.torch.from_numpy(x), peers.torch.from_numpy(w)
        y_t = peers.torch.from_numpy(y["torch"])
        matmul = peers.torch.matmul
        case_peers.append(Impl("torch", lambda: matmul(x_t, w_t, out=y_t)))

    return product_case(
        FAMILY,
        "matmul",
        n,
        k,
        m,
        dtype,
        threads,
        2,
        "2*n*k*m",
        Impl("densekit", run_densekit),
        case_peers,
    )


def cases(settings: Settings) -> Iterator[Case | Skip]:
    shapes = dict.fromkeys([(s, s, s) for s in SQUARE] + list(MLP_SHAPES))  # 1024^3 is in both
    for dtype in settings.dtypes(quick_default=("float32", "float64")):
        for n, k, m in shapes:
            if settings.quick and not in_quick(n, k, m, dtype):
                yield Skip(FAMILY, f"matmul {shape_name(n, k, m)} {dtype}", "--quick")
                continue
            yield matmul_case(n, k, m, dtype, settings.threads, ("numpy", "torch"))


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
