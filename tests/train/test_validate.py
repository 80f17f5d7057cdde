"""`evaluate` against det_acc, gIoU and cIoU computed by hand (facts §7.4) on synthetic boxes
and masks, with a scripted model: top-patch boxes, mask logits > 0, refer overlap pixels."""

from types import SimpleNamespace

import pytest
import torch

from vsm_kit.model.image_inputs import ImageInputs
from vsm_kit.train.validate import evaluate


class Scripted:
    """`predict` returns the scripted outputs of the k-th validation image."""

    training = False

    def __init__(self, outputs):
        self.outputs, self.calls = outputs, 0

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def predict(self, batch, masks_for):
        out = self.outputs[self.calls]
        self.calls += 1
        return out


def _logits(best: int, patches: int = 4) -> torch.Tensor:
    logits = torch.full((patches, 1), -5.0)
    logits[best] = 5.0
    return logits


def _mask(rows: slice, cols: slice, value: float = 1.0, size=(4, 4)) -> torch.Tensor:
    m = torch.zeros(size)
    m[rows, cols] = value
    return m


@pytest.fixture
def image(demo_world):
    return next((demo_world.dataset / "coco2017" / "train2017").glob("*.jpg"))


def test_evaluate_matches_hand_computed_metrics(image):
    right = [0.5, 0.5, 0.4, 0.4]  # cxcywh_norm
    wrong = [0.1, 0.1, 0.1, 0.1]
    # image 1: two queries; the first's top patch (2) is right, the second's (0) is wrong
    boxes1 = torch.tensor([[wrong, wrong, right, wrong], [wrong, right, right, right]])
    gt1 = [torch.tensor([right]), torch.tensor([right])]
    pred1 = torch.stack([_mask(slice(0, 2), slice(0, 4)), _mask(slice(0, 1), slice(0, 1))])
    pred1 = pred1 * 20 - 10  # logits: > 0 inside
    # GT 1: rows 0-1 minus one pixel → inter 7, union 8; GT 2: a 2×2 block with one overlap
    # pixel valued 2 (outside the original's histogram) → fg 3 px, pred 1 px inside → 1 / 3
    t1 = _mask(slice(0, 2), slice(0, 4))
    t1[1, 3] = 0
    t2 = _mask(slice(0, 2), slice(0, 2))
    t2[1, 1] = 2
    # image 2: one query, right; an empty target and an empty prediction (IoU 1 by definition)
    boxes2 = torch.tensor([[right, wrong, wrong, wrong]])
    pred2 = torch.full((1, 4, 4), -3.0)
    outputs = [
        {
            "det_logits": torch.stack([_logits(2), _logits(0)]),
            "det_boxes": boxes1,
            "masks": [pred1],
        },
        {"det_logits": _logits(0)[None], "det_boxes": boxes2, "masks": [pred2]},
    ]
    batches = [
        {"bboxes_labels_list": gt1, "masks_list": [torch.stack([t1, t2])]},
        {"bboxes_labels_list": [torch.tensor([right])], "masks_list": [torch.zeros(1, 4, 4)]},
    ]
    samples = [SimpleNamespace(image_path=image, masks=True) for _ in batches]
    collate = iter(batches)
    metrics = evaluate(
        Scripted(outputs),
        samples,
        collator=lambda _: next(collate),
        inputs=ImageInputs(owl_size=16, clip_size=16),
        to_device=lambda batch: batch,
    )
    assert metrics["det_acc"] == pytest.approx(2 / 3)
    ious = [7 / (8 + 1e-5), 1 / (3 + 1e-5), 1.0]
    assert metrics["giou"] == pytest.approx(sum(ious) / 3)
    assert metrics["ciou"] == pytest.approx((7 + 1 + 0) / (8 + 3 + 0 + 1e-10))
