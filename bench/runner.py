"""The command line: run the chosen families case by case, print the table as it goes, then
write the JSON and the chart. Exit status 1 when any verification failed or densekit raised."""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import time
from pathlib import Path

import densekit

from . import machine, peers, report
from .config import DTYPES, Settings
from .harness import Record, Skip, measure

FAMILIES = (
    "gemm",
    "dense",
    "activations",
    "losses",
    "normalization",
    "threads",
    "optim",
    "train",
    "lowp",
)
DEFAULT_OUT = Path(__file__).parent / "results"


def _comma_list(choices: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        unknown = [item for item in items if item not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}; got {text!r}"
            )
        return items

    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="densekit microbenchmarks: verify against NumPy and torch, then time them "
        "interleaved in one process.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer shapes and repeats: under two minutes on 2 cores",
    )
    parser.add_argument(
        "--only",
        type=_comma_list(FAMILIES),
        default=FAMILIES,
        metavar="FAMILY,...",
        help="among " + ",".join(FAMILIES),
    )
    parser.add_argument(
        "--dtype",
        type=_comma_list(DTYPES),
        default=None,
        metavar="DTYPE,...",
        help="float32,float64 (default: both; under --quick float32 except for gemm)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="threads for densekit, torch and NumPy's BLAS, and the top of the thread-scaling "
        "range (default: densekit's default, scaling up to os.cpu_count())",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    args = parser.parse_args(argv)
    return Settings(
        quick=args.quick,
        families=tuple(f for f in FAMILIES if f in args.only),
        requested_dtypes=args.dtype,
        threads=args.threads or densekit.get_num_threads(),
        max_threads=args.threads or os.cpu_count() or 1,
        out_dir=args.out,
        chart=not args.no_chart,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    started = time.perf_counter()
    peers.set_threads(settings.threads)
    facts = machine.facts(argv)
    copy = machine.copy_bandwidth(repeats=3 if settings.quick else 7)
    threaded_copy = machine.threaded_copy_bandwidth(repeats=3 if settings.quick else 7)
    peaks = machine.fma_peak([1, settings.threads], repeats=3 if settings.quick else 5)
    _print_preamble(facts, copy, threaded_copy, peaks)

    records: list[Record] = []
    skips: list[Skip] = []
    summaries: dict[str, list[str]] = {}  # a family's summary lines, where it has one
    print(report.header(), flush=True)
    for family in settings.families:
        module = importlib.import_module(f"{__package__}.{family}")
        for item in module.cases(settings):
            if isinstance(item, Skip):
                skips.append(item)
                continue
            record = measure(item, settings.timing)
            del item  # free the case's arrays before the next one is built
            records.append(record)
            print("\n".join(report.rows(record, copy["gb_per_s"], peaks)), flush=True)
        summary = getattr(module, "summarize", None)
        lines = [] if summary is None else summary(records, peaks)
        if lines:
            summaries[family] = lines

    elapsed = time.perf_counter() - started
    failed = report.failures(records)
    print()
    for line in [
        *(line for lines in summaries.values() for line in lines),
        *report.skip_lines(skips),
    ]:
        print(line)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    json_path = settings.out_dir / f"bench-{stamp}.json"
    scaling = importlib.import_module(f"{__package__}.threads").scaling(records)
    report.write_json(
        json_path,
        {
            "machine": facts,
            "settings": {
                "quick": settings.quick,
                "families": settings.families,
                "dtype": settings.requested_dtypes,
                "threads": settings.threads,
                "max_threads": settings.max_threads,
                "timing": vars(settings.timing),
            },
            "copy_bandwidth": copy,
            "copy_bandwidth_threaded": threaded_copy,
            "fma_peak_gflops": peaks,
            "elapsed_s": elapsed,
            "records": [r.to_dict() for r in records],
            "thread_scaling": scaling,
            "summaries": summaries,
            "skipped": [vars(s) for s in skips],
            "failures": failed,
        },
    )
    print(f"wrote {json_path}")
    if settings.chart:
        png_path = json_path.with_suffix(".png")
        title = f"densekit {densekit.__version__} vs peers: {facts['cpu']['model']}, "
        title += f"{settings.threads} threads, {facts['date']}"
        why_not = report.chart(records, scaling, png_path, title, copy["gb_per_s"])
        print(why_not or f"wrote {png_path}")
    print(f"{len(records)} cases in {elapsed:.0f} s")
    if failed:
        print("\n!! " + "=" * 70)
        print(f"!! {len(failed)} FAILURE(S): densekit disagrees with a peer or raised")
        for line in failed:
            print("!!   " + line)
        print("!! " + "=" * 70)
        return 1
    return 0


def _print_preamble(facts: dict, copy: dict, threaded_copy: dict | None, peaks: dict) -> None:
    versions = ", ".join(f"{k} {v}" for k, v in facts["versions"].items() if v)
    threads = ", ".join(f"{k} {v}" for k, v in facts["threads"].items())
    print(f"cpu: {facts['cpu']['model']} ({facts['cpus_usable']} usable of {facts['cpu_count']})")
    print(f"isa: {' '.join(facts['cpu']['isa_flags'])}")
    print(f"versions: {versions}")
    print(f"threads: {threads}")
    print(f"densekit build: {facts['densekit_build_info']}")
    if facts["densekit_cpu_info"] is not None:
        print(f"densekit cpu_info: {facts['densekit_cpu_info']}")
    if peers.torch is None:
        print("torch is not importable: NumPy is the only peer")
    if peers.scipy_special is None:
        print("scipy is not importable: NumPy's gelu is the tanh approximation (tolerance 1e-3)")
    else:
        print("NumPy's gelu: exact, with scipy.special.erf")
    env = ", ".join(f"{k}={v}" for k, v in facts["environment"].items())
    print(f"environment: {env or '(none of the threading variables set)'}")
    line = f"copy bandwidth, 256 MiB, read + write: np.copyto {copy['gb_per_s']:.1f} GB/s"
    if threaded_copy is not None:
        threads, rate = threaded_copy["threads"], threaded_copy["gb_per_s"]
        line += f"; torch copy_ ({threads} threads) {rate:.1f} GB/s"
    print(line + "; GB/s rows show % of np.copyto's")
    if peaks:
        cells = [
            f"{dtype} " + ", ".join(f"{rate:.0f} on {t}" for t, rate in by_threads.items())
            for dtype, by_threads in peaks.items()
        ]
        print(
            "multiply-add peak (densekit's kernels, registers only), GFLOP/s on N threads: "
            + "; ".join(cells)
            + "; GFLOP/s rows at those thread counts show % of it"
        )
    print("ratio = densekit speed / peer speed (> 1: densekit faster); times are medians ± IQR/2")
    print()


def run_family_script(family: str) -> None:
    """For `python -m bench.<family>`: the runner with --only <family>."""
    raise SystemExit(main(["--only", family, *sys.argv[1:]]))
