"""Runs the training tests share: short fp32 runs of 2 CPU ranks on the demo world."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

import vsm_kit
from tests.plumbing import PLUMBING
from vsm_kit.convert import convert, merge
from vsm_kit.train import shm
from vsm_kit.train.config import RunConfig
from vsm_kit.train.launch import TrainingRun

CONFIGS = Path(vsm_kit.__file__).parent / "configs"
TIMEOUT = 600  # the first DeepSpeed run on a machine JIT-builds an op (about a minute)


def run_config(demo_world, out: Path, max_steps: int, **fields) -> RunConfig:
    """The demo config in fp32 without validation, checkpointing every 4 steps."""
    return demo_world.recipe(
        **{
            **PLUMBING,
            "output_dir": str(out),
            "precision": "fp32",
            "max_steps": max_steps,
            "cadence.checkpoint_every": 4,
            "cadence.validate": False,
            **fields,
        },
    )


def launch(config: RunConfig, num_gpus: int = 2, expect: str = "finished") -> TrainingRun:
    run = TrainingRun.start(config, num_gpus=num_gpus)
    assert run.wait(TIMEOUT) == expect, run.log_tail(40)
    return run


def assert_buffers_freed(run: TrainingRun, ranks: int) -> None:
    """The run's last launch released each rank's shared-memory buffer (on this machine, under
    its TrainingRun's port when known), and no buffer of any of its launches is left."""
    events = [r for r in run.history() if r["kind"] == "shared_memory"]
    assert events, "the run logged no release of its shared-memory buffers"
    released = [Path(p) for p in events[-1]["released"]]
    port = run.port or released[0].name.split("_")[-2]
    assert released == [shm.buffer_path(r, "127.0.0.1", str(port)) for r in range(ranks)]
    for event in events:
        for path in event["released"]:
            port = Path(path).name.split("_")[-2]
            assert shm.run_buffers(port) == [], path


def step_records(run: TrainingRun, after: int = 0) -> dict[int, dict]:
    """The last record of each step > `after` (a resumed run logs its steps again)."""
    return {r["step"]: r for r in run.history() if r["kind"] == "step" and r["step"] > after}


@pytest.fixture(scope="session")
def zero2_reference(demo_world, tmp_path_factory):
    """4 steps of ZeRO-2 with LoRA dropout 0: the run (resume and ZeRO tests copy or compare
    with it, never change it), its step-4 weights converted to fp32 and merged."""
    folder = tmp_path_factory.mktemp("zero2") / "run"
    run = launch(run_config(demo_world, folder, 4, **{"lora.dropout": 0.0}))
    report = convert(folder, out=folder.parent / "step4.safetensors")
    assert report.tag == "global_step4"
    merged = folder.parent / "merged"
    merge(run.config, report.out, merged, verify=False)
    return SimpleNamespace(run=run, weights=report.out, merged=merged)
