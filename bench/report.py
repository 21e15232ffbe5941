"""What a run shows and keeps: the table on stdout (a line per case and peer, printed as each
case finishes), the JSON file with every sample, and the PNG chart."""

from __future__ import annotations

import json
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
    labels = [f"{r.shape} {r.dtype}" + ("  VERIFY FAILED" if r.failed else "") for r in group]
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
