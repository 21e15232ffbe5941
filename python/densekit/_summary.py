"""``Sequential.summary``: Keras's table of layers and parameter counts, as plain text.

The columns, their default positions (``[0.45, 0.80, 1.0]`` of 88 characters) and the
totals (with their memory) follow ``keras.utils.summary_utils.print_summary``; cells too
long for their column wrap onto further lines instead of being cut.
"""

from __future__ import annotations

import textwrap

import numpy as np

DEFAULT_LINE_LENGTH = 88
DEFAULT_POSITIONS = (0.45, 0.80, 1.0)


def readable_memory_size(size: float) -> str:
    """``size`` bytes as Keras writes it: ``"288.00 B"``, ``"1.50 KB"``, ..."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size / 1024 < 1:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"


def _column_ends(line_length, positions, count: int) -> list[int]:
    if line_length is None:  # Keras's: 12 more for the Trainable column
        line_length = DEFAULT_LINE_LENGTH + (12 if count == 4 else 0)
    if isinstance(line_length, bool) or not isinstance(line_length, int) or line_length < 1:
        raise ValueError(f"line_length: expected an int >= 1, got {line_length!r}")
    if positions is None:
        positions = list(DEFAULT_POSITIONS)
        if count == 4:  # show_trainable: Keras scales the columns and adds one
            positions = [p * 0.90 for p in positions] + [1.0]
    positions = list(positions)
    if len(positions) != count or not all(
        isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0 for p in positions
    ):
        raise ValueError(f"positions: expected {count} positive numbers, got {positions!r}")
    if positions[-1] <= 1:
        positions = [int(line_length * p) for p in positions]
    ends, previous = [], 0
    for end in positions:
        end = int(end)
        if end - previous < 4:
            raise ValueError(
                f"positions: each column needs 4 characters or more, got ends {positions!r} "
                f"for line_length {line_length}"
            )
        ends.append(end)
        previous = end
    return ends


def _row_lines(cells, widths, alignment) -> list[str]:
    wrapped = [textwrap.wrap(cell, max(1, width - 2)) or [""] for cell, width in zip(cells, widths)]
    lines = []
    for i in range(max(len(w) for w in wrapped)):
        parts = []
        for column, width, align in zip(wrapped, widths, alignment):
            text = column[i] if i < len(column) else ""
            if align == "right":
                parts.append(" " + text.rjust(width - 2) + " ")
            elif align == "center":
                parts.append(" " + text.center(width - 2) + " ")
            else:
                parts.append(" " + text.ljust(width - 2) + " ")
        lines.append("".join(parts).rstrip())
    return lines


def print_summary(model, line_length, positions, print_fn, show_trainable) -> None:
    """Print ``model``'s summary (see ``Sequential.summary``)."""
    print_fn = print_fn or print
    header = ["Layer (type)", "Output Shape", "Param #"]
    alignment = ["left", "left", "right"]
    if show_trainable:
        header.append("Trainable")
        alignment.append("center")
    ends = _column_ends(line_length, positions, len(header))
    widths = [end - start for start, end in zip([0, *ends[:-1]], ends)]
    total_width = ends[-1]

    lines = [f'Model: "{model.name}"', "_" * total_width]
    lines += _row_lines(header, widths, alignment)
    lines.append("=" * total_width)
    for i, layer in enumerate(model.layers):
        shape = str((None, *layer.output_sample_shape)) if layer.built else "?"
        count = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        row = [f"{layer.name} ({type(layer).__name__})", shape, count]
        if show_trainable:
            row.append(("Y" if layer.trainable else "N") if layer.weight_specs else "-")
        lines += _row_lines(row, widths, alignment)
        lines.append(("_" if i + 1 < len(model.layers) else "=") * total_width)
    if not model.layers:
        lines.append("=" * total_width)

    itemsize = np.dtype(model.dtype).itemsize
    trainable = sum(w.size for w in model.trainable_weights)
    frozen = sum(w.size for w in model.non_trainable_weights)
    state = model.optimizer_state()
    optimizer = sum(v.size for v in state[1].values()) if state is not None else 0
    total = trainable + frozen + optimizer

    def count_line(label, count):
        return f" {label}: {count:,} ({readable_memory_size(count * itemsize)})"

    lines.append(count_line("Total params", total))
    lines.append(count_line("Trainable params", trainable))
    lines.append(count_line("Non-trainable params", frozen))
    if state is not None:
        lines.append(count_line("Optimizer params", optimizer))
    for line in lines:
        print_fn(line)
