"""Verify first, then time: the harness every benchmark family shares.

A Case is one computation done by densekit and by its peers (NumPy, torch). Each implementation
is a zero-argument callable that writes into arrays prepared beforehand and returns its outputs.
The harness checks densekit's outputs against each peer's, then times every implementation
round-robin in one process (warm, several calls per sample when calls are short, the order
rotated each round) and keeps every sample. A Record holds the facts only, never the arrays.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
import traceback
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

DENSEKIT = "densekit"
OVERRUN = 4  # how far past its plan a sample or a case may run before it is cut short


@dataclass(frozen=True)
class Tolerance:
    """Outputs a (densekit) and b (peer) agree when |a - b| <= atol * max|b| + rtol * |b|."""

    rtol: float
    atol: float

    def describe(self) -> str:
        return f"|a-b| <= {self.atol:g}*max|b| + {self.rtol:g}*|b|"


@dataclass
class Impl:
    library: str
    run: Callable[[], Any]


@dataclass
class Case:
    family: str
    name: str  # what is computed, e.g. "matmul", "dense relu"
    shape: str  # e.g. "256x784x256"; the family's README entry says which letters
    dtype: str
    threads: int  # densekit's (and torch's) thread count for this case
    work: float  # FLOPs or bytes of one call, see unit and work_formula
    unit: str  # "GFLOP/s" or "GB/s"
    work_formula: str
    tolerance: Tolerance
    densekit: Impl
    peers: list[Impl]
    context: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    notes: list[str] = field(default_factory=list)
    # The outputs depend on the inputs alone (no state that the calls advance): a peer whose
    # first call fails the check is judged by its later calls when they agree with each other
    # (_later_calls); a stateful case's later calls compute something else, so its check
    # stays on the first call.
    pure: bool = False


@dataclass(frozen=True)
class Skip:
    """A case that cannot run here (kernel not written yet, peer missing, --quick)."""

    family: str
    name: str
    reason: str


@dataclass(frozen=True)
class TimingSettings:
    min_sample_s: float  # short calls are repeated within one sample to last this long
    case_budget_s: float  # aim for this much timed work per case, all libraries together
    min_repeats: int
    max_repeats: int
    slow_call_s: float  # a first call this slow counts as the warm-up and the calibration
    # untimed calls before each sample of a library for at least this long (one at least,
    # for a call shorter than slow_call_s): see _time_interleaved
    warmup_s: float = 0.0


@dataclass
class Timing:
    library: str
    calls_per_sample: int
    samples: list[float]  # seconds per call, one entry per sample

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def minimum(self) -> float:
        return min(self.samples)

    @property
    def iqr(self) -> tuple[float, float]:
        q25, q75 = np.percentile(self.samples, [25, 75])
        return float(q25), float(q75)

    def to_dict(self, work: float) -> dict[str, Any]:
        q25, q75 = self.iqr
        return {
            "median_s": self.median,
            "q25_s": q25,
            "q75_s": q75,
            "min_s": self.minimum,
            "rate": work / self.median / 1e9,
            "calls_per_sample": self.calls_per_sample,
            "samples_s": self.samples,
        }


@dataclass
class Check:
    ok: bool
    detail: str  # worst error over tolerance, or what went wrong


@dataclass
class Record:
    """What one case produced: the case's facts, checks per peer, timings per library."""

    family: str
    name: str
    shape: str
    dtype: str
    threads: int
    work: float
    unit: str
    work_formula: str
    tolerance: str
    notes: list[str]
    checks: dict[str, Check] = field(default_factory=dict)  # by peer
    timings: dict[str, Timing] = field(default_factory=dict)  # by library
    error: str | None = None  # densekit raised: nothing was timed
    wall_s: float = 0.0  # verification, warm-up and timing together

    @property
    def failed(self) -> bool:
        return self.error is not None or not all(c.ok for c in self.checks.values())

    def rate(self, library: str) -> float | None:
        timing = self.timings.get(library)
        return None if timing is None else self.work / timing.median / 1e9

    def ratio(self, peer: str) -> float | None:
        """densekit speed / peer speed: above 1 means densekit is faster."""
        if DENSEKIT not in self.timings or peer not in self.timings:
            return None
        return self.timings[peer].median / self.timings[DENSEKIT].median

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "case": self.name,
            "shape": self.shape,
            "dtype": self.dtype,
            "threads": self.threads,
            "work": self.work,
            "unit": self.unit,
            "work_formula": self.work_formula,
            "tolerance": self.tolerance,
            "notes": self.notes,
            "error": self.error,
            "wall_s": self.wall_s,
            "checks": {peer: {"ok": c.ok, "detail": c.detail} for peer, c in self.checks.items()},
            "timings": {lib: t.to_dict(self.work) for lib, t in self.timings.items()},
            "ratios": {peer: self.ratio(peer) for peer in self.timings if peer != DENSEKIT},
        }


