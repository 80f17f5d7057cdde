"""Statistics figures: sizes of sources, class frequency, box sizes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..data.records import BoxTable
from ..data.stats import SourceStats, box_sides, class_frequency


def plot_overview(stats: list[SourceStats]) -> Figure:
    """Bars of records, boxes and classes per source."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = [s.name for s in stats]
    for ax, field, title in zip(
        axes,
        ("records", "boxes", "classes"),
        ("images / records", "boxes", "classes / phrases"),
        strict=True,
    ):
        ax.barh(names, [getattr(s, field) for s in stats], color="tab:blue")
        ax.set_title(title)
        ax.invert_yaxis()
    fig.tight_layout()
    return fig


def plot_class_frequency(tables: dict[str, BoxTable], top: int = 15) -> Figure:
    """The `top` most frequent labels of each source, one panel per source."""
    tables = {k: t for k, t in tables.items() if len(t)}
    cols = min(3, len(tables)) or 1
    rows = -(-len(tables) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, (name, table) in zip(axes.flat, tables.items(), strict=False):
        pairs = class_frequency(table, top)
        ax.barh([p[0][:28] for p in pairs], [p[1] for p in pairs], color="tab:orange")
        ax.invert_yaxis()
        ax.set_title(name)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(tables) :]:
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def plot_box_sizes(tables: dict[str, BoxTable]) -> Figure:
    """Histogram of box side (sqrt of area, pixels, log scale) per source."""
    fig, ax = plt.subplots(figsize=(8, 4))
    bins = np.logspace(0, 3.5, 30)
    for name, table in tables.items():
        sides = box_sides(table)
        sides = sides[sides > 0]
        if len(sides):
            ax.hist(sides, bins=bins, histtype="step", lw=2, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("box side sqrt(w·h), pixels")
    ax.set_ylabel("boxes")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def plot_boxes_per_record(tables: dict[str, BoxTable]) -> Figure:
    """Histogram of the number of boxes per image (record), one panel per table."""
    fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.5), squeeze=False)
    for ax, (name, table) in zip(axes.flat, tables.items(), strict=True):
        counts = np.bincount(table.record) if len(table) else np.zeros(0, int)
        counts = counts[counts > 0]
        ax.hist(counts, bins=np.arange(0, counts.max(initial=1) + 2) - 0.5, color="tab:green")
        ax.set_title(f"{name}: {len(counts)} images, {len(table)} boxes")
        ax.set_xlabel("boxes per image")
    fig.tight_layout()
    return fig
