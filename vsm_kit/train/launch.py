"""Starting, following, stopping and reattaching to training runs.

`TrainingRun.start(config)` validates the config, writes it (resolved: absolute folders) to
`output_dir/config.yaml` and starts the `deepspeed` launcher in the background; the engine's
`metrics.jsonl` and `status.json` are what `follow()` and `attach()` read, so a notebook can
reconnect to a run it did not start, running or finished.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..data.layout import check_layout
from ..errors import VsmKitError
from .config import RunConfig
from .runlog import METRICS, STATUS

LOG = "train.log"


def deepspeed_command(
    run_dir: Path, num_gpus: int | None = None, hostfile: str | None = None
) -> list[str]:
    """The launcher command line: one node with `num_gpus` ranks (default: every GPU of this
    machine; CPU ranks, 1 by default, on a machine without GPUs), or the nodes of a DeepSpeed
    `hostfile`."""
    cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
    if hostfile:
        cmd += ["--hostfile", str(hostfile)]
    else:
        ranks = num_gpus or _gpu_count() or 1
        cmd += ["--num_gpus", str(ranks), "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(_free_port()), "--module", "vsm_kit.train.engine"]
    return cmd + ["--run-dir", str(run_dir)]


def prepare(config: RunConfig) -> Path:
    """Validate (config and data tree), resolve and write the run's `config.yaml`; returns the
    run folder. Everything that can be wrong before training is reported here, not an hour in."""
    config = config.resolved().validate()
    report = check_layout(config.data.data_dir, groups=list(config.data.mix), verify_images=0)
    if not report.ok:
        raise VsmKitError(f"data.data_dir: the data tree is incomplete\n\n{report}")
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    previous = run_dir / "config.yaml"
    if previous.exists() and (run_dir / "checkpoints" / "latest").exists():
        _check_resumable(RunConfig.load(previous), config)
    config.save(previous)
    return run_dir


def dry_run(config: RunConfig, num_gpus: int | None = None, hostfile: str | None = None) -> str:
    """Everything `TrainingRun.start` does but launching: validate, write the run's
    `config.yaml`; returns the launcher command line it would run, quoted for a shell."""
    return shlex.join(deepspeed_command(prepare(config), num_gpus, hostfile))


def _check_resumable(old: RunConfig, new: RunConfig) -> None:
    """A run resumes only with the settings that shape its data stream, its optimizer state
    and its checkpoint's files (ZeRO-3 partitions the weights, ZeRO-2 does not)."""
    fixed = (
        "seed",
        "optim.micro_batch",
        "optim.grad_accum",
        "lora.r",
        "weights.arch",
        "zero.stage",
    )
    for name in fixed:
        a, b = _get(old, name), _get(new, name)
        if a != b:
            raise VsmKitError(
                f"{name}: the run in {new.output_dir} has checkpoints made with {a}, not {b}; "
                "use another output_dir or restore the setting"
            )


def _get(cfg: RunConfig, dotted: str):
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


class TrainingRun:
    """A run folder and, when this process started it, its launcher process."""

    def __init__(self, run_dir: str | Path, process: subprocess.Popen | None = None):
        self.output_dir = Path(run_dir)
        self.process = process

    @classmethod
    def start(
        cls, config: RunConfig, num_gpus: int | None = None, hostfile: str | None = None
    ) -> TrainingRun:
        run_dir = prepare(config)
        (run_dir / STATUS).unlink(missing_ok=True)
        log = open(run_dir / LOG, "ab")
        process = subprocess.Popen(
            deepspeed_command(run_dir, num_gpus, hostfile),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() ends the launcher and every rank together
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return cls(run_dir, process)

    @classmethod
    def attach(cls, run_dir: str | Path) -> TrainingRun:
        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").exists():
            raise VsmKitError(f"{run_dir} holds no run (no config.yaml); start one first")
        return cls(run_dir)

    @property
    def config(self) -> RunConfig:
        return RunConfig.load(self.output_dir / "config.yaml")

    def _status_file(self) -> dict:
        try:
            return json.loads((self.output_dir / STATUS).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    @property
    def status(self) -> str:
        """ "starting", "running", "finished", "failed" or "stopped"."""
        state = self._status_file().get("state")
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return state if state in ("running", "failed") else "starting"
            if code < 0 or code == 128 + signal.SIGTERM:
                return "stopped"
            if state in ("finished", "failed"):
                return state
            return "finished" if code == 0 else "failed"
        if state == "running" and not _alive(self._status_file().get("pid")):
            return "stopped"
        return state or "starting"

    @property
    def error(self) -> str | None:
        return self._status_file().get("error")

    @property
    def step(self) -> int:
        return self._status_file().get("step") or 0

    def history(self) -> list[dict]:
        """Every record of `metrics.jsonl` so far (steps, validations, events)."""
        path = self.output_dir / METRICS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def log_tail(self, lines: int = 20) -> str:
        path = self.output_dir / LOG
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def stop(self, timeout: float = 30.0) -> None:
        """End the launcher and its ranks (SIGTERM to the process group, then SIGKILL)."""
        if self.process is None:
            pid = self._status_file().get("pid")
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
            return
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends; returns its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status in ("starting", "running"):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"run {self.output_dir} still {self.status} after {timeout}s")
            time.sleep(0.5)
        return self.status

    def follow(
        self, on_update: Callable[[list[dict]], None] | None = None, poll: float = 1.0
    ) -> str:
        """A progress bar over optimizer steps until the run ends; `on_update(history)` is
        called whenever new records arrive (e.g. to redraw a loss plot)."""
        seen = -1
        total = self._status_file().get("total") or self.config.total_steps
        with tqdm(total=total, desc=self.output_dir.name, unit="step") as bar:
            while True:
                status = self.status
                records = self.history()
                if len(records) != seen:
                    seen = len(records)
                    steps = [r for r in records if r["kind"] == "step"]
                    if steps:
                        bar.n = steps[-1]["step"]
                        bar.set_postfix(
                            loss=f"{steps[-1]['loss']:.4f}", lr=f"{steps[-1]['lr']:.2g}"
                        )
                        bar.refresh()
                    if on_update is not None:
                        on_update(records)
                if status not in ("starting", "running"):
                    bar.set_description(f"{self.output_dir.name}: {status}")
                    return status
                time.sleep(poll)


def remove_run(folder: str | Path) -> bool:
    """Delete the run in `folder`, so that the next launch into it trains from step 0 (a launch
    into a run's folder resumes it). Refuses a folder holding no run and a run still going.
    Returns whether there was a run to remove."""
    folder = Path(folder)
    if not folder.exists():
        return False
    if not (folder / "config.yaml").exists():
        raise VsmKitError(f"{folder} holds no run (no config.yaml): not removing it")
    try:
        status = json.loads((folder / STATUS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        status = {}
    if status.get("state") in ("starting", "running") and _alive(status.get("pid")):
        raise VsmKitError(
            f"the run in {folder} is still going (pid {status['pid']}): stop it first"
        )
    shutil.rmtree(folder)
    return True


def _alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _gpu_count() -> int:
    """GPUs of this machine, counted without creating a CUDA context in this process."""
    import torch

    return torch.cuda.device_count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
