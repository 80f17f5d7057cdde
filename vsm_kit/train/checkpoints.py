"""Best and last DeepSpeed checkpoints of a run, replaced without a window of loss.

`DIR/latest` names the last complete checkpoint (DeepSpeed's own pointer file, so its tools and
`zero_to_fp32` find it) and `DIR/best.json` the best one. A new checkpoint is written to its own
`global_stepN/` folder first; the pointers move only after every rank has finished writing, and
only then are folders no pointer names deleted. A crash at any moment leaves a usable pointer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch.distributed as dist

from ..fsutil import atomic_write


class Checkpoints:
    def __init__(self, folder: Path, rank: int = 0):
        self.dir = Path(folder)
        self.rank = rank
        if rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> str | None:
        """The tag of the last complete checkpoint, or None."""
        pointer = self.dir / "latest"
        if not pointer.exists():
            return None
        tag = pointer.read_text().strip()
        return tag if (self.dir / tag).is_dir() else None

    @property
    def best(self) -> dict | None:
        """{"tag", "step", "metrics"} of the best checkpoint, or None."""
        path = self.dir / "best.json"
        return json.loads(path.read_text()) if path.exists() else None

    def commit(self, tag: str, best: bool, metrics: dict | None = None) -> None:
        """Point `latest` (and `best.json` when `best`) at `tag`, which every rank has just
        saved; then delete the checkpoints neither pointer names."""
        _barrier()
        if self.rank == 0:
            if best:
                step = int(tag.removeprefix("global_step"))
                record = {"tag": tag, "step": step, "metrics": metrics}
                with atomic_write(self.dir / "best.json") as f:
                    f.write(json.dumps(record, indent=1).encode())
            with atomic_write(self.dir / "latest") as f:
                f.write(tag.encode())
            keep = {tag, (self.best or {}).get("tag")}
            for old in self.dir.glob("global_step*"):
                if old.is_dir() and old.name not in keep:
                    shutil.rmtree(old)
        _barrier()


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
