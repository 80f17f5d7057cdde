"""Starting, following, stopping and reattaching to training runs.

`TrainingRun.start(config)` validates the config, writes it (resolved: absolute folders) to
`output_dir/config.yaml` and starts the `deepspeed` launcher in the background; the engine's
`metrics.jsonl`, `status.json` and `failures/` are what `follow()` and `attach()` read, so a
notebook can reconnect to a run it did not start, running or finished.

A launch into a folder whose run has a checkpoint resumes it, so it must build the same model
and draw the same data stream: every field must equal the saved `config.yaml`'s except those in
`RESUMABLE`, which only say how far, how often and where (checked before anything is written).
"""

from __future__ import annotations

import json
import numbers
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..data.layout import check_layout
from ..errors import VsmKitError
from . import shm
from .config import RunConfig
from .runlog import (
    FAILED,
    FINISHED,
    LIVE,
    METRICS,
    RUNNING,
    STARTING,
    STATUS,
    STOPPED,
    clear_failures,
    first_failure,
)

LOG = "train.log"
# the fields a resumed run may change (a dotted name or the section it starts): where the run
# and its data live, how far it goes, how often it logs/validates/checkpoints, how it loads and
# whether it recomputes activations. Everything else shapes the checkpoint (model, LoRA,
# precision, ZeRO layout, optimizer and schedule state), the data stream (seed, mix, batch
# shape, tokenization) or what "best" compares (loss, validation set), and is fixed.
RESUMABLE = (
    "output_dir",
    "max_steps",
    "gradient_checkpointing",
    "data.data_dir",
    "data.workers",
    "cadence.",
)


def deepspeed_command(
    run_dir: Path,
    num_gpus: int | None = None,
    hostfile: str | None = None,
    port: int | None = None,
) -> list[str]:
    """The launcher command line: one node with `num_gpus` ranks (default: every GPU of this
    machine; CPU ranks, 1 by default, on a machine without GPUs), or the nodes of a DeepSpeed
    `hostfile`; rank 0 listens on `port` (default: a free one)."""
    _check_ranks(num_gpus)
    cmd = [sys.executable, "-u", "-m", "deepspeed.launcher.runner"]
    if hostfile:
        cmd += ["--hostfile", str(hostfile)]
    else:
        ranks = num_gpus if num_gpus is not None else _gpu_count() or 1
        cmd += ["--num_gpus", str(ranks), "--master_addr", "127.0.0.1"]
    cmd += ["--master_port", str(port or _free_port()), "--module", "vsm_kit.train.engine"]
    return cmd + ["--run-dir", str(run_dir)]


def prepare(config: RunConfig) -> Path:
    """Validate (config, data tree and, for a run with a checkpoint, that the config resumes
    it), then resolve and write the run's `config.yaml`; returns the run folder. Everything
    that can be wrong before training is reported here, not an hour in, and nothing is written
    before every check has passed."""
    config = config.resolved().validate()
    report = check_layout(config.data.data_dir, groups=list(config.data.mix), verify_images=0)
    if not report.ok:
        raise VsmKitError(f"data.data_dir: the data tree is incomplete\n\n{report}")
    run_dir = Path(config.output_dir)
    saved = run_dir / "config.yaml"
    if _has_checkpoint(run_dir / "checkpoints"):
        _check_resumable(_saved_config(saved), config)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.save(saved)
    return run_dir


def dry_run(config: RunConfig, num_gpus: int | None = None, hostfile: str | None = None) -> str:
    """Everything `TrainingRun.start` does but launching: validate, write the run's
    `config.yaml`; returns the launcher command line it would run, quoted for a shell."""
    _check_ranks(num_gpus)
    return shlex.join(deepspeed_command(prepare(config), num_gpus, hostfile))


def _check_ranks(num_gpus) -> None:
    """The rank count: None (the launcher's default) or a positive whole number."""
    if num_gpus is not None and (
        isinstance(num_gpus, bool) or not isinstance(num_gpus, numbers.Integral) or num_gpus < 1
    ):
        raise VsmKitError(
            f"num_gpus: {num_gpus!r} is not a rank count; Fix: give 1 or more, or leave it "
            "out (None: every GPU of this machine, 1 rank on CPU)"
        )


