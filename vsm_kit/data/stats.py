"""Per-source statistics computed from box tables (no records built, no images decoded)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import BoxTable
from .sources import Source


@dataclass(frozen=True)
class SourceStats:
    name: str
    records: int
    boxes: int
    classes: int  # distinct labels that have at least one box
    boxes_per_record: float
    median_box_side: float  # sqrt(w·h) in pixels

    def row(self) -> tuple:
        return (
            self.name,
            self.records,
            self.boxes,
            self.classes,
            round(self.boxes_per_record, 2),
            round(self.median_box_side, 1),
        )


STATS_COLUMNS = ("source", "records", "boxes", "classes", "boxes/record", "median box side px")


def box_sides(table: BoxTable) -> np.ndarray:
    """sqrt(width · height) of every box, pixels (empty boxes give 0)."""
    wh = (table.boxes_xyxy[:, 2:] - table.boxes_xyxy[:, :2]).clip(min=0)
    return np.sqrt(wh[:, 0] * wh[:, 1])


def source_stats(source: Source) -> SourceStats:
    table = source.box_table()
    n = len(source)
    sides = box_sides(table)
    return SourceStats(
        name=source.name,
        records=n,
        boxes=len(table),
        classes=len(np.unique(table.label)),
        boxes_per_record=len(table) / n if n else 0.0,
        median_box_side=float(np.median(sides)) if len(sides) else 0.0,
    )


def class_frequency(table: BoxTable, top: int | None = None) -> list[tuple[str, int]]:
    """(label, box count), most frequent first; ties by name."""
    counts = np.bincount(table.label, minlength=len(table.labels))
    pairs = sorted(
        ((table.labels[i], int(c)) for i, c in enumerate(counts) if c), key=lambda p: (-p[1], p[0])
    )
    return pairs[:top] if top else pairs


def format_table(rows, columns) -> str:
    """Plain-text table (deterministic, for notebooks and the CLI)."""
    cells = [[str(c) for c in columns]] + [[str(v) for v in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(columns))]
    lines = [
        "  ".join(
            v.ljust(w) if j == 0 else v.rjust(w)
            for j, (v, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
