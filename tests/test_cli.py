"""`vsm-kit` as a process: the console entry point, its exit codes and its stderr.

Each subcommand's working path and errors, in-process, are in tests/cli/."""

import subprocess
import sys

import pytest

from vsm_kit.cli import main


def _vsm_kit(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vsm_kit", *argv], capture_output=True, text=True)


def test_demo_world_then_check_via_console_script(tmp_path):
    out = tmp_path / "w"
    run = _vsm_kit("demo-world", "--out", str(out), "--seed", "2", "--bases", "random")
    assert run.returncode == 0, run.stderr
    assert (out / "dataset/coco2017/annotations/instances_train2017.json").exists()
    assert main(["check", str(out / "dataset"), "--verify-images", "all"]) == 0


def test_a_user_error_exits_2_with_one_message_and_no_traceback(tmp_path):
    run = _vsm_kit("preprocess", "--data-dir", str(tmp_path / "nope"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith(f"error: Missing dataset folder: {tmp_path / 'nope'}\n  Fix: ")
    assert "Traceback" not in run.stderr
    run = _vsm_kit("check", str(tmp_path), "--datasets", "nope")  # rejected by the parser
    assert run.returncode == 2
    assert run.stderr.startswith("error: vsm-kit check: argument --datasets: unknown name")
    assert "usage:" not in run.stderr and "Traceback" not in run.stderr


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as done:
        main(["search-eval", "--help"])
    assert done.value.code == 0
    assert "--log" in capsys.readouterr().out


def test_an_internal_error_keeps_its_traceback_and_does_not_exit_2(tmp_path):
    """A bug inside a command (here a ValueError, the kind user errors once were) is not turned
    into a one-line user error: the process prints its traceback and exits 1, not 2."""
    code = (
        "import runpy, vsm_kit.data\n"
        "def broken(*a, **k):\n"
        "    raise ValueError('a bug in check_layout')\n"
        "vsm_kit.data.check_layout = broken\n"
        f"import sys; sys.argv = ['vsm-kit', 'check', {str(tmp_path)!r}]\n"
        "runpy.run_module('vsm_kit', run_name='__main__')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert "Traceback (most recent call last)" in run.stderr
    assert "in broken" in run.stderr and run.stderr.rstrip().endswith(
        "ValueError: a bug in check_layout"
    )
    assert "error: " not in run.stderr
