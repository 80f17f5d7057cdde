"""Images with translucent masks, boxes and labels; grids of samples. Returns figures."""

from __future__ import annotations

import io
import textwrap
import warnings
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..data.records import Record
from ..errors import VsmKitError

_CMAP = plt.get_cmap("tab10")


def target_color(k: int) -> tuple[float, float, float]:
    return _CMAP(k % 10)[:3]


def overlay_masks(
    image: np.ndarray, masks: Sequence[np.ndarray], alpha: float = 0.45
) -> np.ndarray:
    """uint8 [H, W, 3]: `image` with each bool [H, W] mask blended in its target colour."""
    out = image.astype(np.float32).copy()
    for k, m in enumerate(masks):
        if m is None or not m.any():
            continue
        color = np.array(target_color(k), dtype=np.float32) * 255
        out[m] = (1 - alpha) * out[m] + alpha * color
    return out.clip(0, 255).astype(np.uint8)


def draw_record(
    record: Record,
    ax=None,
    masks: bool = True,
    boxes: bool = True,
    labels: bool = True,
    image: np.ndarray | None = None,
    max_targets: int = 10,
) -> Figure:
    """Draw a record's image with its targets (masks, `xyxy_px` boxes, texts).

    Conversations (VQA) and captions (grounding) go into the title. Returns the figure.
    """
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 6 * record.height / max(record.width, 1)))
    fig = ax.figure
    img = record.load_image() if image is None else image
    targets = record.targets[:max_targets]
    if masks:
        img = overlay_masks(img, [t.mask() if t.has_mask else None for t in targets])
    ax.imshow(img)
    for k, t in enumerate(targets):
        color = target_color(k)
        for x0, y0, x1, y1 in t.boxes_xyxy:
            if boxes:
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec=color))
        if labels and len(t.boxes_xyxy):
            x0, y0 = t.boxes_xyxy[0, :2]
            ax.text(
                max(x0, 0),
                max(y0, 0),
                textwrap.shorten(t.text, 40),
                fontsize=8,
                color="white",
                va="bottom",
                bbox={"fc": color, "ec": "none", "pad": 1},
            )
    ax.set_xlim(0, record.width)
    ax.set_ylim(record.height, 0)
    ax.set_axis_off()
    ax.set_title(_title(record), fontsize=8, loc="left")
    return fig


def _title(record: Record) -> str:
    head = f"{record.source} #{record.index}: {record.image_path.name}"
    if record.caption:
        head += "\n" + textwrap.fill(record.caption, 60)
    if record.conversations:
        q = record.conversations[0]["value"].replace("<image>", "").strip()
        a = record.conversations[1]["value"] if len(record.conversations) > 1 else ""
        q, a = textwrap.fill(q, 60, max_lines=3), textwrap.fill(a, 60, max_lines=2)
        head += f"\nQ: {q}\nA: {a}"
    return head


def sample_grid(
    source: Sequence[Record],
    indices: Sequence[int] | None = None,
    n: int = 6,
    cols: int = 3,
    seed: int = 0,
    masks: bool = True,
    boxes: bool = True,
) -> Figure:
    """A grid of records (given `indices`, else `n` drawn with `seed`). Unreadable images are
    skipped with a warning; the figure's title counts them."""
    if indices is None:
        rng = np.random.default_rng(seed)
        indices = sorted(rng.choice(len(source), size=min(n, len(source)), replace=False).tolist())
    rows = max(1, -(-len(indices) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    skipped = []
    for ax, i in zip(axes.flat, indices, strict=False):
        record = source[i]
        try:
            draw_record(record, ax=ax, masks=masks, boxes=boxes)
        except VsmKitError as err:
            skipped.append(str(err))
            warnings.warn(f"skipped: {err}", stacklevel=2)
            ax.text(
                0.5,
                0.5,
                "unreadable image\n" + record.image_path.name,
                ha="center",
                transform=ax.transAxes,
            )
    for ax in axes.flat:
        if not ax.images:
            ax.set_axis_off()
    name = getattr(source, "name", "")
    fig.suptitle(
        f"{name}: {len(indices)} samples"
        + (f", {len(skipped)} unreadable skipped" if skipped else "")
    )
    fig.tight_layout()
    fig.skipped = skipped
    return fig


def render_png(fig: Figure, dpi: int = 90, close: bool = True) -> bytes:
    """PNG bytes of `fig` (for widgets and files); closes it by default."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(fig)
    return buf.getvalue()


def draw_detections(
    image: np.ndarray,
    boxes_xyxy: np.ndarray,
    scores: np.ndarray,
    target: str,
    mask_logits: np.ndarray | None = None,
    top: int = 3,
    truth_xyxy: np.ndarray | None = None,
) -> Figure:
    """An image with the `top` highest-scoring boxes (`xyxy_px`) for `target`, their scores,
    and the mask (logits > 0) when given; `truth_xyxy`, an annotated box, is drawn dashed and
    the best box's IoU with it is in the title."""
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(6, 6 * h / max(w, 1)))
    shown = image if mask_logits is None else overlay_masks(image, [mask_logits > 0])
    ax.imshow(shown)
    for k in np.argsort(-np.asarray(scores))[:top]:
        x0, y0, x1, y1 = boxes_xyxy[k]
        color = target_color(0 if k == np.argmax(scores) else 1)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=2, ec=color))
        ax.text(
            x0,
            y0,
            f"{scores[k]:.2f}",
            color="white",
            fontsize=8,
            va="bottom",
            bbox={"facecolor": color, "alpha": 0.7, "pad": 1, "lw": 0},
        )
    title = f"{target!r}: top {min(top, len(scores))} boxes"
    if truth_xyxy is not None:
        import torch  # only beside a model's detections, which loaded it already
        from torchvision.ops import box_iou

        x0, y0, x1, y1 = truth_xyxy
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.5, ec="white", ls="--"))
        best = torch.as_tensor(np.asarray(boxes_xyxy)[np.argmax(scores)][None], dtype=torch.float32)
        iou = box_iou(best, torch.as_tensor(np.asarray(truth_xyxy)[None], dtype=torch.float32))
        title += f"; best vs annotation (dashed): IoU {float(iou[0, 0]):.2f}"
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    return fig