def to_numpy(value: Any) -> np.ndarray:
    """A copy of one output as a NumPy array (torch tensors detached, bfloat16 ones widened to
    float32 since NumPy has no bfloat16 of torch's; scalars 0-d)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.array(value, copy=True)


def snapshot(outputs: Any) -> list[np.ndarray]:
    if not isinstance(outputs, (tuple, list)):
        outputs = (outputs,)
    return [to_numpy(v) for v in outputs]


def compare(mine: list[np.ndarray], theirs: list[np.ndarray], tol: Tolerance) -> Check:
    if len(mine) != len(theirs):
        return Check(False, f"{len(mine)} outputs vs {len(theirs)}")
    worst, worst_output, worst_diff = 0.0, 0, 0.0
    for i, (a, b) in enumerate(zip(mine, theirs)):
        if a.shape != b.shape:
            return Check(False, f"output {i}: shape {a.shape} vs {b.shape}")
        if a.size == 0:
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if not np.isfinite(a64).all() or not np.isfinite(b64).all():
            return Check(False, f"output {i}: non-finite values")
        diff = np.abs(a64 - b64)
        allowed = tol.atol * float(np.max(np.abs(b64))) + tol.rtol * np.abs(b64)
        excess = float(np.max(diff / np.maximum(allowed, np.finfo(np.float64).tiny)))
        if excess > worst:
            worst, worst_output, worst_diff = excess, i, float(np.max(diff))
    if worst <= 1.0:
        return Check(True, f"ok ({worst:.2g} of tol)")
    return Check(
        False, f"error {worst:.3g}x tol in output {worst_output} (max |a-b| {worst_diff:.3g})"
    )


def _timed_call(impl: Impl) -> tuple[Any, float]:
    start = time.perf_counter()
    outputs = impl.run()
    return outputs, time.perf_counter() - start


def _second_call(peer: Impl, reference: list[np.ndarray], tol: Tolerance) -> str:
    """What a failed check's peer gives on a second call, against the same densekit outputs:
    a peer's first call in a process was seen to differ from all its later ones (torch's
    float32 tanh at 4096x1024 on 2 threads, by 5.03e-5, in two reference runs). This tells a
    first-call glitch of the peer from a disagreement that lasts; the check stays failed."""
    try:
        again = compare(reference, snapshot(peer.run()), tol)
    except Exception as exc:
        return f"; its second call raised {_error_line(exc)}"
    return f"; its second call: {again.detail}"


def _later_calls(peer: Impl, reference: list[np.ndarray], tol: Tolerance, first: Check) -> Check:
    """A pure case's check of a peer whose first call failed: its second and third calls,
    when they give the same bits and pass, are its answer (the detail names the first call's
    glitch); otherwise the check fails, with what the second call gave."""
    try:
        second, third = snapshot(peer.run()), snapshot(peer.run())
    except Exception as exc:
        return Check(False, f"{first.detail}; a later call raised {_error_line(exc)}")
    again = compare(reference, second, tol)
    same = len(second) == len(third) and all(
        a.shape == b.shape and a.tobytes() == b.tobytes() for a, b in zip(second, third)
    )
    if again.ok and same:
        return Check(True, f"{again.detail}; the peer's first call differed from its later "
                           f"ones, which agree: {first.detail}")  # fmt: skip
    repeat = "" if same else "; its second and third calls differ"
    return Check(False, f"{first.detail}; its second call: {again.detail}{repeat}")


def _error_line(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {exc} ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})"


def measure(case: Case, settings: TimingSettings) -> Record:
    start = time.perf_counter()
    record = _measure(case, settings)
    record.wall_s = time.perf_counter() - start
    return record


def _measure(case: Case, settings: TimingSettings) -> Record:
    record = Record(
        family=case.family,
        name=case.name,
        shape=case.shape,
        dtype=case.dtype,
        threads=case.threads,
        work=case.work,
        unit=case.unit,
        work_formula=case.work_formula,
        tolerance=case.tolerance.describe(),
        notes=list(case.notes),
    )
    with case.context():
        # Verification: the first call of each implementation, which also warms it.
        try:
            outputs, first = _timed_call(case.densekit)
            reference = snapshot(outputs)
        except Exception as exc:
            record.error = _error_line(exc)
            return record
        first_call = {DENSEKIT: first}
        live = [case.densekit]
        for peer in case.peers:
            try:
                outputs, first_call[peer.library] = _timed_call(peer)
                check = compare(reference, snapshot(outputs), case.tolerance)
            except Exception as exc:
                record.checks[peer.library] = Check(False, "peer raised " + _error_line(exc))
                continue
            if not check.ok and case.pure:
                check = _later_calls(peer, reference, case.tolerance, check)
            elif not check.ok:
                check = Check(False, check.detail + _second_call(peer, reference, case.tolerance))
            record.checks[peer.library] = check
            live.append(peer)
        del reference, outputs
        record.timings = _time_interleaved(live, first_call, settings)
    return record


def _time_interleaved(
    impls: list[Impl], first_call: dict[str, float], settings: TimingSettings
) -> dict[str, Timing]:
    per_call = {}
    for impl in impls:
        slow = first_call[impl.library] >= settings.slow_call_s
        per_call[impl.library] = first_call[impl.library] if slow else _timed_call(impl)[1]
    calls = {lib: max(1, math.ceil(settings.min_sample_s / t)) for lib, t in per_call.items()}
    # Before its sample a library runs untimed for warmup_s (one call at least, none for a
    # call as slow as slow_call_s): after the switch from another library the caches, the
    # TLBs and the clock take milliseconds to settle, and the previous library's threads may
    # still spin. One untimed call was not enough: on Intel Xeon (KVM, 1 thread) the mixed
    # train step's calls after torch's step took 1.82, 1.35, 1.09, 1.06, 1.01 ms, ... 0.93 ms
    # from the 8th; torch's after densekit's 3.25, 2.81, 2.68, ... 2.6 ms; so a sample of the
    # shorter call counted more of the transient against it.
    warm = {
        lib: 0 if t >= settings.slow_call_s else max(1, math.ceil(settings.warmup_s / t))
        for lib, t in per_call.items()
    }
    round_cost = sum(t * (calls[lib] + warm[lib]) for lib, t in per_call.items())
    repeats = int(settings.case_budget_s / max(round_cost, 1e-9))
    repeats = min(max(repeats, settings.min_repeats), settings.max_repeats)
    timings = {impl.library: Timing(impl.library, calls[impl.library], []) for impl in impls}
    # On a loaded machine a call can take 1000x its calibrated time: a sample then stops after
    # OVERRUN x min_sample_s, and the rounds after OVERRUN x the case budget (min_repeats done).
    sample_limit = OVERRUN * settings.min_sample_s
    case_limit = time.perf_counter() + OVERRUN * settings.case_budget_s
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(repeats):
            for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
                timings[impl.library].samples.append(
                    _sample(impl.run, calls[impl.library], sample_limit, warm[impl.library])
                )
            if r + 1 >= settings.min_repeats and time.perf_counter() > case_limit:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def _sample(run: Callable[[], Any], count: int, limit_s: float, warm_calls: int = 0) -> float:
    """Seconds per call over up to count back-to-back calls (fewer past limit_s), after
    warm_calls untimed ones (fewer past limit_s)."""
    start = time.perf_counter()
    for _ in range(warm_calls):
        run()
        if time.perf_counter() - start > limit_s:
            break
    start = time.perf_counter()
    done = 0
    while done < count:
        run()
        done += 1
        if time.perf_counter() - start > limit_s:
            break
    return (time.perf_counter() - start) / done


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Uniform in [-1, 1): no denormals, no overflow, any dtype."""
    values = rng.random(shape, dtype=np.dtype(dtype).type)
    values *= 2
    values -= 1
    return values


def grid_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Multiples of 1/8 in [-1, 1]: sums of products of these are exact in float32 up to
    2**18 terms, so every library computes the same pre-activations, bit for bit, and a relu's
    mask cannot differ between them."""
    return (rng.integers(-8, 9, size=shape) / 8).astype(dtype)
