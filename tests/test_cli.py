import subprocess
import sys

from vsm_kit.cli import main


def test_demo_world_then_check_via_console_script(tmp_path):
    out = tmp_path / "w"
    run = subprocess.run(
        [sys.executable, "-m", "vsm_kit", "demo-world", "--out", str(out), "--seed", "2"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert (out / "dataset/coco2017/annotations/instances_train2017.json").exists()
    assert main(["check", str(out / "dataset"), "--verify-images", "all"]) == 0


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert main(["check", str(tmp_path), "--datasets", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset group" in err and "Traceback" not in err
