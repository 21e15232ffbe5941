"""The low-precision family's target summary (bench/lowp.py): each target's verdict at each
thread count measured, with the ceiling that the CPU's peak puts on the ratio, and the
benchmarks page showing a family's summary as the run printed it."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("ml_dtypes")

from bench import lowp, report
from bench.harness import Case, Impl, Record, Timing, TimingSettings, Tolerance, measure


def _record(name, shape, dtype, threads, work, seconds: dict) -> Record:
    record = Record(
        family=lowp.FAMILY,
        name=name,
        shape=shape,
        dtype=dtype,
        threads=threads,
        work=work,
        unit="GFLOP/s",
        work_formula="2*n*k*m",
        tolerance="",
        notes=[],
    )
    for library, value in seconds.items():
        record.timings[library] = Timing(library, 1, [value])
    return record


def _line(lines, *words):
    found = [line for line in lines if all(word in line for word in words)]
    assert len(found) == 1, (words, lines)
    return found[0]


def test_verdicts_and_ceilings_per_thread_count():
    work = 2e9  # 1 s at 2 GFLOP/s
    peaks = {"bfloat16": {1: 4.0, 2: 8.0}, "int8": {1: 8.0, 2: 16.0}}
    records = [
        # 1 thread: densekit 2.0, torch 2.0 GFLOP/s: ratio 1.00, ceiling 4 / 2 = 2.00x
        _record(
            "matmul bf16", "1024x1024x1024", "bfloat16", 1, work, {"densekit": 1.0, "torch": 1.0}
        ),
        # torch at 3.2 GFLOP/s: a 1.3x target is above the ceiling 4 / 3.2 = 1.25x
        _record(
            "dense bf16 relu",
            "256x784x256",
            "bfloat16",
            1,
            work,
            {"densekit": 0.625, "torch": 0.625},
        ),
        # 2 threads: densekit 7.6 of 8 GFLOP/s (95%): the peak target met
        _record(
            "matmul bf16",
            "1024x1024x1024",
            "bfloat16",
            2,
            work,
            {"densekit": 2 / 7.6, "torch": 0.5},
        ),
        _record(
            "predict int8",
            "256x784-256-128-10",
            "int8",
            2,
            work,
            {"densekit": 0.25, "torch": 0.5, "densekit fp32": 1.0},
        ),
    ]
    lines = lowp.summarize(records, peaks, bf16_path="avx512_bf16")
    assert "at 1 thread " in lines[0] and any("at 2 threads " in line for line in lines)
    one = lines[: next(i for i, line in enumerate(lines) if "at 2 threads " in line)]
    two = lines[len(one) :]
    matmul = _line(one, "matmul bf16", "1024x1024x1024", "vs torch")
    assert "1.00x, MISSED (ceiling 2.00x)" in matmul
    dense = _line(one, "dense bf16 relu  ", "256x784x256")  # not "... relu fwd+bwd"
    assert "1.00x, MISSED (ceiling 1.25x: out of reach on this CPU)" in dense
    assert "50% of 4 GFLOP/s, MISSED" in _line(one, "1024x1024x1024", "of the bf16 peak")
    assert "not measured" in _line(one, "4096x512x512", "vs torch")
    # int8 ratios bounded by the int8 peak: 16 / (2e9 / 0.5 / 1e9) = 4x over torch
    assert "2.00x, met (ceiling 4.00x)" in _line(two, "predict int8", "vs torch")
    assert "4.00x, met (ceiling 8.00x)" in _line(two, "predict int8", "vs densekit fp32")
    assert "1.90x, met (ceiling 2.00x)" in _line(two, "matmul bf16", "1024x1024x1024", "vs torch")
    assert "95% of 8 GFLOP/s, met" in _line(two, "1024x1024x1024", "of the bf16 peak")
    assert "not measured (no AMX path on this CPU/build" in _line(one, "AMX: bf16 products")


def test_amx_targets_apply_where_the_bf16_path_is_amx():
    work = 2e9
    records = [
        _record(
            "matmul bf16",
            "1024x1024x1024",
            "bfloat16",
            1,
            work,
            {"densekit": 1.0, "torch": 1.0, "densekit fp32": 4.5},
        ),
        _record(
            "matmul bf16",
            "64x784x256",
            "bfloat16",
            1,
            work,
            {"densekit": 1.0, "torch": 1.0, "densekit fp32": 3.0},
        ),
    ]
    lines = lowp.summarize(records, None, bf16_path="amx")
    assert "4.50x, met" in _line(lines, "AMX: matmul bf16", "1024x1024x1024")
    assert "3.00x, MISSED" in _line(lines, "AMX: matmul bf16", "64x784x256")
    assert "not measured" in _line(lines, "AMX: matmul bf16", "4096x512x512")
    assert not any("no AMX path" in line for line in lines)


def test_no_ceiling_without_a_peak_and_nothing_without_records():
    record = _record(
        "matmul bf16", "1024x1024x1024", "bfloat16", 1, 2e9, {"densekit": 1.0, "torch": 2.0}
    )
    lines = lowp.summarize([record], None, bf16_path="avx512_bf16")
    line = _line(lines, "matmul bf16", "1024x1024x1024", "vs torch")
    assert line.endswith("2.00x, met")
    assert lowp.summarize([], None) == []


def test_page_shows_a_family_summary_below_its_table():
    document = {
        "machine": {
            "cpu": {"model": "test CPU", "isa_flags": []},
            "cpus_usable": 1,
            "cpu_count": 1,
            "memory_gib": 1,
            "platform": "test",
            "python": "3",
            "versions": {},
            "threads": {"densekit": 1},
            "command": ["python", "-m", "bench"],
            "date": "2026-01-01",
        },
        "records": [
            {
                "family": "lowp",
                "case": "matmul bf16",
                "shape": "8x8x8",
                "dtype": "bfloat16",
                "threads": 1,
                "work": 1024.0,
                "unit": "GFLOP/s",
                "checks": {},
                "timings": {},
                "ratios": {},
                "error": None,
            }
        ],
        "summaries": {"lowp": ["low-precision targets at 1 thread:", "  a line"]},
    }
    page = report.markdown_page(document, "x.json")
    table = page.index("| matmul bf16 | 8x8x8 |")
    block = page.index("```text\nlow-precision targets at 1 thread:\n  a line\n```")
    assert block > table
    del document["summaries"]  # a run from before summaries were kept: the table alone
    assert "```text" not in report.markdown_page(document, "x.json")


@pytest.mark.parametrize(
    ("vendor", "family", "model", "name"),
    [
        ("AuthenticAMD", 25, 17, "Zen 4"),  # EPYC Genoa
        ("AuthenticAMD", 25, 1, "Zen 3"),  # EPYC Milan
        ("AuthenticAMD", 26, 2, "Zen 5"),
        ("GenuineIntel", 6, 143, "Sapphire Rapids"),
        ("GenuineIntel", 6, 85, None),  # not in the table
        ("AuthenticAMD", 23, 49, None),
        ("AuthenticAMD", None, None, None),
    ],
)
def test_the_cpu_is_named_with_its_microarchitecture(vendor, family, model, name):
    """A run records the CPU's family and model numbers and, where the table knows them, the
    microarchitecture; the page's title and CPU row show them (a virtual machine's model name
    is often "AMD EPYC" for a Zen 4 and a Zen 5 core alike). A run from before they were
    recorded keeps the model name alone."""
    from bench import machine

    assert machine.microarchitecture(vendor, family, model) == name
    cpu = {"model": "AMD EPYC", "family": family, "model_number": model, "microarchitecture": name}
    shown = report._cpu_name(cpu)
    if family is None:
        assert shown == "AMD EPYC"
    elif name is None:
        assert shown == f"AMD EPYC (family {family}, model {model})"
    else:
        assert shown == f"AMD EPYC ({name}: family {family}, model {model})"
    assert report._cpu_name({"model": "AMD EPYC", "isa_flags": []}) == "AMD EPYC"


class _Clock:
    """perf_counter advancing one second per reading: each probe call lasts exactly 1 s."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now

    def sleep(self, seconds):
        pass