def _has_checkpoint(folder: Path) -> bool:
    """Whether a launch into this run would resume from a checkpoint (as the engine decides)."""
    if not folder.is_dir():
        return False
    from .checkpoints import Checkpoints

    return Checkpoints(folder).last is not None


def _saved_config(path: Path) -> RunConfig:
    """The config the run's checkpoints were made with."""
    fix = "restore it from a copy of the run, or use another output_dir for a fresh run"
    if not path.exists():
        raise VsmKitError(
            f"{path} is missing, yet {path.parent / 'checkpoints'} holds checkpoints: a relaunch "
            f"cannot be checked against them; Fix: {fix}"
        )
    try:
        return RunConfig.load(path)
    except VsmKitError as err:
        raise VsmKitError(
            f"{path} (the config the run's checkpoints were made with) cannot be read: {err}; "
            f"Fix: {fix}"
        ) from None


def _check_resumable(old: RunConfig, new: RunConfig) -> None:
    """Refuse a relaunch that changes any field outside `RESUMABLE`, naming the first."""
    before, after = _flat(old.to_dict()), _flat(new.to_dict())
    for name in [*before, *(k for k in after if k not in before)]:
        if name.startswith(RESUMABLE):
            continue
        a, b = before.get(name, "(absent)"), after.get(name, "(absent)")
        if a != b:
            raise VsmKitError(
                f"{name}: the run in {new.output_dir} has checkpoints made with {a!r}, not "
                f"{b!r}; Fix: restore {name} to {a!r} to resume the run, or use another "
                "output_dir for a fresh run"
            )


def _flat(d: dict, prefix: str = "") -> dict:
    """{dotted field name: value} of a config's nested dict (lists are values)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class TrainingRun:
    """A run folder and, when this process started it, its launcher process (and the port
    that names the run's shared-memory buffers, freed once it has ended)."""

    def __init__(
        self, run_dir: str | Path, process: subprocess.Popen | None = None, port: int | None = None
    ):
        self.output_dir = Path(run_dir)
        self.process = process
        self.port = port
        self._reaped = process is None

    @classmethod
    def start(
        cls, config: RunConfig, num_gpus: int | None = None, hostfile: str | None = None
    ) -> TrainingRun:
        _check_ranks(num_gpus)
        run_dir = prepare(config)
        (run_dir / STATUS).unlink(missing_ok=True)
        clear_failures(run_dir)
        log = open(run_dir / LOG, "ab")
        for path, size in shm.sweep_stale():
            message = (
                f"removed {path} ({size / 2**20:.0f} MB of shared memory), left by a training "
                "run killed before it could free it"
            )
            log.write(f"[vsm-kit] {message}\n".encode())
            warnings.warn(message, shm.StaleBufferWarning, stacklevel=2)
        log.flush()
        port = _free_port()
        process = subprocess.Popen(
            deepspeed_command(run_dir, num_gpus, hostfile, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() ends the launcher and every rank together
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return cls(run_dir, process, port)

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
        """STARTING, RUNNING, FINISHED, FAILED (as soon as any rank has failed) or STOPPED (the
        states of `runlog`)."""
        state = self._status_file().get("state")
        if first_failure(self.output_dir):
            state = FAILED
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return state if state in (RUNNING, FAILED) else STARTING
            self._reap()
            if code < 0 or code == 128 + signal.SIGTERM:
                return STOPPED
            if state in (FINISHED, FAILED):
                return state
            return FINISHED if code == 0 else FAILED
        if state == RUNNING and not _alive(self._status_file().get("pid")):
            return STOPPED
        return state or STARTING

    @property
    def error(self) -> str | None:
        """The first failing rank's error (earliest; the others' are mostly lost connections
        to it), with its rank, host and the file:line it was raised at."""
        return first_failure(self.output_dir) or self._status_file().get("error")

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
        self._reap()

    def _reap(self) -> None:
        """Once the launcher has ended: free the buffers of ranks that ended before freeing
        their own (stopped or failed while starting). The ranks may outlive the launcher by a
        moment; a buffer still in use is left to the next launch's sweep."""
        if not self._reaped:
            self._reaped = True
            shm.sweep_stale(shm.run_buffers(self.port))

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends; returns its final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.status in LIVE:
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
                if status not in LIVE:
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
    if status.get("state") in LIVE and _alive(status.get("pid")):
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
