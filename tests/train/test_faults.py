"""Bad training input ends in one message naming the field and the fix, before anything is
written: a relaunch that changes the model or the data stream of a run with a checkpoint, a
rank count below 1, a `weights.dir` that is not a folder, LoRA targets a LLaMA does not have.
A rank that fails is what the run reports, not the lost connections of the others."""

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

import vsm_kit
from vsm_kit.cli import main
from vsm_kit.errors import VsmKitError
from vsm_kit.train import launch as launch_module
from vsm_kit.train.config import LORA_TARGETS, ConfigError, RunConfig
from vsm_kit.train.launch import TrainingRun, deepspeed_command, dry_run, prepare
from vsm_kit.train.runlog import RunLog

from .conftest import TIMEOUT, assert_buffers_freed, run_config

FAIL_RANK = "VSM_KIT_TEST_FAIL_RANK"
# on the named rank only, every sample drawn raises, so it fails at its first training step
# while rank 0 goes on into the step's gradient all-reduce and loses its connection to it. The
# variable is removed before the import, so that the python subprocesses the import starts
# (py-cpuinfo's) do not patch and import again, each starting the next.
FAIL_AT_FIRST_STEP = f"""
import os
if os.environ.get("LOCAL_RANK", "-") == os.environ.get("{FAIL_RANK}"):
    del os.environ["{FAIL_RANK}"]
    from vsm_kit.train import hybrid

    def __getitem__(self, i):
        raise KeyError("conversations")

    hybrid.HybridDataset.__getitem__ = __getitem__
"""


@pytest.fixture
def resumable(zero2_reference, tmp_path) -> RunConfig:
    """A copy of the 4-step reference run (a real checkpoint), and its saved config."""
    folder = tmp_path / "run"
    shutil.copytree(zero2_reference.run.output_dir, folder)
    return RunConfig.load(folder / "config.yaml").replace(output_dir=str(folder))


def test_lora_targets_are_the_llama_linear_layers():
    from torch import nn
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    layer = LlamaDecoderLayer(
        LlamaConfig(hidden_size=8, intermediate_size=16, num_attention_heads=2), 0
    )
    linear = {n.rsplit(".", 1)[-1] for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
    assert linear == set(LORA_TARGETS)
    RunConfig().replace(**{"lora.targets": list(LORA_TARGETS)}).validate(check_paths=False)


@pytest.mark.parametrize(
    ("targets", "named"), [(["qq_proj"], "'qq_proj'"), (["q_proj", "proj"], "'proj'"), ([], None)]
)
def test_unknown_or_no_lora_targets_are_refused_naming_the_allowed(targets, named):
    with pytest.raises(ConfigError) as err:
        RunConfig().replace(**{"lora.targets": targets}).validate(check_paths=False)
    assert err.value.field == "lora.targets"
    assert ", ".join(LORA_TARGETS) in str(err.value)
    assert named is None or named in str(err.value)


def test_weights_dir_that_is_no_folder_is_named_itself(demo_world, tmp_path):
    nowhere = tmp_path / "nonexistent"
    cfg = run_config(demo_world, tmp_path / "run", 2, **{"weights.dir": str(nowhere)})
    for attempt in (cfg.validate, cfg.resolved, lambda: TrainingRun.start(cfg)):
        with pytest.raises(ConfigError) as err:
            attempt()
        assert err.value.field == "weights.dir"
        assert f"{nowhere} is not a folder; Fix:" in str(err.value)
        assert "llava-tiny" not in str(err.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("ranks", [0, -1, 1.5, True])
def test_rank_counts_below_one_are_refused_before_anything_is_written(ranks, demo_world, tmp_path):
    cfg = run_config(demo_world, tmp_path / "run", 2)
    for attempt in (
        lambda: TrainingRun.start(cfg, num_gpus=ranks),
        lambda: dry_run(cfg, num_gpus=ranks),
        lambda: deepspeed_command(tmp_path / "run", num_gpus=ranks),
    ):
        with pytest.raises(VsmKitError, match=rf"num_gpus: {ranks!r} is not a rank count; Fix:"):
            attempt()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lora.targets", ["q_proj", "k_proj", "v_proj"]),
        ("lora.r", 4),
        ("lora.alpha", 32),
        ("lora.dropout", 0.1),
        ("lora.train_mm_projector", True),
        ("weights.arch", "7b"),
        ("weights.base", "clip-tiny"),  # another existing folder
        ("weights.owlvit", "llava-tiny"),
        ("precision", "bf16"),
        ("seed", 1),
        ("optim.lr", 1e-4),
        ("optim.steps_per_epoch", 6),
        ("data.targets_per_sample", 2),
        ("data.mix.vqa.rate", 3.0),
        ("loss.giou", "normalized"),
    ],
)
def test_a_relaunch_that_changes_the_model_or_the_data_is_refused(
    field, value, resumable, demo_world
):
    saved = Path(resumable.output_dir) / "config.yaml"
    before, log = saved.read_bytes(), (saved.parent / "train.log").read_bytes()
    if field.startswith("weights.") and field != "weights.arch":
        value = str(demo_world.weights / value)
    with pytest.raises(VsmKitError) as err:
        TrainingRun.start(resumable.replace(**{field: value}))
    message = str(err.value)
    assert message.startswith(f"{field}: the run in {resumable.output_dir} has checkpoints")
    assert repr(value) in message and "Fix: restore" in message and "another output_dir" in message
    assert "\n" not in message
    assert saved.read_bytes() == before  # the run can still be converted and resumed
    assert (saved.parent / "train.log").read_bytes() == log  # nothing was launched


