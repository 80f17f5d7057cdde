"""The demo recipe learns: a short run of 2 CPU ranks (ZeRO-2, LoRA) from the fitted tiny bases.

Its losses are the step means the engine logs, first window against last. The language loss,
both mask terms and the detection class term must fall. As in the original, OWL-ViT's box head is
frozen (its `layer_norm` is trainable by name but runs under no_grad), so a matched box is a fixed
function of the image: the L1 and GIoU terms fall only as the matcher picks other patches. They
must not rise, and must stay below bounds just above what they measured (how far targets in a
wrong box format would exceed them is not yet measured).
refCOCO val detection accuracy must rise well above its step-0 value (about 0.3: the bases'
classes before the VSM's query projection has learned anything).
"""

from __future__ import annotations

from .conftest import launch, step_records

STEPS = 300  # 2.4 minutes on 2 cores, once the bases are cached
WINDOW = 30  # steps per mean
FALLS = {  # last window's mean / first window's at most (measured: 0.00, 0.32, 0.68, 0.42)
    "ce_loss": 0.1,
    "mask_bce_loss": 0.6,
    "mask_dice_loss": 0.85,
    "detection_loss_ce": 0.7,
}
STEADY = ("detection_loss_bbox", "detection_loss_giou")  # frozen box head: at most 1.1× start
# measured: ratios 0.85 and 0.93, last means 0.15 and 2.4 (the original's GIoU term is a sum)
BOUNDS = {"detection_loss_bbox": 0.25, "detection_loss_giou": 3.2}
DET_ACC_GAIN = 0.25  # measured: 0.28 → 0.60 in 300 steps


def test_the_demo_recipe_learns_from_the_fitted_bases(pretrained_world, tmp_path):
    config = pretrained_world.recipe(
        output_dir=str(tmp_path / "run"),
        max_steps=STEPS,
        **{"cadence.validate_every": STEPS, "cadence.checkpoint_every": STEPS},
    )
    assert config.cadence.validate_first
    run = launch(config)
    steps = step_records(run)
    assert sorted(steps) == list(range(1, STEPS + 1))

    def mean(key: str, first: int) -> float:
        return sum(steps[s][key] for s in range(first, first + WINDOW)) / WINDOW

    start = {k: mean(k, 1) for k in (*FALLS, *STEADY)}
    end = {k: mean(k, STEPS - WINDOW + 1) for k in (*FALLS, *STEADY)}
    ratios = {k: round(end[k] / start[k], 3) for k in start}
    for key, most in FALLS.items():
        assert ratios[key] <= most, (key, ratios)
    for key in STEADY:
        assert ratios[key] <= 1.1 and end[key] < BOUNDS[key], (key, ratios, end)

    vals = {r["step"]: r for r in run.history() if r["kind"] == "val"}
    print("loss ratios", ratios, "last means", end, "val", vals)
    assert sorted(vals) == [0, STEPS]
    assert vals[STEPS]["det_acc"] >= vals[0]["det_acc"] + DET_ACC_GAIN, vals
    assert vals[0]["giou"] < 0.05 < 0.25 < vals[STEPS]["giou"], vals  # masks: none, then some
