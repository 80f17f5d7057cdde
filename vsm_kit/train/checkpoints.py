"""Best and last DeepSpeed checkpoints of a run, replaced without a window of loss.

`DIR/latest` names the last complete checkpoint (DeepSpeed's own pointer file, so its tools and
`zero_to_fp32` find it) and `DIR/best.json` the best one. A new checkpoint is written to its own
`global_stepN/` folder first, DeepSpeed's shards and then one `rank_state_R.pt` per rank (RNG
states, sampler position, world size and micro-batch: what an exact resume needs). The pointers
move only after every rank has finished writing (best first, then latest), and only then are
folders no pointer names deleted. A kill at any moment therefore leaves pointers that name
complete folders:

- during a save (folder there, `latest` not moved) or in the middle of a shard: the previous
  checkpoint is still `last`; the partial folder is an orphan, deleted by `prune` on relaunch;
- between recording the best and moving `latest`: `best` is the new, `last` the previous one;
- while deleting old folders: both pointers already name the new folders, which are kept.

If `latest` is lost or names a missing folder, `last` falls back to the best checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import VsmKitError
from ..fsutil import atomic_write

RANK_STATE = "rank_state_{}.pt"


class CheckpointError(VsmKitError):
    """A checkpoint cannot be resumed from; the message says why and what to do."""


class Checkpoints:
    def __init__(self, folder: Path, rank: int = 0):
        self.dir = Path(folder)
        self.rank = rank
        if rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def last(self) -> str | None:
        """The tag of the last complete checkpoint (the best one if `latest` is unusable)."""
        pointer = self.dir / "latest"
        tag = pointer.read_text().strip() if pointer.exists() else None
        if tag and (self.dir / tag).is_dir():
            return tag
        best = (self.best or {}).get("tag")
        return best if best and (self.dir / best).is_dir() else None

    @property
    def best(self) -> dict | None:
        """{"tag", "step", "metrics"} of the best checkpoint, or None."""
        path = self.dir / "best.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save_rank_state(self, tag: str, state: dict) -> None:
        """Write this rank's resume state into `tag` (atomically; before `commit`)."""
        with atomic_write(self.dir / tag / RANK_STATE.format(self.rank)) as f:
            torch.save(state, f)

    def rank_state(self, tag: str, rank: int | None = None) -> dict:
        """The resume state rank `rank` (default: this one) saved in `tag`."""
        rank = self.rank if rank is None else rank
        path = self.dir / tag / RANK_STATE.format(rank)
        if not path.exists():
            raise CheckpointError(
                f"{path} is missing: {tag} holds no resume state for rank {rank} (written by "
                "an older vsm_kit or with fewer ranks); start a fresh run in another output_dir"
            )
        return torch.load(path, map_location="cpu", weights_only=True)

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
            self.prune()
        _barrier()

    def prune(self) -> list[str]:
        """Delete the checkpoint folders no pointer names (left by a crash); returns their tags.
        Rank 0 only, and never while a save is in progress."""
        keep = {self.last, (self.best or {}).get("tag")}
        removed = sorted(
            p.name for p in self.dir.glob("global_step*") if p.is_dir() and p.name not in keep
        )
        for name in removed:
            shutil.rmtree(self.dir / name)
        return removed


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
