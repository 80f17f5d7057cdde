"""`remove_run`: a finished or stopped run goes, a running one or a folder that is no run stays."""

import json
import os

import pytest

from vsm_kit.errors import VsmKitError
from vsm_kit.train import remove_run


def _run(folder, **status):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    (folder / "checkpoints").mkdir()
    if status:
        (folder / "status.json").write_text(json.dumps(status))
    return folder


def test_a_finished_or_dead_run_is_removed(tmp_path):
    assert remove_run(_run(tmp_path / "a", state="finished", pid=os.getpid()))
    assert remove_run(_run(tmp_path / "b", state="running", pid=2**22 + 12345))  # no such pid
    assert remove_run(_run(tmp_path / "c"))  # written by --dry-run, never started
    assert not any(tmp_path.iterdir())
    assert remove_run(tmp_path / "missing") is False


def test_a_running_run_or_a_folder_that_is_no_run_is_kept(tmp_path):
    running = _run(tmp_path / "live", state="running", pid=os.getpid())
    with pytest.raises(VsmKitError, match="still going"):
        remove_run(running)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(VsmKitError, match="holds no run"):
        remove_run(other)
    assert (running / "config.yaml").exists() and (other / "a.jpg").exists()