def test_a_relaunch_may_change_how_far_how_often_and_where(resumable):
    saved = Path(resumable.output_dir) / "config.yaml"
    changes = {
        "max_steps": 8,
        "cadence.checkpoint_every": 2,
        "cadence.validate": True,
        "data.workers": 1,
        "gradient_checkpointing": False,
    }
    prepare(resumable.replace(**changes))
    assert RunConfig.load(saved) == resumable.replace(**changes)


def test_checkpoints_without_their_config_are_not_resumed_blindly(resumable):
    saved = Path(resumable.output_dir) / "config.yaml"
    saved.write_text("optim:\n  warmup: 3\n")
    with pytest.raises(VsmKitError, match=r"config.yaml \(the config the run's checkpoints"):
        prepare(resumable)
    assert saved.read_text() == "optim:\n  warmup: 3\n"
    saved.unlink()
    with pytest.raises(VsmKitError, match=r"config.yaml is missing, yet .* holds checkpoints"):
        prepare(resumable)
    assert not saved.exists()
    # without a checkpoint a launch into the folder starts afresh: any config is taken
    shutil.rmtree(saved.parent / "checkpoints")
    prepare(resumable.replace(**{"lora.r": 4}))
    assert RunConfig.load(saved).lora.r == 4


def test_the_first_failing_rank_is_the_runs_error(demo_world, tmp_path, monkeypatch, capsys):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(FAIL_AT_FIRST_STEP))
    # the ranks import this vsm_kit (sitecustomize runs before the working folder is on the path)
    here = str(Path(vsm_kit.__file__).parent.parent)
    path = [str(hook), here, os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    monkeypatch.setenv(FAIL_RANK, "1")
    run = TrainingRun.start(run_config(demo_world, tmp_path / "run", 4), num_gpus=2)
    try:
        assert run.wait(TIMEOUT) == "failed", run.log_tail(40)
        run.process.wait(TIMEOUT)  # the launcher ends the other rank: nothing is left running
    finally:
        run.stop()
    assert run.status == "failed"
    assert_buffers_freed(run, ranks=2)

    records = [json.loads(p.read_text()) for p in (run.output_dir / "failures").glob("*.json")]
    first = min(records, key=lambda r: r["time"])
    assert (first["rank"], first["type"], first["message"]) == (1, "KeyError", "'conversations'")
    assert first["where"].startswith(str(hook / "sitecustomize.py") + ":")
    for error in (run.error, TrainingRun.attach(run.output_dir).error):
        assert error.startswith("rank 1 on ") and "KeyError: 'conversations'" in error
        assert "gloo" not in error.lower() and "connection" not in error.lower()
    assert TrainingRun.attach(run.output_dir).status == "failed"

    # the CLI (and the run monitor) show that error
    monkeypatch.setattr(launch_module.TrainingRun, "start", classmethod(lambda *a, **k: run))
    argv = ["train", "--config", str(run.output_dir / "config.yaml")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"error: training failed: {run.error}"
    from widgets.run_monitor import RunMonitor

    assert "KeyError: &#x27;conversations&#x27;" in RunMonitor(run).status.value


def test_every_rank_records_its_failure_and_a_relaunch_forgets_them(
    demo_world, tmp_path, monkeypatch
):
    prepare(run_config(demo_world, tmp_path / "run", 4))
    run = TrainingRun.attach(tmp_path / "run")
    for rank, err in ((1, KeyError("conversations")), (0, RuntimeError("Connection reset"))):
        monkeypatch.setenv("RANK", str(rank))
        try:
            raise err
        except Exception as raised:
            RunLog.fail(run.output_dir, raised)
    assert sorted(p.name for p in (run.output_dir / "failures").iterdir()) == [
        "rank_0.json",
        "rank_1.json",
    ]
    assert run.status == "failed" and run.error.startswith("rank 1 on ")
    assert json.loads((run.output_dir / "status.json").read_text())["error"] == run.error

    # a relaunch (here of a process that does nothing) starts with none recorded
    monkeypatch.setattr(launch_module, "deepspeed_command", lambda *a: [sys.executable, "-c", ""])
    rerun = TrainingRun.start(run.config)
    assert rerun.process.wait(TIMEOUT) == 0
    assert not (run.output_dir / "failures").exists() and rerun.error is None
