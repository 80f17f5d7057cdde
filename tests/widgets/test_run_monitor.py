"""RunMonitor over a run folder written the way the engine writes it."""

import json
import os
import time

from vsm_kit.train.config import RunConfig
from vsm_kit.train.engine import LOSS_KEYS
from vsm_kit.train.launch import TrainingRun
from widgets import RunMonitor


def _run_folder(tmp_path, state="finished", steps=4, error=None):
    run_dir = tmp_path / "run"
    RunConfig(output_dir=str(run_dir), max_steps=steps).save(run_dir / "config.yaml")
    losses = dict.fromkeys(LOSS_KEYS, 1.0)
    with open(run_dir / "metrics.jsonl", "w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({"kind": "step", "step": s, "lr": 1e-4 * s, **losses}) + "\n")
        f.write(
            json.dumps({"kind": "val", "step": steps, "giou": 0.5, "ciou": 0.4, "det_acc": 0.25})
        )
    status = {"state": state, "step": steps, "total": steps, "pid": 0}
    if error:
        status["error"] = error
    (run_dir / "status.json").write_text(json.dumps(status))
    return TrainingRun.attach(run_dir)


def test_monitor_shows_progress_status_and_curves(tmp_path):
    monitor = RunMonitor(_run_folder(tmp_path))
    assert monitor.follow(poll=0) == "finished"
    assert (monitor.progress.value, monitor.progress.max) == (4, 4)
    assert "finished" in monitor.status.value and "step 4/4" in monitor.status.value
    assert bytes(monitor.plot.value).startswith(b"\x89PNG")  # the loss figure was drawn


def test_monitor_shows_the_failure_reason(tmp_path):
    monitor = RunMonitor(_run_folder(tmp_path, state="failed", error="ValueError: broken batch"))
    assert monitor.refresh() == "failed"
    assert "broken batch" in monitor.status.value


def _live_run(tmp_path):
    """A run at step 2 of 5 whose process (this one) is alive; returns it and its status."""
    run = _run_folder(tmp_path, state="running", steps=2)
    RunConfig(output_dir=str(run.output_dir), max_steps=5).save(run.output_dir / "config.yaml")
    status_file = run.output_dir / "status.json"
    status = json.loads(status_file.read_text()) | {"pid": os.getpid()}
    status_file.write_text(json.dumps(status))
    return TrainingRun.attach(run.output_dir), status


def test_watch_follows_in_the_background_until_the_run_ends(tmp_path):
    run, status = _live_run(tmp_path)
    status_file = run.output_dir / "status.json"
    monitor = RunMonitor(run)
    monitor.watch(poll=0.02)
    assert monitor._watcher.is_alive()  # returned at once, still following
    with open(run.output_dir / "metrics.jsonl", "a") as f:
        f.write("\n" + json.dumps({"kind": "step", "step": 3, "lr": 3e-4, "loss": 0.5}) + "\n")
    deadline = time.monotonic() + 10
    while monitor.progress.value != 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert monitor.progress.value == 3  # picked up without a call from here
    status_file.write_text(json.dumps(status | {"state": "finished", "step": 3}))
    assert monitor.wait() == "finished"
    assert not monitor._watcher.is_alive() and "finished" in monitor.status.value


def test_the_figure_is_redrawn_sparingly_while_the_run_lives_and_once_it_has_ended(tmp_path):
    run, status = _live_run(tmp_path)
    status_file = run.output_dir / "status.json"
    monitor = RunMonitor(run)
    first = bytes(monitor.plot.value)
    assert first.startswith(b"\x89PNG")

    def add_step(step: int) -> None:
        with open(run.output_dir / "metrics.jsonl", "a") as f:
            losses = dict.fromkeys(LOSS_KEYS, 0.5)
            f.write("\n" + json.dumps({"kind": "step", "step": step, "lr": 1e-4, **losses}))

    add_step(3)
    assert monitor.refresh() == "running"
    assert monitor.progress.value == 3  # the status line follows at once
    assert bytes(monitor.plot.value) == first  # the figure waits: it cost PLOT_COST × its time
    monitor._next_plot = 0.0  # that time has passed
    monitor.refresh()
    second = bytes(monitor.plot.value)
    assert second != first
    add_step(4)
    status_file.write_text(json.dumps(status | {"state": "finished", "step": 4}))
    assert monitor.refresh() == "finished"
    assert bytes(monitor.plot.value) != second  # the end is drawn, due or not