@pytest.mark.parametrize(
    ("two_thread_rates", "expected"),
    [
        ([100.0] * 3 + [190.0] * 3, 190.0),  # a disturbed first round, measured again
        ([100.0] * 12, 100.0),  # a second core that never helps: the rounds run out
        ([180.0, 100.0, 100.0], 180.0),  # plausible at once: no second round
    ],
)
def test_fma_peak_measures_a_disturbed_multi_thread_peak_again(
    monkeypatch, two_thread_rates, expected
):
    import densekit
    from bench import machine

    script = {1: [100.0] * 3, 2: two_thread_rates}  # GFLOP/s of each timed call, per dtype
    left: dict = {}
    calls = {1: 0, 2: 0}

    def fake_peak(dtype, steps, num_threads=None):
        if steps < machine.FMA_STEPS_PER_THREAD:  # the wake-up call
            return 0.0
        calls[num_threads] += 1
        rates = left.setdefault((dtype, num_threads), iter(script[num_threads]))
        return next(rates) * 1e9  # operations done in the call's one second

    monkeypatch.setattr(densekit._core, "_fma_peak", fake_peak)
    monkeypatch.setattr(machine, "time", _Clock())
    peaks = machine.fma_peak([1, 2], repeats=3)
    assert list(peaks) == ["float32", "float64", "bfloat16", "int8"]
    for by_threads in peaks.values():
        assert by_threads == {1: pytest.approx(100.0), 2: pytest.approx(expected)}
    assert calls == {1: 4 * 3, 2: 4 * len(two_thread_rates)}


