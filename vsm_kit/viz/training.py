"""Training curves from a run's history (`TrainingRun.history()` records)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

SMOOTH_FROM = 100  # steps
LOSS_PANELS = {
    "total": ("loss",),
    "language": ("ce_loss",),
    "mask": ("mask_bce_loss", "mask_dice_loss"),
    "detection (unweighted)": ("detection_loss_ce", "detection_loss_bbox", "detection_loss_giou"),
}


def latest_by_step(history: list[dict], kind: str) -> list[dict]:
    """Records of one kind, the last one per step (a resumed run logs its steps again)."""
    by_step = {r["step"]: r for r in history if r.get("kind") == kind}
    return [by_step[s] for s in sorted(by_step)]


def smoothed(values: list[float], window: int) -> np.ndarray:
    """The running mean over the last `window` values (fewer at the start)."""
    c = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def plot_training(history: list[dict]) -> Figure:
    """Loss components, learning rate and validation metrics against the optimizer step. Over
    more than `SMOOTH_FROM` steps each loss is drawn faint, with its running mean over a 50th of
    the steps on top."""
    steps = latest_by_step(history, "step")
    vals = latest_by_step(history, "val")
    fig, grid = plt.subplots(2, 3, figsize=(13, 6.5))
    axes = grid.flat
    x = [r["step"] for r in steps]
    window = max(len(x) // 50, 1) if len(x) > SMOOTH_FROM else 1
    for ax, (title, keys) in zip(axes, LOSS_PANELS.items(), strict=False):
        for k in keys:
            y = [r[k] for r in steps]
            if window == 1:
                ax.plot(x, y, marker=".", label=k)
            else:
                (raw,) = ax.plot(x, y, lw=0.5, alpha=0.3)
                ax.plot(x, smoothed(y, window), color=raw.get_color(), label=f"{k} (mean)")
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1 or window > 1:
            ax.legend(fontsize=7)
    ax = grid[1, 1]
    ax.plot(x, [r["lr"] for r in steps], color="tab:gray")
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax = grid[1, 2]
    for k in ("det_acc", "giou", "ciou"):
        ax.plot([r["step"] for r in vals], [r[k] for r in vals], marker="o", label=k)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("validation")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
