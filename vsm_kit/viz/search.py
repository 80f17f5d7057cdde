"""Figures of a visual search: the path over the whole image, each step's heatmap."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:  # types only: viz sits below the search package
    from ..search.guided import SearchResult, Step


def draw_search_path(image: np.ndarray, result: SearchResult, upto: int | None = None) -> Figure:
    """The whole image with the visited patches numbered in visiting order (the first `upto`)
    and the final box."""
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(7, 7 * h / max(w, 1)))
    ax.imshow(image)
    steps = result.steps[: len(result.steps) if upto is None else upto]
    colors = plt.cm.viridis(np.linspace(0.15, 0.9, max(len(steps), 1)))
    for step, color in zip(steps, colors, strict=False):
        x, y, sw, sh = step.box_xywh
        ax.add_patch(Rectangle((x, y), sw, sh, fill=False, lw=1.5, ec=color))
        ax.text(
            x + 4,
            y + 4,
            str(step.index),
            color="white",
            fontsize=8,
            va="top",
            bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "lw": 0},
        )
    if result.box_xywh is not None and (upto is None or upto >= result.path_length):
        x, y, bw, bh = result.box_xywh
        ec = "tab:red" if result.found else "tab:gray"
        ax.add_patch(Rectangle((x, y), bw, bh, fill=False, lw=2.5, ec=ec))
        ax.text(
            x,
            y + bh,
            f"{result.target}: {result.score:.2f}",
            color="white",
            fontsize=9,
            va="top",
            bbox={"facecolor": ec, "alpha": 0.8, "pad": 1, "lw": 0},
        )
    verdict = "found" if result.found else "not found"
    ax.set_title(
        f"{result.target!r} {verdict}: {len(result.steps)} patches, "
        f"{result.model_calls} model calls, {result.seconds:.1f} s"
    )
    ax.axis("off")
    fig.tight_layout()
    return fig


def draw_step(image: np.ndarray, step: Step) -> Figure:
    """One visited patch with its heatmap (half-transparent) and its cue."""
    x, y, w, h = step.box_xywh
    patch = image[y : y + h, x : x + w]
    fig, ax = plt.subplots(figsize=(5, 5 * h / max(w, 1)))
    ax.imshow(patch)
    if step.heatmap is not None:
        ax.imshow(step.heatmap, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    cue = step.cue or ("detected" if step.heatmap is None else "")
    cue = "".join(ch if ch.isprintable() else "?" for ch in cue)[:120]  # model text, as shown
    ax.set_title(
        f"step {step.index} (level {step.level}), top score {step.top_score:.2f}\n{cue}", fontsize=9
    )
    ax.axis("off")
    fig.tight_layout()
    return fig