def _checked(peers, pure=False):
    """The record of a tiny case whose densekit output is four ones, checked against peers."""
    case = Case(
        family="test",
        name="checks",
        shape="4",
        dtype="float32",
        threads=1,
        work=4.0,
        unit="GB/s",
        work_formula="4",
        tolerance=Tolerance(rtol=1e-6, atol=0.0),
        densekit=Impl("densekit", lambda: np.ones(4)),
        peers=peers,
        pure=pure,
    )
    settings = TimingSettings(
        min_sample_s=1e-4, case_budget_s=1e-3, min_repeats=1, max_repeats=2, slow_call_s=1.0
    )
    return measure(case, settings)


def test_a_failed_check_says_what_the_peer_gives_on_a_second_call():
    """The check of a peer whose first call disagrees stays failed; its detail adds what the
    peer's second call gives (a first-call glitch, or a lasting disagreement)."""
    calls = {"glitch": 0}

    def glitch():  # wrong on its first call only
        calls["glitch"] += 1
        return np.full(4, 1.0 if calls["glitch"] > 1 else 1.5)

    record = _checked([Impl("glitch", glitch), Impl("wrong", lambda: np.full(4, 2.0))])
    glitched, wrong = record.checks["glitch"], record.checks["wrong"]
    assert not glitched.ok and not wrong.ok
    assert "its second call: ok" in glitched.detail
    assert "its second call: error" in wrong.detail


def test_samples_follow_an_untimed_warm_up_of_warmup_s(monkeypatch):
    """Each library runs untimed for warmup_s before each of its samples (the transient after
    a switch of library counts against no one), and a call as slow as slow_call_s runs none."""
    from bench import harness

    seen = []
    real_sample = harness._sample

    def recording_sample(run, count, limit_s, warm_calls=0):
        seen.append((run, count, warm_calls))
        return real_sample(run, count, limit_s, warm_calls)

    monkeypatch.setattr(harness, "_sample", recording_sample)
    # the calibration call reads 1 ms whatever the machine's load (a 1 ms sleep can take 5 ms
    # under a parallel test run, and the warm-up count follows the reading)
    real_timed_call = harness._timed_call

    def calibrated(impl):
        outputs, _ = real_timed_call(impl)
        return outputs, 0.001

    monkeypatch.setattr(harness, "_timed_call", calibrated)
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1
        time.sleep(0.001)

    def slow():
        calls["slow"] += 1
        time.sleep(0.03)

    impls = [Impl("fast", fast), Impl("slow", slow)]
    settings = TimingSettings(
        min_sample_s=0.003,
        case_budget_s=0.05,
        min_repeats=2,
        max_repeats=2,
        slow_call_s=0.02,
        warmup_s=0.01,
    )
    first = {"fast": 0.001, "slow": 0.03}
    timings = harness._time_interleaved(impls, first, settings)
    fast_samples = [(count, warm) for run, count, warm in seen if run is fast]
    slow_samples = [(count, warm) for run, count, warm in seen if run is slow]
    assert len(fast_samples) == len(slow_samples) == 2
    # 1 ms calls: 10 ms of untimed calls
    assert all(warm == math.ceil(settings.warmup_s / 0.001) for _, warm in fast_samples)
    assert all(warm == 0 for _, warm in slow_samples)
    # the calls made: calibration, then each sample's warm-up and timed calls (a loaded
    # machine may cut a warm-up short at the sample's time limit)
    assert calls["fast"] <= 1 + sum(count + warm for count, warm in fast_samples)
    assert calls["fast"] >= 1 + sum(count + 1 for count, _ in fast_samples)
    assert timings["fast"].calls_per_sample == fast_samples[0][0]


def test_sample_runs_its_warm_up_calls_untimed():
    from bench import harness

    stamps = []

    def run():
        stamps.append(time.perf_counter())
        time.sleep(0.002)

    per_call = harness._sample(run, 2, 1.0, warm_calls=3)
    end = time.perf_counter()
    assert len(stamps) == 5
    # timed: the last two calls (2 ms each at least), not the five: the timed span lies
    # within the last two calls' (however long a loaded machine makes them)
    assert per_call >= 0.002
    assert 2 * per_call <= end - stamps[3] + 1e-3


def test_a_pure_case_judges_a_peer_by_its_later_calls_when_they_agree():
    """In a pure case, a peer wrong on its first call only passes, its detail naming the first
    call's glitch; one always wrong, or whose later calls differ from each other, fails."""
    counts = {"glitch": 0, "drift": 0}

    def glitch():  # wrong on its first call only
        counts["glitch"] += 1
        return np.full(4, 1.0 if counts["glitch"] > 1 else 1.5)

    def drift():  # right on its second call, another value on its third
        counts["drift"] += 1
        return np.full(4, 1.0 if counts["drift"] == 2 else 1.0 + counts["drift"])

    peers = [
        Impl("glitch", glitch),
        Impl("wrong", lambda: np.full(4, 2.0)),
        Impl("drift", drift),
    ]
    record = _checked(peers, pure=True)
    glitched, wrong, drifted = (record.checks[name] for name in ("glitch", "wrong", "drift"))
    assert glitched.ok and "first call differed" in glitched.detail
    assert not wrong.ok and "its second call: error" in wrong.detail
    assert not drifted.ok and "second and third calls differ" in drifted.detail
