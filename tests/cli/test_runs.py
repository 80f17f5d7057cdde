"""`train`, `convert`, `merge` and `convert-merge` on one short 2-rank CPU run, made by the CLI."""

from pathlib import Path

import pytest

import vsm_kit
from vsm_kit.cli import main

CONFIG = str(Path(vsm_kit.__file__).parent / "configs" / "demo_tiny_cpu.yaml")


@pytest.fixture(scope="module")
def run_dir(demo_world, tmp_path_factory):
    """A 3-step run started by `vsm-kit train`; the working path of that command."""
    run = tmp_path_factory.mktemp("cli_run") / "run"
    argv = ["train", "--config", CONFIG, "--data-dir", str(demo_world.dataset)]
    argv += ["--weights-dir", str(demo_world.weights), "--output-dir", str(run)]
    assert main([*argv, "--num-gpus", "2", "--max-steps", "3"]) == 0, (
        run / "train.log"
    ).read_text()
    return run


def test_train_leaves_a_finished_run(run_dir):
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "global_step3"
    assert '"finished"' in (run_dir / "status.json").read_text()


def test_convert_then_merge(run_dir, tmp_path, capsys):
    assert main(["convert", str(run_dir)]) == 0
    weights = run_dir / "weights_fp32.safetensors"  # the documented default, beside the run
    assert weights.exists() and "global_step3" in capsys.readouterr().out
    out = tmp_path / "merged"
    assert main(["merge", "--weights", str(weights), "--out", str(out), "--dtype", "fp32"]) == 0
    assert (out / "config.json").exists() and str(out) in capsys.readouterr().out


def test_convert_merge(run_dir, tmp_path, capsys):
    out = tmp_path / "merged"
    argv = ["convert-merge", str(run_dir), "--out", str(out), "--last", "--no-verify"]
    assert main(argv) == 0
    converted, merged = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "global_step3" in converted and str(out) in merged
    assert any(out.glob("*.safetensors"))


@pytest.mark.parametrize("command", ["convert", "convert-merge"])
def test_wrong_tag(run_dir, tmp_path, capsys, command):
    argv = [command, str(run_dir), "--tag", "global_step9"]
    assert main(argv + (["--out", str(tmp_path / "m")] if command == "convert-merge" else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "global_step9" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_a_run_folder_without_checkpoints(demo_world, tmp_path, capsys):
    """A folder `train --dry-run` prepared holds a config but no checkpoint: train first."""
    run = tmp_path / "run"
    argv = ["train", "--config", CONFIG, "--data-dir", str(demo_world.dataset)]
    argv += ["--weights-dir", str(demo_world.weights), "--output-dir", str(run), "--dry-run"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["convert", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "train first" in err and "Traceback" not in err
