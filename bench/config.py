"""What one run of the suite was asked for: families, dtypes, threads, and how long to time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .harness import TimingSettings

DTYPES = ("float32", "float64")

FULL_TIMING = TimingSettings(
    min_sample_s=0.02,
    case_budget_s=6.0,
    min_repeats=5,
    max_repeats=25,
    slow_call_s=0.2,
    warmup_s=0.01,
)
QUICK_TIMING = TimingSettings(
    min_sample_s=0.004,
    case_budget_s=0.6,
    min_repeats=3,
    max_repeats=7,
    slow_call_s=0.05,
    warmup_s=0.004,
)


@dataclass(frozen=True)
class Settings:
    quick: bool
    families: tuple[str, ...]
    requested_dtypes: tuple[str, ...] | None  # None: each family's default
    threads: int  # densekit, torch and NumPy's BLAS use this many
    max_threads: int  # the thread-scaling family goes 1..max_threads
    out_dir: Path
    chart: bool

    @property
    def timing(self) -> TimingSettings:
        return QUICK_TIMING if self.quick else FULL_TIMING

    def dtypes(self, quick_default: tuple[str, ...] = ("float32",)) -> tuple[str, ...]:
        """--dtype if given; else both, or the family's choice under --quick."""
        if self.requested_dtypes is not None:
            return self.requested_dtypes
        return quick_default if self.quick else DTYPES
