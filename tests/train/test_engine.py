"""Two DeepSpeed CPU ranks train the tiny VSM on the demo world, launched from the run form;
killed after a checkpoint, the relaunched run resumes at the saved step with the same learning
rate and the same next batch, and deletes the folder of a save the kill interrupted."""

import functools
import json
import math
import time
from pathlib import Path

import vsm_kit
from tests.plumbing import PLUMBING
from vsm_kit.train.checkpoints import Checkpoints
from vsm_kit.train.launch import TrainingRun
from widgets import RunForm

from .conftest import assert_buffers_freed

CONFIGS = Path(vsm_kit.__file__).parent / "configs"
TIMEOUT = 600  # the first DeepSpeed run on a machine JIT-builds an op (about a minute)


def _steps(records):
    return [r for r in records if r["kind"] == "step"]


def test_train_kill_and_resume_step_exactly(demo_world, tmp_path):
    cfg = demo_world.recipe(
        **{
            **PLUMBING,
            "output_dir": str(tmp_path / "run"),
            "max_steps": 20,
        },
    )
    form = RunForm(cfg, start=functools.partial(TrainingRun.start, num_gpus=2))
    assert form.config == cfg
    run = form.launch()
    assert run is not None and run is form.run
    ckpts = Checkpoints(run.output_dir / "checkpoints")

    # kill between two checkpoints, once a step after the last checkpoint has been logged
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert run.status in ("starting", "running"), run.log_tail(40)
        assert time.monotonic() < deadline, run.log_tail(40)
        steps = _steps(run.history())
        saved = int(ckpts.last.removeprefix("global_step")) if ckpts.last else None
        if saved and steps and steps[-1]["step"] > saved and steps[-1]["step"] % 5 not in (0, 4):
            break
        time.sleep(0.05)
    form.stop()
    assert run.status == "stopped"
    assert_buffers_freed(run, ranks=2)
    saved = int(ckpts.last.removeprefix("global_step"))
    before = {r["step"]: r for r in reversed(_steps(run.history()))}  # first occurrences
    assert saved + 1 in before and saved >= 5
    # as if killed while saving the next checkpoint: its folder, a shard cut short
    partial = ckpts.dir / f"global_step{saved + 5}"
    partial.mkdir(exist_ok=True)
    (partial / "mp_rank_00_model_states.pt").write_bytes(b"PK\x03\x04")

    again = TrainingRun.start(cfg, num_gpus=2)
    assert again.wait(TIMEOUT) == "finished", again.log_tail(40)
    assert_buffers_freed(again, ranks=2)
    history = again.history()
    resumed = [r for r in history if r["kind"] == "resumed"]
    assert resumed[-1]["step"] == saved and resumed[-1]["tag"] == f"global_step{saved}"
    assert resumed[-1]["pruned"] == [partial.name]
    after = _steps(history)[-(cfg.total_steps - saved) :]
    assert [r["step"] for r in after] == list(range(saved + 1, cfg.total_steps + 1))
    first = after[0]
    assert first["batch"] == before[saved + 1]["batch"]  # the same next batch
    assert math.isclose(first["lr"], before[saved + 1]["lr"], rel_tol=1e-12)

    # every loss finite; validation ran; only the best and the last checkpoints remain
    keys = ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "detection_loss_ce")
    assert all(math.isfinite(r[k]) for r in _steps(history) for k in keys)
    vals = [r for r in history if r["kind"] == "val"]
    assert vals and {"giou", "ciou", "det_acc"} <= set(vals[-1])
    assert ckpts.last == "global_step20"
    best = ckpts.best
    kept = sorted(p.name for p in ckpts.dir.glob("global_step*"))
    assert kept == sorted({"global_step20", best["tag"]})
    assert json.loads((run.output_dir / "status.json").read_text())["state"] == "finished"
    assert any((run.output_dir / "tensorboard").iterdir())
    # a finished run can be reattached to and shows its history
    attached = TrainingRun.attach(run.output_dir)
    assert attached.status == "finished" and len(attached.history()) == len(history)
