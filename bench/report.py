"""What a run shows and keeps: the table on stdout (a line per case and peer, printed as each
case finishes), the JSON file with every sample, and the PNG chart; and, from a kept JSON file,
the Markdown page of the documentation and the README's headline (``python -m bench.report``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from .harness import DENSEKIT, Check, Record, Skip, Timing

COLUMNS = (  # title, width; the last one is not padded
    ("case", 23),
    ("shape", 18),
    ("dtype", 7),
    ("thr", 3),
    ("peer", 14),
    ("densekit", 12),
    ("peer time", 12),
    ("densekit rate", 16),
    ("peer rate", 16),
    ("ratio", 6),
    ("check", 0),
)
NOISY_SPREAD = 0.25  # IQR/2 over the median above which a row is marked noisy
SHORT_UNIT = {"GFLOP/s": "GF/s", "GB/s": "GB/s"}
LIBRARY_COLORS = {
    "densekit": "#d62728",
    "numpy": "#1f77b4",
    "torch": "#ff7f0e",
    "torch-autograd": "#ff7f0e",
    "torch-foreach": "#ff7f0e",
    "torch-fused": "#8c564b",
}


def _line(cells: list[str]) -> str:
    return " ".join(
        cell.ljust(width) if width else cell for cell, (_, width) in zip(cells, COLUMNS)
    ).rstrip()


def header() -> str:
    titles = [title for title, _ in COLUMNS]
    return _line(titles) + "\n" + "-" * (sum(w + 1 for _, w in COLUMNS) + 20)


def format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _spread(timing: Timing) -> float:
    q25, q75 = timing.iqr
    return (q75 - q25) / 2 / timing.median


def _time_cell(timing: Timing | None) -> str:
    if timing is None:
        return "-"
    return f"{format_seconds(timing.median)} ±{100 * _spread(timing):.0f}%"


def _check_cell(check: Check, *timings: Timing | None) -> str:
    if not check.ok:
        return f"!! VERIFY FAILED: {check.detail}"
    noisy = any(t is not None and _spread(t) > NOISY_SPREAD for t in timings)
    return "ok, noisy" if noisy else "ok"


def _rate_cell(
    record: Record, library: str, copy_gbs: float | None, peaks: dict | None = None
) -> str:
    rate = record.rate(library)
    if rate is None or not record.work:  # no work: a timing of overhead alone
        return "-"
    cell = f"{rate:.4g} {SHORT_UNIT.get(record.unit, record.unit)}"
    if record.unit == "GB/s" and copy_gbs:
        cell += f" {100 * rate / copy_gbs:.0f}%"
    peak = (peaks or {}).get(record.dtype, {}).get(record.threads)
    if record.unit == "GFLOP/s" and peak:
        cell += f" {100 * rate / peak:.0f}%"
    return cell


def rows(record: Record, copy_gbs: float | None, peaks: dict | None = None) -> list[str]:
    case = f"{record.family}/{record.name}"
    start = [case, record.shape, record.dtype, str(record.threads)]
    if record.error is not None:
        return [_line([*start, "-", "-", "-", "-", "-", "-", f"!! DENSEKIT ERROR: {record.error}"])]
    lines = []
    dk_time = _time_cell(record.timings.get(DENSEKIT))
    dk_rate = _rate_cell(record, DENSEKIT, copy_gbs, peaks)
    for peer, check in record.checks.items():
        ratio = record.ratio(peer)
        lines.append(
            _line(
                [
                    *start,
                    peer,
                    dk_time,
                    _time_cell(record.timings.get(peer)),
                    dk_rate,
                    _rate_cell(record, peer, copy_gbs, peaks),
                    "-" if ratio is None else f"{ratio:.3g}",
                    _check_cell(check, record.timings.get(DENSEKIT), record.timings.get(peer)),
                ]
            )
        )
    if not record.checks:  # no peer could run: densekit's time alone
        lines.append(_line([*start, "(none)", dk_time, "-", dk_rate, "-", "-", "unverified"]))
    return lines


def failures(records: list[Record]) -> list[str]:
    found = []
    for r in records:
        label = f"{r.family}/{r.name} {r.shape} {r.dtype} threads={r.threads}"
        if r.error is not None:
            found.append(f"{label}: densekit raised {r.error}")
        for peer, check in r.checks.items():
            if not check.ok:
                found.append(f"{label} vs {peer}: {check.detail} [{r.tolerance}]")
    return found


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")


def skip_lines(skips: list[Skip]) -> list[str]:
    """The skipped cases, one line per family and reason."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for skip in skips:
        grouped.setdefault((skip.family, skip.reason), []).append(skip.name)
    return [
        f"skipped ({family}: {reason}): " + ", ".join(names)
        for (family, reason), names in grouped.items()
    ]


