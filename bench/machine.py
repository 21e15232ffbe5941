"""Facts about the machine and the run, the measured copy bandwidth that memory-bound kernels
are compared with, and the measured multiply-add peak that products are compared with."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import densekit

from . import peers

COPY_BYTES = 256 * 2**20
FMA_STEPS_PER_THREAD = 20_000_000  # ~0.1 s of multiply-adds per thread at ~230 GFLOP/s
# A peak of N threads below this fraction of N times the 1-thread peak is taken as disturbed
# (a core busy elsewhere) and measured again, at most PEAK_RETRIES more rounds.
PLAUSIBLE_SCALING = 0.75
PEAK_RETRIES = 3
PEAK_RETRY_PAUSE_S = 1.0
ENVIRONMENT = (  # variables that change how the libraries thread
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "OMP_PROC_BIND",
    "GOMP_SPINCOUNT",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_THREAD_TIMEOUT",
)
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_bf16",
    "avx512_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


# The microarchitectures of the x86 CPU kinds these benchmarks run on, by vendor, family and
# model number (/proc/cpuinfo's "cpu family" and "model"; AMD's from its processor guides,
# Intel's from its model list): the model name of a virtual machine's CPU often says only
# "AMD EPYC", for a Zen 4 core whose AVX-512 units are 256 bits wide and a Zen 5 one with
# twice their rate alike.
MICROARCHITECTURES = (  # (vendor, family, first model, last model, name)
    ("AuthenticAMD", 25, 0x00, 0x0F, "Zen 3"),
    ("AuthenticAMD", 25, 0x10, 0x1F, "Zen 4"),
    ("AuthenticAMD", 25, 0x20, 0x5F, "Zen 3"),
    ("AuthenticAMD", 25, 0x60, 0x7F, "Zen 4"),
    ("AuthenticAMD", 25, 0xA0, 0xAF, "Zen 4"),
    ("AuthenticAMD", 26, 0x00, 0xFF, "Zen 5"),
    ("GenuineIntel", 6, 0x6A, 0x6A, "Ice Lake"),
    ("GenuineIntel", 6, 0x6C, 0x6C, "Ice Lake"),
    ("GenuineIntel", 6, 0x8F, 0x8F, "Sapphire Rapids"),
    ("GenuineIntel", 6, 0xCF, 0xCF, "Emerald Rapids"),
    ("GenuineIntel", 6, 0xAD, 0xAD, "Granite Rapids"),
)


def microarchitecture(vendor: str, family: int | None, model: int | None) -> str | None:
    """The name of the CPU's microarchitecture, None where the table does not know it."""
    for known_vendor, known_family, first, last, name in MICROARCHITECTURES:
        if vendor == known_vendor and family == known_family and model is not None:
            if first <= model <= last:
                return name
    return None


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _cpuinfo() -> dict[str, Any]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "isa_flags": []}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    vendor = fields.get("vendor_id", "")
    family, model = _number(fields.get("cpu family")), _number(fields.get("model"))
    return {
        "model": fields.get("model name", platform.machine()),
        "vendor": vendor,
        "family": family,
        "model_number": model,
        "microarchitecture": microarchitecture(vendor, family, model),
        "isa_flags": [f for f in ISA_FLAGS if f in flags],
    }


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def facts(argv: list[str]) -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpu_info = getattr(densekit, "cpu_info", None)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": [sys.executable, "-m", "bench", *argv],
        "cpu": _cpuinfo(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": peers.versions(),
        "densekit_build_info": densekit.build_info(),
        "densekit_cpu_info": cpu_info() if cpu_info else None,
        "numpy_blas": peers.blas_info(),
        "threads": peers.thread_counts(),
        "environment": {k: os.environ[k] for k in ENVIRONMENT if k in os.environ},
        "git_commit": _git_commit(),
    }


def copy_bandwidth(repeats: int) -> dict[str, Any]:
    """np.copyto of a 256 MiB array: GB/s counting bytes read + bytes written, median."""
    src = np.ones(COPY_BYTES // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "bytes": 2 * COPY_BYTES,
        "formula": "2 * 256 MiB (read + write) / median time of np.copyto",
        "median_s": median,
        "min_s": min(seconds),
        "gb_per_s": 2 * COPY_BYTES / median / 1e9,
    }


def threaded_copy_bandwidth(repeats: int) -> dict[str, Any] | None:
    """torch's copy_ of 256 MiB, which uses torch's threads: the same count as the kernels."""
    torch = peers.torch
    if torch is None:
        return None
    src = torch.ones(COPY_BYTES // 8, dtype=torch.float64)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {
        "bytes": 2 * COPY_BYTES,
        "formula": "2 * 256 MiB (read + write) / median time of torch copy_",
        "threads": torch.get_num_threads(),
        "median_s": median,
        "gb_per_s": 2 * COPY_BYTES / median / 1e9,
    }


def fma_peak(thread_counts: list[int], repeats: int) -> dict[str, dict[int, float]]:
    """GFLOP/s of register-only multiply-adds on densekit's kernels in use, per dtype and thread
    count: the arithmetic peak at the clock the cores run at now, which a product cannot
    exceed. Each call does ~0.1 s of work per thread; the fastest of the repeats is the peak
    (anything else on a core, such as a peer's thread pool still spinning after its last
    call, only slows a repeat down: a median of disturbed repeats can fall below the rate
    the products themselves then reach). On a shared host a core can be taken for seconds
    (a run once measured every 2-thread peak at the 1-thread rate while its products ran at
    twice that): a peak of several threads below PLAUSIBLE_SCALING times the 1-thread peak
    per thread is measured again, a few rounds at most, after a pause."""
    peaks: dict[str, dict[int, float]] = {}
    for dtype in ("float32", "float64", "bfloat16", "int8"):
        peaks[dtype] = {}
        for threads in sorted(set(thread_counts)):
            steps = FMA_STEPS_PER_THREAD * threads
            densekit._core._fma_peak(dtype, steps // 100, num_threads=threads)  # wake them up
            rates = []
            for round_ in range(1 + PEAK_RETRIES):
                if round_:
                    time.sleep(PEAK_RETRY_PAUSE_S)
                for _ in range(repeats):
                    start = time.perf_counter()
                    flops = densekit._core._fma_peak(dtype, steps, num_threads=threads)
                    rates.append(flops / (time.perf_counter() - start) / 1e9)
                single = peaks[dtype].get(1)
                if (
                    threads == 1
                    or single is None
                    or max(rates) >= PLAUSIBLE_SCALING * threads * single
                ):
                    break
            peaks[dtype][threads] = max(rates)
    return peaks
