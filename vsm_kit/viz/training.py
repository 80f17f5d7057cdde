"""Training curves from a run's history (`TrainingRun.history()` records)."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

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


def plot_training(history: list[dict]) -> Figure:
    """Loss components, learning rate and validation metrics against the optimizer step."""
    steps = latest_by_step(history, "step")
    vals = latest_by_step(history, "val")
    fig, grid = plt.subplots(2, 3, figsize=(13, 6.5))
    axes = grid.flat
    x = [r["step"] for r in steps]
    for ax, (title, keys) in zip(axes, LOSS_PANELS.items(), strict=False):
        for k in keys:
            ax.plot(x, [r[k] for r in steps], marker=".", label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        if len(keys) > 1:
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
