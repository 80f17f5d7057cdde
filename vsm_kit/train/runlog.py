"""What a run reports while it trains (rank 0 writes, anyone reads).

- `metrics.jsonl`: one JSON object per line, `{"kind": "step" | "val" | <event>, ...}`; a step
  whose ranks skipped unreadable images counts them (`skipped_images`), and an event of that
  kind names them;
- `status.json`: `{"state", "step", "total", "pid", "error"}`, replaced atomically;
- `tensorboard/`: scalars under the original code's names (`train/loss`, `val/det_acc`, …);
- `failures/rank_R.json`: written by every rank that fails (`{"time", "rank", "host", "type",
  "message", "where"}`); the earliest is the run's error, since a rank's crash makes the others
  fail too, with nothing but a lost connection to say.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import traceback
from pathlib import Path

from ..fsutil import atomic_write

# a run's states, as `status.json` and `TrainingRun.status` give them
STARTING, RUNNING, FINISHED, FAILED, STOPPED = (
    "starting",
    "running",
    "finished",
    "failed",
    "stopped",
)
LIVE = (STARTING, RUNNING)  # states of a run that has not ended

# our loss keys → the original's TensorBoard names
TB_NAMES = {
    "loss": "train/loss",
    "ce_loss": "train/ce_loss",
    "mask_bce_loss": "train/mask_bce_loss",
    "mask_dice_loss": "train/mask_dice_loss",
    "mask_loss": "train/mask_loss",
    "detection_loss": "train/detection_loss",
    "detection_loss_ce": "train/detection_ce_loss",
    "detection_loss_bbox": "train/detection_bbox_loss",
    "detection_loss_giou": "train/detection_giou_loss",
}
METRICS, STATUS, TENSORBOARD = "metrics.jsonl", "status.json", "tensorboard"
FAILURES = "failures"


class RunLog:
    def __init__(self, run_dir: Path, rank: int, total: int):
        self.dir, self.rank, self.total = Path(run_dir), rank, total
        self.tb = None
        if rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(self.dir / TENSORBOARD))
            self._status(RUNNING, step=None)

    def _write(self, record: dict) -> None:
        if self.rank != 0:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _status(self, state: str, step: int | None, error: str | None = None) -> None:
        status = {"state": state, "step": step, "total": self.total, "pid": os.getpid()}
        if error:
            status["error"] = error
        with atomic_write(self.dir / STATUS) as f:
            f.write(json.dumps(status).encode())

    def event(self, kind: str, **fields) -> None:
        self._write({"kind": kind, **fields})
        if self.rank == 0:
            print(f"[{kind}] " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)

    def step(
        self,
        step: int,
        losses: dict,
        lr: float,
        secs: float,
        data_secs: float,
        batch: str,
        skipped_images: int = 0,
    ):
        """One optimizer step's record; `skipped_images`: unreadable images re-drawn over in
        it, all ranks together (their paths are in the step's `skipped_images` event)."""
        record = {
            "kind": "step",
            "step": step,
            "lr": lr,
            "secs": secs,
            "data_secs": data_secs,
            "batch": batch,
            "skipped_images": skipped_images,
            **losses,
        }
        self._write(record)
        if self.rank != 0:
            return
        for k, v in losses.items():
            self.tb.add_scalar(TB_NAMES[k], v, step)
        self.tb.add_scalar("train/lr", lr, step)
        self.tb.add_scalar("metrics/total_secs_per_batch", secs, step)
        self.tb.add_scalar("metrics/data_secs_per_batch", data_secs, step)
        self.tb.add_scalar("metrics/skipped_images", skipped_images, step)
        self._status(RUNNING, step)
        print(
            f"step {step}/{self.total}  loss {losses['loss']:.4f}  lr {lr:.3g}  {secs:.2f}s",
            flush=True,
        )

    def validation(self, step: int, metrics: dict) -> None:
        self._write({"kind": "val", "step": step, **metrics})
        if self.rank == 0:
            for k, v in metrics.items():
                self.tb.add_scalar(f"val/{k}", v, step)
            print("validation " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)

    def finish(self) -> None:
        if self.rank == 0:
            self.tb.close()
            self._status(FINISHED, self.total)

    @staticmethod
    def fail(run_dir: Path, err: BaseException) -> None:
        """Record this rank's failure; rank 0 also marks the run failed with the first
        failing rank's error, so a notebook following the run can show it."""
        run_dir, rank = Path(run_dir), int(os.environ.get("RANK", 0))
        frames = traceback.extract_tb(err.__traceback__)
        record = {
            "time": time.time(),
            "rank": rank,
            "host": socket.gethostname(),
            "type": type(err).__name__,
            "message": str(err),
            "where": f"{frames[-1].filename}:{frames[-1].lineno}" if frames else None,
        }
        with atomic_write(run_dir / FAILURES / f"rank_{rank}.json") as f:
            f.write(json.dumps(record).encode())
        if rank != 0:
            return
        status = {"state": FAILED, "error": first_failure(run_dir), "pid": os.getpid()}
        with atomic_write(run_dir / STATUS) as f:
            f.write(json.dumps(status).encode())


def first_failure(run_dir: Path) -> str | None:
    """The earliest recorded rank failure of the run, as one line; None if no rank failed."""
    records = [json.loads(p.read_text()) for p in Path(run_dir, FAILURES).glob("rank_*.json")]
    if not records:
        return None
    first = min(records, key=lambda r: r["time"])
    where = f" (at {first['where']})" if first["where"] else ""
    message = f": {first['message']}" if first["message"] else ""
    return f"rank {first['rank']} on {first['host']}: {first['type']}{message}{where}"


def clear_failures(run_dir: Path) -> None:
    """Forget the failures of a previous launch (a relaunch starts with none)."""
    folder = Path(run_dir) / FAILURES
    if folder.exists():
        shutil.rmtree(folder)


def skipped_images(history: list[dict]) -> list[str]:
    """The unreadable images a run skipped, in step order (a step logged again after a resume
    counts once)."""
    by_step = {r["step"]: r["paths"] for r in history if r.get("kind") == "skipped_images"}
    return [path for step in sorted(by_step) for path in by_step[step]]