def chart(
    records: list[Record],
    scaling: list[dict[str, Any]],
    path: Path,
    title: str,
    copy_gbs: float | None = None,
) -> str | None:
    """A bar panel of rates per (family, case) and a thread-scaling panel; None when written,
    else why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no chart (pip install 'densekit[bench]')"

    groups: dict[tuple[str, str], list[Record]] = {}
    for record in records:
        if record.timings and record.work and record.family != "threads":
            groups.setdefault((record.family, record.name), []).append(record)
    heights = [0.9 + sum(0.13 * len(r.timings) + 0.12 for r in group) for group in groups.values()]
    if scaling:
        heights.append(3.2)
    if not heights:
        return "nothing was timed: no chart"
    fig_height = sum(heights) + 0.8
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(11, fig_height),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axes = list(axes[:, 0])
    for ax, ((family, name), group) in zip(axes, groups.items()):
        _bar_panel(ax, f"{family}: {name}", group, copy_gbs)
    if scaling:
        _scaling_panel(axes[-1], scaling)
    # the title's room is fixed in inches, whatever the figure's height
    fig.suptitle(title, fontsize=11, y=1 - 0.15 / fig_height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig_height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _bar_panel(ax: Any, title: str, group: list[Record], copy_gbs: float | None) -> None:
    libraries = [DENSEKIT, *sorted({lib for r in group for lib in r.timings} - {DENSEKIT})]
    bar = 0.8 / len(libraries)
    rates = []
    for j, library in enumerate(libraries):
        ys, values = [], []
        for i, record in enumerate(group):
            rate = record.rate(library)
            if rate:
                ys.append(i + (j - (len(libraries) - 1) / 2) * bar)
                values.append(rate)
        rates += values
        color = LIBRARY_COLORS.get(library)
        ax.barh(ys, values, height=bar, label=library, color=color)
        for y, value in zip(ys, values):
            ax.text(value, y, f" {value:.3g}", va="center", fontsize=6.5)
    by_threads = len({r.threads for r in group}) > 1  # lowp: each case at 1 and N threads
    labels = [
        f"{r.shape} {r.dtype}"
        + (f" {r.threads} thr" if by_threads else "")
        + ("  VERIFY FAILED" if r.failed else "")
        for r in group
    ]
    ax.set_yticks(range(len(group)), labels, fontsize=8)
    for tick, record in zip(ax.get_yticklabels(), group):
        if record.failed:
            tick.set_color("red")
    ax.invert_yaxis()
    if group[0].unit == "GB/s" and copy_gbs:
        ax.axvline(copy_gbs, linestyle=":", color="gray", label="np.copyto")
        rates.append(copy_gbs)
    if rates and max(rates) / min(rates) > 30:
        ax.set_xscale("log")
    ax.set_xlim(right=max(rates) * (2.5 if ax.get_xscale() == "log" else 1.15))
    ax.set_xlabel(group[0].unit, fontsize=8)
    ax.set_title(title, fontsize=10, loc="left")
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _scaling_panel(ax: Any, scaling: list[dict[str, Any]]) -> None:
    top = 1
    for row in scaling:
        if not row["speedup"]:
            continue
        threads = sorted(row["speedup"])
        speedup = [row["speedup"][t] for t in threads]
        style = "-" if row["case"] == "matmul" else "--"
        ax.plot(
            threads,
            speedup,
            style,
            marker="o",
            color=LIBRARY_COLORS.get(row["library"]),
            label=f"{row['library']} {row['case']} {row['shape']}",
        )
        top = max(top, *threads)
    ax.plot([1, top], [1, top], ":", color="gray", label="linear")
    ax.set_xlabel("threads", fontsize=8)
    ax.set_ylabel("speed-up over 1 thread", fontsize=8)
    ax.set_title("thread scaling (float32)", fontsize=10, loc="left")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# --- the documentation's page, from a results JSON ---------------------------------------------
# Every figure of docs/benchmarks.md and of the README's headline comes from here, so that the
# pages are regenerated from a run, never edited (tests/test_docs.py checks both).

PEER_ORDER = ("numpy", "torch", "torch-autograd", "torch-foreach", "torch-fused")
PEER_TITLES = {
    "numpy": "vs NumPy",
    "torch": "vs torch",
    "torch-autograd": "vs torch autograd",
    "torch-foreach": "vs torch foreach",
    "torch-fused": "vs torch fused",
}
FAMILY_TITLES = {
    "gemm": "Matrix products (`gemm`)",
    "dense": "Dense layers (`dense`)",
    "activations": "Activations alone, forward and backward (`activations`)",
    "losses": "Losses, value and gradient (`losses`)",
    "normalization": "Normalization layers (`normalization`)",
    "optim": "Optimizer steps (`optim`)",
    "train": "Training with the model layer (`train`)",
    "threads": "Thread counts (`threads`)",
    "lowp": "Low precision: bf16 products and training, int8 inference (`lowp`)",
}
HEADLINE = (  # (family, case, shape, dtype, peer, what it measures, whom it is compared with)
    ("gemm", "matmul", "2048x2048x2048", "float32", "numpy", "a 2048-cubed product", "NumPy"),
    (
        "dense",
        "dense gelu",
        "256x784x256",
        "float32",
        "numpy",
        "a 256x784x256 dense layer with gelu",
        "NumPy",
    ),
    (
        "losses",
        "softmax CE",
        "8192x1000",
        "float32",
        "torch",
        "softmax cross-entropy's value and gradient at 8192x1000",
        "torch",
    ),
    (
        "train",
        "step",
        "64x784-256-128-10",
        "float32",
        "torch",
        "a training step of a 784-256-128-10 MLP at batch 64",
        "torch eager",
    ),
    (
        "lowp",
        "train step mixed_bfloat16",
        "256x784-256-128-10",
        "bfloat16",
        "densekit fp32",
        'its step at batch 256 under the "mixed_bfloat16" policy',
        "densekit float32",
    ),
    (
        "lowp",
        "predict int8",
        "256x784-256-128-10",
        "int8",
        "torch",
        "its int8 inference at batch 256",
        "torch dynamic quantization",
    ),
)
README_BEGIN = "<!-- headline: generated by `python -m bench.report --readme README.md JSON` -->"
README_END = "<!-- end of headline -->"


def _spread_of(timing: dict[str, Any]) -> float:
    return (timing["q75_s"] - timing["q25_s"]) / 2 / timing["median_s"]


def _rate_of(record: dict[str, Any], library: str, document: dict[str, Any]) -> str:
    timing = record["timings"].get(library)
    if timing is None or not record["work"]:
        return ""
    rate = timing["rate"]
    cell = f"{rate:.4g} {record['unit']}"
    copy_gbs = (document.get("copy_bandwidth") or {}).get("gb_per_s")
    peak = (document.get("fma_peak_gflops") or {}).get(record["dtype"], {})
    peak = peak.get(str(record["threads"])) or peak.get(record["threads"])
    if record["unit"] == "GB/s" and copy_gbs:
        cell += f" ({100 * rate / copy_gbs:.0f}% of copy)"
    elif record["unit"] == "GFLOP/s" and peak:
        cell += f" ({100 * rate / peak:.0f}% of peak)"
    return cell


def _check_of(record: dict[str, Any]) -> str:
    if record["error"] is not None:
        return f"densekit raised: {record['error']}"
    if not all(check["ok"] for check in record["checks"].values()):
        return "**verify failed**"
    if not record["checks"]:
        return "unverified"
    noisy = any(_spread_of(t) > NOISY_SPREAD for t in record["timings"].values())
    return "ok, noisy" if noisy else "ok"


def _table(head: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    return lines


def _family_table(records: list[dict[str, Any]], document: dict[str, Any]) -> list[str]:
    seen = {peer for record in records for peer in record["timings"]} - {DENSEKIT}
    peer_columns = [peer for peer in PEER_ORDER if peer in seen]
    peer_columns += sorted(seen - set(peer_columns))
    head = ["case", "shape", "dtype", "threads", "densekit", "densekit rate"]
    head += [PEER_TITLES.get(peer, f"vs {peer}") for peer in peer_columns] + ["check"]
    body = []
    for record in records:
        timing = record["timings"].get(DENSEKIT)
        time = "-" if timing is None else format_seconds(timing["median_s"])
        ratios = [record["ratios"].get(peer) for peer in peer_columns]
        row = [record["case"], record["shape"], record["dtype"], str(record["threads"]), time]
        row.append(_rate_of(record, DENSEKIT, document) or "-")
        row += ["" if ratio is None else f"{ratio:.2f}" for ratio in ratios]
        body.append([*row, _check_of(record)])
    return _table(head, body)


def _scaling_table(scaling: list[dict[str, Any]]) -> list[str]:
    counts = sorted({int(t) for row in scaling for t in row["gflops"]})
    head = ["case", "shape", "library"] + [f"{t} thr GFLOP/s" for t in counts]
    head.append(f"speed-up at {counts[-1]}")
    body = []
    for row in scaling:
        gflops = {int(t): rate for t, rate in row["gflops"].items()}
        speedup = {int(t): value for t, value in (row["speedup"] or {}).items()}
        cells = [f"{gflops[t]:.4g}" if t in gflops else "" for t in counts]
        top = speedup.get(counts[-1])
        last = "" if top is None else f"{top:.2f}x"
        body.append([row["case"], row["shape"], row["library"], *cells, last])
    return _table(head, body)


def _cpu_name(cpu: dict[str, Any]) -> str:
    """The model name, with the microarchitecture and family / model numbers where the run
    recorded them (runs before they were recorded: the model name alone)."""
    if cpu.get("family") is None:
        return cpu["model"]
    numbers = f"family {cpu['family']}, model {cpu['model_number']}"
    uarch = cpu.get("microarchitecture")
    return f"{cpu['model']} ({uarch}: {numbers})" if uarch else f"{cpu['model']} ({numbers})"


def _header(document: dict[str, Any], source: str) -> list[str]:
    facts = document["machine"]
    cpu = facts["cpu"]
    build = facts.get("densekit_build_info") or {}
    versions = ", ".join(f"{name} {v}" for name, v in facts["versions"].items() if v)
    threads = ", ".join(f"{name} {count}" for name, count in facts["threads"].items())
    settings = document.get("settings", {})
    arguments = list(facts["command"][3:])  # after "python -m bench"
    if "--out" in arguments:  # a local directory: not part of what was measured
        del arguments[arguments.index("--out") : arguments.index("--out") + 2]
    command = " ".join(["python -m bench", *arguments])
    kernels = ", ".join(
        f"{dtype} `{build[key]}`"
        for dtype, key in (("float32", "gemm_kernel_float32"), ("float64", "gemm_kernel_float64"))
        if key in build
    )
    rows = [
        ["date", facts["date"]],
        ["CPU", f"{_cpu_name(cpu)}, {facts['cpus_usable']} usable of {facts['cpu_count']} CPUs"],
        ["ISA flags", " ".join(cpu["isa_flags"])],
        ["memory", f"{facts['memory_gib']} GiB"],
        ["platform", f"{facts['platform']}, Python {facts['python']}"],
        ["versions", versions],
        ["densekit build", f"{build.get('threading', '?')} threading, microkernels {kernels}"],
        ["threads", threads],
        ["command", f"`{command}`" + (" (quick mode)" if settings.get("quick") else "")],
        ["git commit", str(facts.get("git_commit"))],
    ]
    copy = document.get("copy_bandwidth")
    if copy:
        rows.append(["copy bandwidth", f"{copy['gb_per_s']:.1f} GB/s (np.copyto, 256 MiB)"])
    for dtype, by_threads in (document.get("fma_peak_gflops") or {}).items():
        cells = ", ".join(f"{rate:.0f} on {t} thr" for t, rate in by_threads.items())
        rows.append([f"multiply-add peak, {dtype}", f"{cells} (GFLOP/s)"])
    # the CPU in the title: the documentation keeps runs of several CPU kinds (bench/README.md)
    kind = _cpu_name(cpu) + (" with AMX" if "amx_tile" in cpu["isa_flags"] else "")
    return [
        f"# Benchmarks: {kind}",
        "",
        f"<!-- generated by `python -m bench.report` from {source}: do not edit by hand -->",
        "",
        f"Generated by `python -m bench.report` from `{source}`; how to run the suite and",
        "regenerate this page: `bench/README.md`. Each case is verified against the peers first,",
        "then timed against them interleaved in one process (medians).",
        "**Ratio = densekit speed / peer speed** (above 1: densekit is faster). The rate's",
        "percentage is of the copy bandwidth (GB/s rows) or of the measured multiply-add peak",
        "(GFLOP/s rows); `noisy`: the spread of some library's samples exceeded",
        f"{100 * NOISY_SPREAD:.0f}% of the median.",
        "",
        *_table(["run", ""], rows),
    ]


def markdown_page(document: dict[str, Any], source: str) -> str:
    """docs/benchmarks.md: the run's machine, versions and date, then a table per family."""
    lines = _header(document, source)
    by_family: dict[str, list[dict[str, Any]]] = {}
    for record in document["records"]:
        if record["family"] != "threads":
            by_family.setdefault(record["family"], []).append(record)
    for family, records in by_family.items():
        lines += ["", f"## {FAMILY_TITLES.get(family, family)}", ""]
        lines += _family_table(records, document)
        summary = (document.get("summaries") or {}).get(family)
        if summary:  # the family's summary as the run printed it (targets, met or missed)
            lines += ["", "```text", *summary, "```"]
    if document.get("thread_scaling"):
        lines += ["", f"## {FAMILY_TITLES['threads']}", ""]
        lines += _scaling_table(document["thread_scaling"])
    if document.get("skipped"):
        lines += ["", "## Not run", ""]
        grouped: dict[tuple[str, str], list[str]] = {}
        for skip in document["skipped"]:
            grouped.setdefault((skip["family"], skip["reason"]), []).append(skip["name"])
        for (family, reason), names in grouped.items():
            lines.append(f"- {family} ({reason}): " + ", ".join(names))
    if document.get("failures"):
        lines += ["", "## Failures", ""] + [f"- {line}" for line in document["failures"]]
    return "\n".join(lines) + "\n"


