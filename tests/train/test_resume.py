"""Exact resume: with LoRA dropout, 2 CPU ranks stopped after step 4 and relaunched to step 8
log the same losses and end with the same trainable weights as an uninterrupted 8-step run;
a relaunch with another world size is refused, naming both values."""

import math
from pathlib import Path

import torch

import vsm_kit
from vsm_kit.train.checkpoints import Checkpoints
from vsm_kit.train.config import RunConfig
from vsm_kit.train.engine import LOSS_KEYS
from vsm_kit.train.launch import TrainingRun

CONFIGS = Path(vsm_kit.__file__).parent / "configs"
TIMEOUT = 600


def _config(demo_world, out: Path, max_steps: int) -> RunConfig:
    return RunConfig.load(CONFIGS / "demo_tiny_cpu.yaml").replace(
        **{
            "data.data_dir": str(demo_world.dataset),
            "weights.dir": str(demo_world.weights),
            "output_dir": str(out),
            "precision": "fp32",
            "lora.dropout": 0.05,
            "max_steps": max_steps,
            "cadence.checkpoint_every": 4,
            "cadence.validate": False,
        }
    )


def _weights(run: TrainingRun, tag: str) -> dict:
    """The module's state in a checkpoint (fp32, ZeRO-2: every trainable weight in full)."""
    return torch.load(
        run.output_dir / "checkpoints" / tag / "mp_rank_00_model_states.pt",
        map_location="cpu",
        weights_only=False,
    )["module"]


def test_stopped_and_relaunched_run_equals_uninterrupted(demo_world, tmp_path):
    # the uninterrupted run and the first half of the split one run side by side
    whole = TrainingRun.start(_config(demo_world, tmp_path / "whole", 8), num_gpus=2)
    half = TrainingRun.start(_config(demo_world, tmp_path / "split", 4), num_gpus=2)
    assert whole.wait(TIMEOUT) == "finished", whole.log_tail(40)
    assert half.wait(TIMEOUT) == "finished", half.log_tail(40)
    split = TrainingRun.start(_config(demo_world, tmp_path / "split", 8), num_gpus=2)
    assert split.wait(TIMEOUT) == "finished", split.log_tail(40)

    history = split.history()
    resumed = [r for r in history if r["kind"] == "resumed"]
    assert [(r["step"], r["tag"]) for r in resumed] == [(4, "global_step4")]
    ours = {r["step"]: r for r in history if r["kind"] == "step" and r["step"] > 4}
    theirs = {r["step"]: r for r in whole.history() if r["kind"] == "step" and r["step"] > 4}
    assert sorted(ours) == sorted(theirs) == [5, 6, 7, 8]
    for step, r in ours.items():
        assert r["batch"] == theirs[step]["batch"]
        for k in LOSS_KEYS:
            assert math.isclose(r[k], theirs[step][k], rel_tol=1e-6, abs_tol=1e-12), (step, k)

    a, b = _weights(whole, "global_step8"), _weights(split, "global_step8")
    assert any("lora_" in k for k in a) and a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-9, msg=k)

    # each rank's resume state is in the checkpoint, with the shape it was written with
    state = Checkpoints(split.output_dir / "checkpoints", rank=1).rank_state("global_step8")
    assert state["sampler"] == {"micro_step": 8}
    assert state["shape"] == {"world_size": 2, "micro_batch": 2, "grad_accum": 1}

    # another world size is refused before any training
    more = TrainingRun.start(_config(demo_world, tmp_path / "split", 12), num_gpus=1)
    assert more.wait(TIMEOUT) == "failed", more.log_tail(40)
    error = more.error or ""
    assert "world_size 2 (now 1)" in error and "global_step8" in error
    assert not [r for r in more.history() if r["kind"] == "step" and r["step"] > 8]
