"""DeepSpeed's shared-memory buffers (~66 MB of RAM per CPU rank) are freed by the run that
made them, whichever way it ends; a launch after a SIGKILL removes the killed run's, naming
each, and never one that a live process holds. Finished, failed and stopped runs are checked in
test_engine.py and test_faults.py (`assert_buffers_freed`)."""

import json
import mmap
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import vsm_kit
from vsm_kit.train import shm
from vsm_kit.train.launch import TrainingRun

from .conftest import TIMEOUT, assert_buffers_freed, run_config

KILL_BEFORE_RELEASE = "VSM_KIT_TEST_KILL_BEFORE_RELEASE"
# in a rank: SIGKILL the launcher and every rank at the moment the buffers would be released
SITECUSTOMIZE = f"""
import os, signal
if os.environ.get("LOCAL_RANK") is not None and os.environ.pop("{KILL_BEFORE_RELEASE}", None):
    from vsm_kit.train import shm

    def release_rank_buffer(rank):
        os.killpg(os.getpgid(0), signal.SIGKILL)

    shm.release_rank_buffer = release_rank_buffer
"""

# holds a buffer the way a rank does: maps it (`map`) or only has it open (`open`), until killed
HOLDER = """
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
os.write(fd, b"\\0" * 4096)
if sys.argv[2] == "map":
    m = mmap.mmap(fd, 4096)
    os.close(fd)
print("ready", flush=True)
time.sleep(600)
"""


def _hold(path: Path, how: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), how], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "ready\n"
    return holder


@pytest.fixture
def fake_buffers():
    """Buffer paths of a run at an address no real run uses, removed afterwards."""
    paths = [shm.buffer_path(rank, f"test.{os.getpid()}", "1") for rank in range(3)]
    yield paths
    for path in paths:
        path.unlink(missing_ok=True)


def test_the_sweep_removes_unused_buffers_and_keeps_those_mapped_or_open(fake_buffers):
    stale, mapped, held_open = fake_buffers
    stale.write_bytes(b"\0" * 8192)
    holders = [_hold(mapped, "map"), _hold(held_open, "open")]
    try:
        assert shm.sweep_stale(fake_buffers) == [(stale, 8192)]
        assert not stale.exists() and mapped.exists() and held_open.exists()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()
    # their holders gone, nothing keeps them
    assert shm.sweep_stale(fake_buffers) == [(mapped, 4096), (held_open, 4096)]
    assert not any(p.exists() for p in fake_buffers)


def test_release_unlinks_only_this_ranks_buffer_and_a_mapping_outlives_it(
    fake_buffers, monkeypatch
):
    monkeypatch.setenv("MASTER_ADDR", f"test.{os.getpid()}")
    monkeypatch.setenv("MASTER_PORT", "1")
    for path in fake_buffers[:2]:
        path.write_bytes(b"x" * 4096)
    with open(fake_buffers[1], "r+b") as f, mmap.mmap(f.fileno(), 4096) as m:
        assert shm.release_rank_buffer(1) == fake_buffers[1]
        assert m[:1] == b"x"  # the memory stays with the process that maps it
    assert fake_buffers[0].exists() and not fake_buffers[1].exists()
    assert shm.release_rank_buffer(2) is None  # none made (GPU ranks, several machines)


def _running_step(run_dir: Path, deadline: float) -> bool:
    status = run_dir / "status.json"
    while time.monotonic() < deadline:
        if status.exists():
            state = json.loads(status.read_text())
            if state.get("state") == "running" and (state.get("step") or 0) >= 1:
                return True
        time.sleep(0.2)
    return False


def test_a_launch_after_a_sigkill_frees_the_killed_runs_buffers_and_ctrl_c_frees_its_own(
    demo_world, tmp_path, monkeypatch, fake_buffers
):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    here = str(Path(vsm_kit.__file__).parent.parent)
    pythonpath = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), here, pythonpath]))
    monkeypatch.setenv(KILL_BEFORE_RELEASE, "1")
    killed = TrainingRun.start(run_config(demo_world, tmp_path / "killed", 4), num_gpus=2)
    # (not through `killed.status`: the TrainingRun that sees its run end frees the buffers
    # itself; here, as after a kill of the notebook or the CLI too, nothing is left to see it)
    assert killed.process.wait(TIMEOUT) == -signal.SIGKILL
    left = shm.run_buffers(killed.port)
    assert [p.name[-2:] for p in left] == ["_0", "_1"]  # both ranks' buffers, unfreed

    live = fake_buffers[0]
    holder = _hold(live, "map")
    try:
        config = run_config(demo_world, tmp_path / "next", 200, **{"optim.epochs": 40})
        config.save(tmp_path / "next.yaml")
        env = {k: v for k, v in os.environ.items() if k != KILL_BEFORE_RELEASE}
        env["PYTHONPATH"] = os.pathsep.join([here, pythonpath])
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vsm_kit",
                "train",
                "--config",
                str(tmp_path / "next.yaml"),
                "--num-gpus",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # as from a terminal, whatever ignores SIGINT above us (a background job's shell)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            ran = _running_step(tmp_path / "next", time.monotonic() + TIMEOUT)
            cli.send_signal(signal.SIGINT)  # Ctrl-C
            out, err = cli.communicate(timeout=120)
        finally:
            cli.kill()
        assert ran, (tmp_path / "next" / "train.log").read_text()[-3000:]
        assert live.exists()  # a live process maps it
    finally:
        holder.kill()
        holder.wait()
    for path in left:
        assert not path.exists()
        assert f"removed {path} (66 MB of shared memory), left by a training run killed" in err
    log = (tmp_path / "next" / "train.log").read_text()
    assert all(f"[vsm-kit] removed {path} (66 MB" in log for path in left)
    assert str(live) not in err + log
    # the Ctrl-C'd run freed its own
    assert "training stopped" in err
    assert_buffers_freed(TrainingRun.attach(tmp_path / "next"), ranks=2)
