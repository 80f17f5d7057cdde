"""Training curves: long runs get a running mean over their noisy step losses."""

import numpy as np

from vsm_kit.viz import draw_detections, plot_training
from vsm_kit.viz.training import LOSS_PANELS, SMOOTH_FROM, smoothed

KEYS = [k for keys in LOSS_PANELS.values() for k in keys]


def _history(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    steps = [
        {"kind": "step", "step": s, "lr": 1e-3, **{k: 1 / s + rng.uniform(0, 0.5) for k in KEYS}}
        for s in range(1, n + 1)
    ]
    return [{"kind": "val", "step": 0, "det_acc": 0.3, "giou": 0.0, "ciou": 0.0}, *steps]


def test_smoothed_is_the_running_mean_of_the_last_values():
    np.testing.assert_allclose(smoothed([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(smoothed([4.0], 3), [4.0])


def test_a_long_run_is_drawn_faint_with_its_mean_on_top():
    short, long = plot_training(_history(SMOOTH_FROM)), plot_training(_history(3 * SMOOTH_FROM))
    total = short.axes[0], long.axes[0]
    assert [len(ax.lines) for ax in total] == [1, 2]
    raw, mean = total[1].lines
    assert raw.get_alpha() < 1 and mean.get_label() == "loss (mean)"
    assert np.std(np.diff(mean.get_ydata())) < np.std(np.diff(raw.get_ydata())) / 5
    val = long.axes[-1]
    assert [line.get_xdata()[0] for line in val.lines] == [0, 0, 0]  # the step-0 validation


def test_detections_against_an_annotation_give_the_best_box_iou():
    image = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[10, 10, 50, 50], [100, 20, 160, 80]], np.float32)
    fig = draw_detections(image, boxes, np.array([0.2, 0.9]), "cup", truth_xyxy=[100, 20, 160, 50])
    assert fig.axes[0].get_title().endswith("IoU 0.50")
    assert len(fig.axes[0].patches) == 3
