"""Loss components against values worked out by hand."""

import math

import pytest
import torch

from vsm_kit.model.losses import (
    GiouModeError,
    LossWeights,
    detection_losses,
    language_loss,
    mask_bce,
    mask_dice,
    mask_losses,
    match,
)


def test_language_loss_ignores_masked_labels():
    v = 5
    logits = torch.zeros(1, 4, v)  # uniform → CE = log V at every supervised position
    labels = torch.tensor([[-100, -100, 3, 1]])
    assert language_loss(logits, labels).item() == pytest.approx(math.log(v))
    logits[0, 1, 3] = 100.0  # position 1 predicts label[2] = 3 with certainty
    assert language_loss(logits, labels).item() == pytest.approx(math.log(v) / 2, rel=1e-5)


def test_bce_and_dice_by_hand():
    pred = torch.zeros(1, 2, 2)  # sigmoid 0.5 everywhere
    gt = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert mask_bce(pred, gt).item() == pytest.approx(math.log(2))
    # p/1000 = 0.0005; numerator 2·(2·0.0005) = 0.002; denominator 4·0.0005 + 2/1000 = 0.004
    assert mask_dice(pred, gt).item() == pytest.approx(1 - (0.002 + 1e-6) / (0.004 + 1e-6))


def test_mask_losses_weight_only_valid_masks():
    pred_a, gt_a = torch.zeros(2, 2, 2), torch.ones(2, 2, 2)
    pred_b, gt_b = torch.full((1, 3, 3), 5.0), torch.zeros(1, 3, 3)
    bce, dice = mask_losses(
        [pred_a, pred_b], [gt_a, gt_b], [torch.tensor([1, 0]), torch.tensor([1])]
    )
    bce_b = math.log1p(math.exp(5.0))  # BCE of logit 5 against 0
    assert bce.item() == pytest.approx(2.0 * (math.log(2) + bce_b) / 2, rel=1e-5)
    dice_a = 1 - (2 * 4 * 0.0005 + 1e-6) / (4 * 0.0005 + 4 / 1000 + 1e-6)
    assert dice.item() == pytest.approx(
        0.5 * (dice_a + 1 - 1e-6 / (9 * 0.99331 / 1000 + 1e-6)) / 2, rel=1e-4
    )
    none_valid = mask_losses([pred_a], [gt_a], [torch.tensor([0, 0])])
    assert none_valid[0].item() == 0 and none_valid[1].item() == 0


def _boxes(*b):
    return torch.tensor(b, dtype=torch.float32)


def test_matching_assigns_each_gt_one_distinct_patch():
    boxes = _boxes([0.2, 0.2, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2], [0.5, 0.5, 0.3, 0.3])
    gt = _boxes([0.7, 0.7, 0.2, 0.2], [0.2, 0.21, 0.1, 0.1])
    src, tgt = match(torch.zeros(3, 1), boxes, gt)
    assert dict(zip(tgt.tolist(), src.tolist(), strict=True)) == {0: 1, 1: 0}


def test_focal_l1_and_giou_by_hand():
    # one query, two patches; patch 0 sits exactly on the GT box → matched, L1 = GIoU loss = 0
    logits = torch.tensor([[[0.0], [0.0]]])
    boxes = _boxes([0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]).unsqueeze(0)
    gt = [_boxes([0.5, 0.5, 0.2, 0.2])]
    out = detection_losses(logits, boxes, gt, torch.tensor([1]))
    focal = 0.25 * 0.25 * math.log(2) + 0.75 * 0.25 * math.log(2)  # target 1 and target 0 at p=.5
    assert out["detection_loss_ce"].item() == pytest.approx(focal, rel=1e-5)
    assert out["detection_loss_bbox"].item() == pytest.approx(0, abs=1e-7)
    assert out["detection_loss_giou"].item() == pytest.approx(0, abs=1e-6)
    assert out["detection_loss"].item() == pytest.approx(0.1 * 2 * focal, rel=1e-5)
    # shift the GT by 0.1 in x: L1 = 0.1; boxes [0.4,0.6]x[0.4,0.6] vs [0.5,0.7]x[0.4,0.6]:
    # IoU = 0.01/0.03, enclosing area = union → GIoU = 1/3
    gt = [_boxes([0.6, 0.5, 0.2, 0.2])]
    out = detection_losses(logits, boxes, gt, torch.tensor([1]))
    assert out["detection_loss_bbox"].item() == pytest.approx(0.1, rel=1e-5)
    assert out["detection_loss_giou"].item() == pytest.approx(1 - 1 / 3, rel=1e-5)


def test_default_giou_is_the_originals_sum_over_all_pairs_with_vqa_rows():
    """Queries 0 and 1 are valid (two boxes and one), query 2 a VQA row with the dummy box.
    The original's term (§6.3), the default, is (Σ_valid k_q) · Σ_{every matched pair, the
    dummy's included} (1 − GIoU) / num_boxes; "normalized" sums the valid pairs only."""
    logits = torch.zeros(3, 3, 1)
    # patches A [0.2,0.3]², B [0.7,0.8]², C [0.25,0.75]², the same for every query
    patches = _boxes([0.25, 0.25, 0.1, 0.1], [0.75, 0.75, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5])
    boxes = patches.expand(3, -1, -1)
    gt = [
        _boxes([0.3, 0.25, 0.1, 0.1], [0.75, 0.75, 0.1, 0.1]),  # → A and B
        _boxes([0.5, 0.5, 0.4, 0.4]),  # → C
        _boxes([0.5, 0.5, 1.0, 1.0]),  # VQA dummy → C
    ]
    valid = torch.tensor([1, 1, 0])
    # A vs [0.25,0.35]x[0.2,0.3]: IoU 0.005/0.015 = 1/3, enclosure = union → 1 − GIoU = 2/3
    # B vs itself: 0.  C vs [0.3,0.7]² (inside C): IoU 0.16/0.25, enclosure = C → 0.36
    # C vs the dummy [0,1]² (C inside): IoU 0.25/1, enclosure = union → 0.75
    pairs_valid = 2 / 3 + 0 + 0.36
    pairs_all = pairs_valid + 0.75
    k_valid = num_boxes = 3
    out = detection_losses(logits, boxes, gt, valid)
    assert out["detection_loss_giou"].item() == pytest.approx(
        k_valid * pairs_all / num_boxes, rel=1e-5
    )
    l1 = 0.05 + 0 + 0.2  # |Δ| of the valid pairs (A: x by 0.05; C: w and h by 0.1)
    assert out["detection_loss_bbox"].item() == pytest.approx(l1 / num_boxes, rel=1e-5)
    w = LossWeights()
    expected = w.detection * (
        w.det_class * out["detection_loss_ce"].item()
        + w.det_bbox * l1 / num_boxes
        + w.det_giou * k_valid * pairs_all / num_boxes
    )
    assert out["detection_loss"].item() == pytest.approx(expected, rel=1e-5)
    normalized = detection_losses(logits, boxes, gt, valid, giou="normalized")
    assert normalized["detection_loss_giou"].item() == pytest.approx(
        pairs_valid / num_boxes, rel=1e-5
    )
    # without any valid query the original's factor Σ_valid k_q is 0
    none = detection_losses(logits, boxes, gt, torch.zeros(3, dtype=torch.long))
    assert none["detection_loss_giou"].item() == 0
    with pytest.raises(GiouModeError, match="loss.giou: 'intended' .*Fix: set loss.giou"):
        detection_losses(logits, boxes, gt, valid, giou="intended")
    assert LossWeights().detection == 0.1
