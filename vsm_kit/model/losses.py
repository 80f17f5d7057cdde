"""VSM training losses: language CE, mask BCE + DICE, and the one-class DETR-style detection loss.

Weights and formulas follow the original implementation (see `LossWeights`), its GIoU term
included: a broadcasting slip there turns the mean over valid pairs into a k-weighted sum over
every matched pair (`giou="original"`, the default); `giou="normalized"` is the intended mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from ..errors import VsmKitError

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
DICE_SCALE, DICE_EPS = 1000.0, 1e-6
GIOU_MODES = ("original", "normalized")


class GiouModeError(VsmKitError, ValueError):
    """A GIoU variant that is not one of `GIOU_MODES` (the run config's `loss.giou`)."""

    def __init__(self, giou):
        super().__init__(
            f"loss.giou: {giou!r} is not a GIoU variant; Fix: set loss.giou to one of "
            f"{', '.join(GIOU_MODES)}"
        )


@dataclass(frozen=True)
class LossWeights:
    ce: float = 1.0
    mask_bce: float = 2.0
    mask_dice: float = 0.5
    detection: float = 0.1
    det_class: float = 2.0  # also the matcher's class cost
    det_bbox: float = 5.0  # also the matcher's L1 cost
    det_giou: float = 2.0  # also the matcher's GIoU cost


DEFAULT_WEIGHTS = LossWeights()


def language_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose label is not -100.

    logits: [B, L, V]; labels: [B, L] (already aligned with logits' positions)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )


def mask_bce(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-mask mean BCE-with-logits. pred, gt: [n, H, W] → [n]."""
    return (
        F.binary_cross_entropy_with_logits(pred.float(), gt.float(), reduction="none")
        .flatten(1)
        .mean(1)
    )


def mask_dice(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-mask DICE loss with the original scale (1000) and epsilon (1e-6). [n, H, W] → [n]."""
    p = pred.float().sigmoid().flatten(1) / DICE_SCALE
    g = gt.float().flatten(1)
    numerator = 2 * (p * g).sum(-1)
    denominator = p.sum(-1) + (g / DICE_SCALE).sum(-1)
    return 1 - (numerator + DICE_EPS) / (denominator + DICE_EPS)


def mask_losses(preds, gts, valids, w: LossWeights = DEFAULT_WEIGHTS):
    """(bce, dice): validity-weighted means over all masks of the batch, weights applied.

    preds, gts: per image [n_i, H_i, W_i]; valids: per image [n_i] (0 for sources without masks)."""
    bce_sum = dice_sum = 0.0
    count = 0.0
    for pred, gt, valid in zip(preds, gts, valids, strict=True):
        if pred.shape[0] == 0:
            continue
        v = valid.float()
        keep = v > 0  # masks without supervision are not even evaluated
        if keep.any():
            bce_sum = bce_sum + (mask_bce(pred[keep], gt[keep]) * v[keep]).sum()
            dice_sum = dice_sum + (mask_dice(pred[keep], gt[keep]) * v[keep]).sum()
        count = count + v.sum()
    denom = count + 1e-8
    zero = _zero_like(preds)
    return (w.mask_bce * bce_sum / denom + zero, w.mask_dice * dice_sum / denom + zero)


def _zero_like(tensors) -> torch.Tensor:
    """A zero that keeps the graph connected to the predictions."""
    return sum((t.sum() * 0 for t in tensors), torch.zeros(()))


def match(
    logits: torch.Tensor, boxes: torch.Tensor, gt: torch.Tensor, w: LossWeights = DEFAULT_WEIGHTS
):
    """Hungarian matching of one query's patches to its GT boxes.

    logits: [P, 1]; boxes, gt: [P, 4] / [k, 4] in cxcywh_norm. Returns (patch idx [k'], gt idx [k'])
    with k' = min(P, k); each GT box gets one distinct patch."""
    with torch.no_grad():
        p = logits[:, 0].float().sigmoid()
        pos = FOCAL_ALPHA * (1 - p) ** FOCAL_GAMMA * -(p + 1e-8).log()
        neg = (1 - FOCAL_ALPHA) * p**FOCAL_GAMMA * -(1 - p + 1e-8).log()
        cost_class = (pos - neg)[:, None]
        cost_bbox = torch.cdist(boxes.float(), gt.float(), p=1)
        cost_giou = -generalized_box_iou(
            box_convert(boxes.float(), "cxcywh", "xyxy"), box_convert(gt.float(), "cxcywh", "xyxy")
        )
        cost = w.det_bbox * cost_bbox + w.det_class * cost_class + w.det_giou * cost_giou
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
    device = logits.device
    return torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)


def detection_losses(
    pred_logits,
    pred_boxes,
    gt_boxes,
    valid,
    w: LossWeights = DEFAULT_WEIGHTS,
    giou: str = "original",
) -> dict[str, torch.Tensor]:
    """Detection loss terms (unweighted) and their weighted sum `detection_loss`.

    pred_logits: [N, P, 1]; pred_boxes: [N, P, 4] cxcywh_norm; gt_boxes: N tensors [k_q, 4]
    cxcywh_norm; valid: [N] (0 for VQA rows, whose dummy box is matched but not supervised).
    `giou` (one of `GIOU_MODES`): "original" reproduces the original code's outer-product sum,
    (Σ_valid k_q) · Σ_{all matched pairs, VQA dummies included} (1 − GIoU) / num_boxes;
    "normalized" is Σ_{valid pairs} (1 − GIoU) / num_boxes."""
    if giou not in GIOU_MODES:
        raise GiouModeError(giou)
    n = pred_logits.shape[0]
    valid = valid.float()
    k_valid = float(sum(len(g) for g, v in zip(gt_boxes, valid.tolist(), strict=True) if v > 0))
    num_boxes = max(1.0, k_valid)
    ce, l1, giou_valid, giou_all = [], [], [], []
    for q in range(n):
        src, tgt = match(pred_logits[q], pred_boxes[q], gt_boxes[q], w)
        target = torch.zeros_like(pred_logits[q, :, 0])
        target[src] = 1
        ce.append(
            sigmoid_focal_loss(
                pred_logits[q, :, 0].float(),
                target.float(),
                FOCAL_ALPHA,
                FOCAL_GAMMA,
                reduction="sum",
            )
        )
        pb, gb = pred_boxes[q, src].float(), gt_boxes[q][tgt].float()
        l1.append((pb - gb).abs().sum() * valid[q])
        g = 1 - torch.diag(
            generalized_box_iou(
                box_convert(pb, "cxcywh", "xyxy"), box_convert(gb, "cxcywh", "xyxy")
            )
        )
        giou_valid.append(g.sum() * valid[q])
        giou_all.append(g.sum())
    loss_ce = (torch.stack(ce) * valid).mean()
    loss_bbox = torch.stack(l1).sum() / num_boxes
    if giou == "original":
        loss_giou = k_valid * torch.stack(giou_all).sum() / num_boxes
    else:
        loss_giou = torch.stack(giou_valid).sum() / num_boxes
    total = w.detection * (w.det_class * loss_ce + w.det_bbox * loss_bbox + w.det_giou * loss_giou)
    return {
        "detection_loss": total,
        "detection_loss_ce": loss_ce,
        "detection_loss_bbox": loss_bbox,
        "detection_loss_giou": loss_giou,
    }