def headline(document: dict[str, Any]) -> str:
    """The README's sentence of headline ratios, from the cases in HEADLINE that were run."""
    threads = (document.get("settings") or {}).get("threads")  # lowp also ran at 1 thread
    found = {
        (r["family"], r["case"], r["shape"], r["dtype"]): r["ratios"]
        for r in document["records"]
        if threads is None or r["threads"] == threads
    }
    parts = []
    for family, case, shape, dtype, peer, what, whom in HEADLINE:
        ratio = found.get((family, case, shape, dtype), {}).get(peer)
        if ratio is not None:
            parts.append(f"{what} runs at {ratio:.2f}x {whom}'s speed")
    facts = document["machine"]
    where = f"{_cpu_name(facts['cpu'])}, {facts['threads'].get('densekit', '?')} threads"
    return (
        f"On the reference run ({where}, {facts['date'][:10]}), "
        + "; ".join(parts)
        + " ([all figures](docs/benchmarks.md))."
    )


def update_readme(text: str, document: dict[str, Any]) -> str:
    """text with the lines between README_BEGIN and README_END replaced by the headline."""
    pattern = re.compile(re.escape(README_BEGIN) + r"\n.*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no headline markers ({README_BEGIN} ... {README_END}) in the README")
    block = f"{README_BEGIN}\n{headline(document)}\n{README_END}"
    return pattern.sub(lambda _: block, text, count=1)


def _display_path(path: Path) -> str:
    """The JSON file as the page names it: relative to the repository when it lies inside, so
    that the page does not depend on where the command ran."""
    try:
        return path.resolve().relative_to(Path(__file__).resolve().parent.parent).as_posix()
    except ValueError:
        return path.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Print the benchmarks page (Markdown) of a run's JSON file; with --readme, "
        "rewrite the README's headline from it instead.",
    )
    parser.add_argument("results", type=Path, help="a bench-*.json file of python -m bench")
    parser.add_argument("--readme", type=Path, help="rewrite this README's headline in place")
    args = parser.parse_args(argv)
    document = json.loads(args.results.read_text(encoding="utf-8"))
    if args.readme is not None:
        text = args.readme.read_text(encoding="utf-8")
        args.readme.write_text(update_readme(text, document), encoding="utf-8")
        return 0
    sys.stdout.write(markdown_page(document, _display_path(args.results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
