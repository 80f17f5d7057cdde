"""DeepSpeed's shared-memory all-reduce buffers, freed by the run that made them.

On CPU, every rank of a one-machine run creates `/dev/shm/deepspeed_allreduce_buffer_UID_ADDR_
PORT_RANK` (~66 MB of RAM) in `deepspeed.init_distributed` and DeepSpeed never unlinks it, so
each run would leave `ranks` such files behind, finished or not. Once every rank has mapped
every buffer, the names are no longer needed: `release_rank_buffer` unlinks the rank's own, and
the memory goes back when the ranks exit, however they exit. A run killed before that point is
what `sweep_stale` is for: the next launch removes this user's buffers that no live process maps
or holds open.
"""

from __future__ import annotations

import os
from pathlib import Path

SHM = Path("/dev/shm")
PREFIX = "deepspeed_allreduce_buffer_"


class StaleBufferWarning(UserWarning):
    """A buffer that a killed run left in /dev/shm was removed."""


def buffer_path(rank: int, addr: str | None = None, port: str | None = None) -> Path:
    """Rank `rank`'s buffer for the run at `addr:port` (default: this process's MASTER_ADDR
    and MASTER_PORT, as DeepSpeed names it)."""
    addr = os.environ.get("MASTER_ADDR", "") if addr is None else addr
    port = os.environ.get("MASTER_PORT", "") if port is None else port
    return SHM / f"{PREFIX}{os.getuid()}_{addr}_{port}_{rank}"


def release_rank_buffer(rank: int) -> Path | None:
    """Unlink this rank's buffer; call after a barrier that follows `init_distributed` (every
    rank has then mapped it). Returns the path unlinked, None where there was none (GPU runs,
    runs over several machines)."""
    path = buffer_path(rank)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path


def run_buffers(port: int | str, addr: str = "127.0.0.1") -> list[Path]:
    """The buffers of the run that used `addr:port`, as they lie in /dev/shm now."""
    return sorted(SHM.glob(f"{PREFIX}{os.getuid()}_{addr}_{port}_*"))


def sweep_stale(paths: list[Path] | None = None) -> list[tuple[Path, int]]:
    """Remove `paths` (default: every buffer of this user) that no live process maps or holds
    open; returns the (path, size in bytes) removed. A buffer in use is never touched: its
    creator holds it open from the moment it exists."""
    if paths is None:
        paths = sorted(SHM.glob(f"{PREFIX}{os.getuid()}_*"))
    if not paths:
        return []
    used = _in_use()
    removed = []
    for path in paths:
        if str(path) in used:
            continue
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append((path, size))
    return removed


def _in_use() -> set[str]:
    """Every /dev/shm path that a process readable by this user maps or has open."""
    used = set()
    prefix = f"{SHM}/"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for line in (proc / "maps").read_text().splitlines():
                at = line.find(prefix)
                if at >= 0:
                    used.add(line[at:])
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(prefix):
                    used.add(target)
        except OSError:  # the process ended, or is another user's
            continue
    return used
