"""Validation on a REFER split (default refCOCO unc val): gIoU, cIoU and detection accuracy.

One item per image holding every sentence of it (no truncation), as the original does (§7.4):
a query hits when the box of its highest-scoring patch has IoU > 0.5 with the GT box; masks are
logits > 0 against the target's value-1 pixels; gIoU is the mean per-mask IoU (1 for an empty
union), cIoU the pooled one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torchvision.ops import box_convert, box_iou

from ..data.boxes import training_targets, xyxy_to_xywh
from ..data.sources import open_source
from ..model.image_inputs import decode_rgb
from .samples import VAL_QUESTION, Sample, build_sample


class ValidationSet(Sequence[Sample]):
    """The validation images of `spec` (`dataset|splitBy|split`) as samples built on access, so
    their masks and pixels are decoded during a validation pass and not held between passes."""

    def __init__(self, data_dir, spec: str = "refcoco|unc|val", limit: int | None = None):
        name, _, split = spec.split("|")
        self.source = open_source(name, data_dir, split=split)
        n = len(self.source) if limit is None else min(limit, len(self.source))
        self.rng = np.random.default_rng(0)  # unused: every sentence is kept
        self.indices = [i for i in range(n) if self._usable(self.source[i])]

    @staticmethod
    def _usable(record) -> bool:
        return any(
            len(training_targets(xyxy_to_xywh(t.boxes_xyxy), record.width, record.height))
            for t in record.targets
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Sample:  # type: ignore[override]
        record = self.source[self.indices[k]]
        k_all = len(record.targets)
        return build_sample(
            record, self.source, self.rng, k=k_all, question=VAL_QUESTION, drop_empty_targets=True
        )


@torch.no_grad()
def evaluate(model, samples, collator, inputs, to_device, rank: int = 0, world: int = 1) -> dict:
    """{"giou", "ciou", "det_acc"} over `samples`, split across ranks and all-reduced."""
    was_training = model.training
    model.eval()
    # inter, union, per-mask IoU sum, masks, hits, queries
    sums = torch.zeros(6, dtype=torch.float64)
    mine = range(rank, len(samples), world)
    # every rank runs as many forwards (ZeRO-3 gathers parameters collectively): pad with a
    # repeat whose result is not counted
    rounds = -(-len(samples) // world)
    for k in range(rounds):
        sample = samples[mine[k] if k < len(mine) else 0]
        sample.images, sample.images_clip = inputs.resize(decode_rgb(sample.image_path))
        batch = to_device(collator([sample]))
        p = model.predict(batch, masks_for=[sample.masks is not None])
        if k >= len(mine):
            continue
        for q, gt in enumerate(batch["bboxes_labels_list"]):
            best = p["det_logits"][q, :, 0].argmax()
            box = box_convert(p["det_boxes"][q, best : best + 1].float(), "cxcywh", "xyxy")
            iou = box_iou(box, box_convert(gt[:1].float(), "cxcywh", "xyxy"))[0, 0]
            sums[4] += float(iou > 0.5)
            sums[5] += 1
        if p["masks"][0] is not None:
            inter, union = _foreground_counts(p["masks"][0], batch["masks_list"][0])
            sums[0] += inter.sum()
            sums[1] += union.sum()
            sums[2] += torch.where(union > 0, inter / (union + 1e-5), torch.ones_like(union)).sum()
            sums[3] += len(union)
    model.train(was_training)
    if world > 1:
        device = batch_device(model)
        total = sums.to(device)
        dist.all_reduce(total)
        sums = total.cpu()
    inter, union, iou_sum, n_masks, hits, n_queries = sums.tolist()
    return {
        "giou": iou_sum / max(n_masks, 1),
        "ciou": inter / (union + 1e-10),
        "det_acc": hits / max(n_queries, 1),
    }


def _foreground_counts(logits: torch.Tensor, gt: torch.Tensor):
    """Per-mask foreground (intersection, union) as float64 [n], the original's way: prediction
    = logits > 0; the target's foreground is the value 1 only (a refer target's overlap pixels,
    2 or more, fall outside its two-class histogram: never intersected, still predicted)."""
    pred, fg = logits > 0, gt == 1
    inter = (pred & fg).flatten(1).sum(1).double().cpu()
    union = pred.flatten(1).sum(1).double().cpu() + fg.flatten(1).sum(1).double().cpu() - inter
    return inter, union


def batch_device(model) -> torch.device:
    return next(model.parameters()).device
