"""Exact resume (fp32, 2 CPU ranks): a run stopped after step 4, or killed while it saves step
4, and relaunched to step 8 logs the same losses and ends with the same trainable weights as an
uninterrupted 8-step run, with LoRA dropout 0.05 and 0; a relaunch with another world size is
refused, naming both values."""

import math
import os
import shutil
import textwrap

import torch

from vsm_kit.train.checkpoints import RANK_STATE, Checkpoints
from vsm_kit.train.engine import LOSS_KEYS
from vsm_kit.train.launch import TrainingRun

from .conftest import TIMEOUT, launch, run_config, step_records

KILL_AT_SAVE = "VSM_KIT_TEST_KILL_AT_SAVE"
# on rank 0, SIGKILL when the engine is about to write its resume state for the named tag:
# DeepSpeed's shards of that checkpoint are on disk, `latest` has not moved
SITECUSTOMIZE = f"""
import os, signal
if os.environ.get("LOCAL_RANK") == "0" and os.environ.get("{KILL_AT_SAVE}"):
    kill_at = os.environ.pop("{KILL_AT_SAVE}")  # the rank's own subprocesses run no hook
    from vsm_kit.train import checkpoints

    save = checkpoints.Checkpoints.save_rank_state

    def save_rank_state(self, tag, state):
        if tag == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        save(self, tag, state)

    checkpoints.Checkpoints.save_rank_state = save_rank_state
"""


def _weights(run: TrainingRun, tag: str) -> dict:
    """The module's state in a checkpoint (fp32, ZeRO-2: every trainable weight in full)."""
    return torch.load(
        run.output_dir / "checkpoints" / tag / "mp_rank_00_model_states.pt",
        map_location="cpu",
        weights_only=False,
    )["module"]


def _resumes(run: TrainingRun) -> list[tuple]:
    return [(r["step"], r["tag"], r["pruned"]) for r in run.history() if r["kind"] == "resumed"]


def _assert_same_steps(ours: TrainingRun, theirs: TrainingRun, steps: list[int]) -> None:
    a, b = step_records(ours), step_records(theirs)
    for step in steps:
        assert a[step]["batch"] == b[step]["batch"], step
        for k in LOSS_KEYS:
            assert math.isclose(a[step][k], b[step][k], rel_tol=1e-6, abs_tol=1e-12), (step, k)
    x, y = _weights(ours, "global_step8"), _weights(theirs, "global_step8")
    assert any("lora_" in k for k in x) and x.keys() == y.keys()
    for k in x:
        torch.testing.assert_close(x[k], y[k], rtol=1e-6, atol=1e-9, msg=k)


def test_killed_stopped_and_relaunched_run_equals_uninterrupted(demo_world, tmp_path, monkeypatch):
    fields = {"lora.dropout": 0.05, "cadence.checkpoint_every": 2}
    whole = launch(run_config(demo_world, tmp_path / "whole", 8, **fields))

    # killed on rank 0 in the middle of the step-4 save
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(KILL_AT_SAVE, "global_step4")
    config = run_config(demo_world, tmp_path / "split", 8, **fields)
    killed = TrainingRun.start(config, num_gpus=2)
    assert killed.wait(TIMEOUT) in ("failed", "stopped"), killed.log_tail(40)
    monkeypatch.delenv(KILL_AT_SAVE)
    ckpts = Checkpoints(killed.output_dir / "checkpoints")
    assert (ckpts.dir / "global_step4" / "mp_rank_00_model_states.pt").exists()
    assert not (ckpts.dir / "global_step4" / RANK_STATE.format(0)).exists()
    assert ckpts.last == "global_step2" and max(step_records(killed)) == 4

    # relaunched, it resumes from the checkpoint before the kill; stopped after step 4
    stopped = launch(config.replace(max_steps=4))
    assert _resumes(stopped) == [(2, "global_step2", ["global_step4"])]
    # and relaunched again to step 8
    split = launch(config)
    assert _resumes(split)[-1] == (4, "global_step4", [])
    assert sorted(step_records(split, after=2)) == [3, 4, 5, 6, 7, 8]
    _assert_same_steps(split, whole, [3, 4, 5, 6, 7, 8])

    # each rank's resume state is in the checkpoint, with the shape it was written with
    state = Checkpoints(split.output_dir / "checkpoints", rank=1).rank_state("global_step8")
    assert state["sampler"] == {"micro_step": 8}
    assert state["shape"] == {"world_size": 2, "micro_batch": 2, "grad_accum": 1}

    # another world size is refused before any training
    more = launch(config.replace(max_steps=12), num_gpus=1, expect="failed")
    error = more.error or ""
    assert "world_size 2 (now 1)" in error and "global_step8" in error
    assert max(step_records(more)) == 8


def test_without_dropout_a_stopped_run_resumes_exactly(zero2_reference, demo_world, tmp_path):
    """The reference run stopped after step 4 (dropout 0), copied and relaunched to 8."""
    fields = {"lora.dropout": 0.0}
    whole = launch(run_config(demo_world, tmp_path / "whole", 8, **fields))
    shutil.copytree(zero2_reference.run.output_dir, tmp_path / "split")
    split = launch(run_config(demo_world, tmp_path / "split", 8, **fields))
    assert _resumes(split) == [(4, "global_step4", [])]
    _assert_same_steps(split, whole, [5, 6, 7, 8])
