"""Thread scaling: GFLOP/s of densekit and torch at 1..N threads, and the speed-up over one
thread, for a large product (2048^3 float32; 1024^3 under --quick) and an MLP layer
(256x784x256, bias + relu). densekit gets num_threads= per call, torch torch.set_num_threads.
Run alone: python -m bench.threads [options].
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from . import peers
from .config import Settings
from .dense import fused_forward_case
from .gemm import matmul_case
from .harness import DENSEKIT, Case, Record, Skip

FAMILY = "threads"
PRODUCT_SIZE, QUICK_PRODUCT_SIZE = 2048, 1024
MLP_SHAPE = (256, 784, 256)


def thread_counts(max_threads: int) -> list[int]:
    """Every count up to 8, then powers of two and max_threads itself."""
    if max_threads <= 8:
        return list(range(1, max_threads + 1))
    counts = [1 << i for i in range(max_threads.bit_length()) if 1 << i < max_threads]
    return [*counts, max_threads]


def cases(settings: Settings) -> Iterator[Case | Skip]:
    size = QUICK_PRODUCT_SIZE if settings.quick else PRODUCT_SIZE
    peer_names = ("torch",) if peers.torch is not None else ()
    for threads in thread_counts(settings.max_threads):
        for case in (
            matmul_case(size, size, size, "float32", threads, peer_names),
            fused_forward_case(*MLP_SHAPE, "float32", "relu", threads, peer_names),
        ):
            case.family = FAMILY
            case.context = functools.partial(peers.torch_threads, threads)
            yield case


def scaling(records: list[Record]) -> list[dict]:
    """Per case and library: GFLOP/s at each thread count and the speed-up over 1 thread."""
    rows = []
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for record in records:
        if record.family == FAMILY:
            groups.setdefault((record.name, record.shape, record.dtype), []).append(record)
    for (name, shape, dtype), group in groups.items():
        libraries = [DENSEKIT, *sorted({lib for r in group for lib in r.timings} - {DENSEKIT})]
        for library in libraries:
            rates = {r.threads: r.rate(library) for r in group if r.rate(library)}
            if not rates:
                continue
            base = rates.get(1)
            rows.append(
                {
                    "case": name,
                    "shape": shape,
                    "dtype": dtype,
                    "library": library,
                    "gflops": rates,
                    "speedup": {t: rate / base for t, rate in rates.items()} if base else {},
                }
            )
    return rows


def summarize(records: list[Record], peaks: dict | None = None) -> list[str]:
    rows = scaling(records)
    if not rows:
        return []
    lines = ["thread scaling (GFLOP/s, speed-up over 1 thread):"]
    for row in rows:
        cells = [
            f"{t}: {rate:7.1f} ({row['speedup'].get(t, float('nan')):.2f}x)"
            for t, rate in sorted(row["gflops"].items())
        ]
        lines.append(
            f"  {row['case']:<11} {row['shape']:<14} {row['library']:<9} " + "  ".join(cells)
        )
    return lines


if __name__ == "__main__":
    from .runner import run_family_script

    run_family_script(FAMILY)
