"""An image that becomes unreadable mid-run is skipped, counted and named; no rank stops."""

import math
from pathlib import Path

import pytest

import vsm_kit
from tests.plumbing import PLUMBING
from vsm_kit.train.config import RunConfig
from vsm_kit.train.hybrid import DataTreeError, HybridDataset
from vsm_kit.train.launch import TrainingRun
from vsm_kit.train.runlog import skipped_images
from widgets import RunMonitor

CONFIGS = Path(vsm_kit.__file__).parent / "configs"
MICRO, WORLD = 2, 2  # the demo config's micro-batch, two CPU ranks


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:64])  # a cut file: the header is there, the pixels not


def _dataset(data_dir) -> HybridDataset:
    return HybridDataset(data_dir, RunConfig().data.mix, seed=0)


def test_an_unreadable_image_is_redrawn_and_reported(world_copy):
    dataset = _dataset(world_copy)
    bad = dataset.draw(5).image_path
    _corrupt(bad)
    sample = dataset[5]
    assert sample.image_path != bad and set(sample.skipped_images) == {str(bad)}
    # the replacement is a pure function of (seed, index, attempt): the same on every rank
    attempt = len(sample.skipped_images)
    assert sample.image_path == dataset.draw(5, attempt).image_path
    assert _dataset(world_copy)[5].image_path == sample.image_path


def test_a_tree_of_unreadable_images_names_the_last_and_the_fix(world_copy):
    dataset = _dataset(world_copy)
    for path in world_copy.rglob("*.jpg"):
        _corrupt(path)
    with pytest.raises(DataTreeError, match=r"50 draws in a row .*\.jpg\); check .*vsm-kit check"):
        dataset[0]


def test_corrupt_image_between_launches_is_skipped_on_every_rank(demo_world, world_copy, tmp_path):
    cfg = demo_world.recipe(
        **{
            **PLUMBING,
            "data.data_dir": str(world_copy),
            "output_dir": str(tmp_path / "run"),
            "max_steps": 1,
            "cadence.checkpoint_every": 1,
            "cadence.validate": False,
        },
    )
    first = TrainingRun.start(cfg, num_gpus=WORLD)
    assert first.wait(600) == "finished", first.log_tail(40)

    # step 2 is micro-step 1: rank r reads samples (1·W + r)·b … ; cut rank 1's first image
    dataset = _dataset(world_copy)
    bad = dataset.draw((1 * WORLD + 1) * MICRO).image_path
    _corrupt(bad)
    step2 = range(1 * WORLD * MICRO, 2 * WORLD * MICRO)
    expected = [p for i in step2 for p in dataset[i].skipped_images]
    assert expected and set(expected) == {str(bad)}

    second = TrainingRun.start(cfg.replace(max_steps=3), num_gpus=WORLD)
    assert second.wait(600) == "finished", second.log_tail(40)  # no rank hung or stopped
    history = second.history()
    steps = {r["step"]: r for r in history if r["kind"] == "step"}
    assert steps[2]["skipped_images"] == len(expected)
    assert steps[3]["skipped_images"] == 0 and math.isfinite(steps[3]["loss"])
    assert skipped_images(history) == expected
    monitor = RunMonitor(TrainingRun.attach(second.output_dir))
    assert f"{len(expected)} unreadable image(s) skipped" in monitor.status.value
