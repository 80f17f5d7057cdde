"""The working path of each command that needs no training run."""

import json
import shlex
import sys
from pathlib import Path

import yaml

import vsm_kit
from vsm_kit.cli import main
from vsm_kit.train import launch as launch_module

CONFIG = str(Path(vsm_kit.__file__).parent / "configs" / "demo_tiny_cpu.yaml")


def _model(demo_world) -> list[str]:
    return ["--model", str(demo_world.weights / "vsm-tiny"), "--device", "cpu"]


def test_check_and_preprocess(world_copy, capsys):
    assert main(["check", str(world_copy), "--datasets", "refer_seg", "--verify-images", "0"]) == 0
    assert "present" in capsys.readouterr().out
    (world_copy / "refer_seg" / "refcoco" / "refs(unc).p").unlink()
    assert main(["check", str(world_copy), "--datasets", "refer_seg"]) == 1
    assert "refs(unc).p" in capsys.readouterr().out
    assert main(["preprocess", "--data-dir", str(world_copy), "--only", "coco", "--force"]) == 0
    assert "coco" in capsys.readouterr().out


def test_train_dry_run_prints_the_launcher_command(demo_world, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run dir"  # a space: the printed command is quoted for a shell
    argv = ["train", "--config", CONFIG, "--data-dir", str(demo_world.dataset)]
    argv += ["--weights-dir", str(demo_world.weights), "--output-dir", str(run)]
    assert main([*argv, "--num-gpus", "2", "--max-steps", "3", "--dry-run"]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip())
    port = cmd[cmd.index("--master_port") + 1]
    assert cmd == [
        sys.executable,
        "-u",
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        port,
        "--module",
        "vsm_kit.train.engine",
        "--run-dir",
        str(run),
    ]
    saved = yaml.safe_load((run / "config.yaml").read_text())  # what the engine will read
    assert saved["max_steps"] == 3 and saved["data"]["data_dir"] == str(demo_world.dataset)
    assert not (run / "train.log").exists()  # nothing was launched

    hostfile = tmp_path / "hosts"
    assert main([*argv, "--hostfile", str(hostfile), "--dry-run"]) == 0
    cmd = shlex.split(capsys.readouterr().out.strip())
    assert cmd[4:6] == ["--hostfile", str(hostfile)] and "--num_gpus" not in cmd

    # without --num-gpus: every GPU of the machine, one CPU rank without GPUs (the launcher's
    # default, the same for TrainingRun.start)
    for gpus, ranks in ((4, "4"), (0, "1")):
        monkeypatch.setattr(launch_module, "_gpu_count", lambda gpus=gpus: gpus)
        assert main([*argv, "--dry-run"]) == 0
        cmd = shlex.split(capsys.readouterr().out.strip())
        assert cmd[cmd.index("--num_gpus") + 1] == ranks


def test_detect_json(demo_world, capsys):
    image = sorted((demo_world.dataset / "vstar_bench" / "direct_attributes").glob("*.jpg"))[0]
    argv = ["detect", *_model(demo_world), "--image", str(image), "--target", "cup"]
    assert main([*argv, "--top", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"] == "cup" and len(out["detections"]) == 2
    x0, y0, x1, y1 = out["detections"][0]["box_xyxy"]
    assert x0 <= x1 and y0 <= y1 and 0 <= out["detections"][0]["score"] <= 1


def test_search_eval_writes_its_log_where_told(demo_world, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    log = tmp_path / "logs" / "eval.jsonl"
    argv = ["search-eval", *_model(demo_world), "--bench", str(demo_world.dataset / "vstar_bench")]
    assert main([*argv, "--limit", "1", "--minimum-size", "600", "--log", str(log)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["summary"]["samples"] == 1
    assert str(log) in out and len(log.read_text().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # nothing in the cwd


def test_search_writes_into_out(demo_world, tmp_path, capsys):
    image = sorted((demo_world.dataset / "vstar_bench" / "direct_attributes").glob("*.jpg"))[0]
    argv = ["search", *_model(demo_world), "--image", str(image), "--target", "cup"]
    assert main([*argv, "--minimum-size", "600", "--out", str(tmp_path / "out")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert json.loads(first)["target"] == "cup"
    assert (tmp_path / "out" / "result.json").exists()
