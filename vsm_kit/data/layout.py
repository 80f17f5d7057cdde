"""A check that reports what is there of the data tree the original tool expects (`tree.PATHS`).

Every entry says where the piece comes from and what uses it, so a problem in the report reads
as a to-do item. Files written by `vsm-kit preprocess` are listed but never fail the check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadArgumentError
from . import tree
from .images import link_problem, verify_image
from .sources import GROUPS
from .tree import Entry

GROUP_NAMES = tuple(GROUPS)  # the original tool's --dataset names, in its order


OK, MISSING, EMPTY, UNREADABLE, CORRUPT, NOT_BUILT, BAD_LINK = (
    "ok",
    "missing",
    "empty",
    "unreadable",
    "corrupt",
    "not built",
    "bad link",
)


@dataclass(frozen=True)
class Row:
    entry: Entry
    status: str
    count: int | None = None  # files in a folder, bytes for a file
    bad_files: tuple[str, ...] = ()

    @property
    def problem(self) -> bool:
        return self.status not in (OK, NOT_BUILT)


@dataclass
class LayoutReport:
    """Result of `check_layout`; `str(report)` is the table `vsm-kit check` prints."""

    data_dir: Path
    groups: tuple[str, ...]
    rows: list[Row] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[Row]:
        return [r for r in self.rows if r.problem]

    def __str__(self) -> str:
        return self.format()

    def format(self, root: str | None = None, built: bool = True) -> str:
        """The report as text; `root` replaces the data folder's path (for stable output);
        `built=False` leaves out the files `vsm-kit preprocess` writes."""
        root = root or str(self.data_dir)
        rows = [r for r in self.rows if built or not r.entry.built]
        width = max(len(r.entry.path) for r in rows) + 2
        lines = [f"Dataset layout under {root}", ""]
        lines.append(f"{'path':<{width}}{'status':<12}{'count':>10}  used by")
        for r in rows:
            count = (
                ""
                if r.count is None
                else (f"{r.count} files" if r.entry.folder else _size(r.count))
            )
            lines.append(f"{r.entry.path:<{width}}{r.status:<12}{count:>10}  {r.entry.used_by}")
        pending = [r for r in rows if r.status == NOT_BUILT]
        if pending:
            lines += ["", "To build (not a problem): " + ", ".join(r.entry.path for r in pending)]
            lines.append("  run `vsm-kit preprocess --data-dir DATA_DIR`")
        if self.problems:
            lines += ["", f"{len(self.problems)} problem(s):"]
            for r in self.problems:
                lines.append(f"- {r.status}: {root}/{r.entry.path}")
                for name in r.bad_files[:5]:
                    lines.append(f"    {name}")
                lines.append(f"    comes from: {r.entry.origin}")
                lines.append(f"    needed for: {r.entry.used_by}")
        else:
            lines += ["", f"All required paths for {', '.join(self.groups)} are present."]
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def check_layout(
    data_dir: str | Path, groups=GROUP_NAMES, verify_images: int | None = 20
) -> LayoutReport:
    """Report every path the selected dataset groups need.

    `verify_images`: how many images per folder to decode fully (None = all of them); corrupt
    ones are listed and make the folder's status `corrupt`.
    """
    data_dir = Path(data_dir)
    groups = tuple(groups)
    unknown = set(groups) - set(GROUP_NAMES)
    if unknown:
        raise BadArgumentError(
            f"unknown dataset group(s) {sorted(unknown)}; choose from {', '.join(GROUP_NAMES)}"
        )
    report = LayoutReport(data_dir, groups)
    for entry in tree.PATHS.values():
        if set(entry.groups) & set(groups):
            report.rows.append(_check(data_dir / entry.path, entry, verify_images))
    return report


def _check(path: Path, entry: Entry, verify_images: int | None) -> Row:
    try:
        path.stat()
    except OSError as err:
        if reason := link_problem(path, err):
            return Row(entry, BAD_LINK, bad_files=(f"{path.name}: {reason}",))
        return Row(entry, NOT_BUILT if entry.built else MISSING)
    if not entry.folder:
        size = path.stat().st_size
        if size == 0:
            return Row(entry, EMPTY, 0)
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError:
            return Row(entry, UNREADABLE, size)
        return Row(entry, OK, size)
    links: list[str] = []
    try:
        files = sorted(_list(path, entry.suffix, entry.recursive, links, set()))
    except OSError:
        return Row(entry, UNREADABLE)
    links = [f"{os.path.relpath(f, path)}: {why}" for f, why in sorted(links)]
    if not files:
        return Row(entry, BAD_LINK if links else EMPTY, 0, tuple(links))
    sample = files if verify_images is None else files[:verify_images]
    bad = tuple(f"{os.path.relpath(f, path)}: {why}" for f in sample if (why := verify_image(f)))
    status = CORRUPT if bad else BAD_LINK if links else OK
    return Row(entry, status, len(files), (*links, *bad))


def _list(folder: Path, suffix: str, recursive: bool, links: list, seen: set):
    """Paths of the files ending with `suffix`; link loops, dangling links and links to a folder
    already walked go to `links` as (path, reason), and are not followed."""
    st = folder.stat()
    seen.add((st.st_dev, st.st_ino))
    for e in os.scandir(folder):
        try:
            is_dir = e.is_dir()
            st = os.stat(e.path) if e.is_symlink() else None
        except OSError as err:
            links.append((e.path, link_problem(Path(e.path), err) or str(err)))
            continue
        if is_dir and recursive:
            if st is not None and (st.st_dev, st.st_ino) in seen:
                links.append((e.path, "a symbolic link to a folder already listed (a loop)"))
                continue
            yield from _list(Path(e.path), suffix, recursive, links, seen)
        elif e.name.endswith(suffix):
            yield e.path
