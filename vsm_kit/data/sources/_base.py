"""The reader interface every source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from ...errors import AnnotationError, MissingDataError, VsmKitError
from ..images import link_problem
from ..records import BoxTable, Record
from ._checks import SHAPE_ERRORS, Sections, find_bad


class Source(Sequence[Record], ABC):
    """A sequence of `Record`s read from one dataset of the data tree.

    Annotation files are parsed once, when the reader is built (and shared between readers of
    the same file); records are assembled on access and masks decoded only when asked for.
    """

    name: ClassVar[str]
    group: ClassVar[str]  # the original tool's --dataset name this source belongs to
    # (file, fix, sections) of the annotations records are built from: a record that fails is
    # reported as the first bad element found there
    _diagnosis: tuple[tuple[Path, str, Sections], ...] = ()

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise MissingDataError(
                self.data_dir,
                "dataset folder",
                "pass the folder that holds coco2017/, refer_seg/, … (or build one with "
                "`vsm-kit demo-world --out DIR` and use DIR/dataset)",
            )

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _record(self, i: int) -> Record: ...

    @abstractmethod
    def _texts(self, i: int) -> list[str]:
        """Target texts of record i, without decoding anything heavy (for `find`)."""

    @abstractmethod
    def box_table(self) -> BoxTable: ...

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} records")
        try:
            return self._record(i % n)
        except VsmKitError:
            raise
        except SHAPE_ERRORS as err:
            raise self._record_error(i % n, err) from None

    def _record_error(self, i: int, err: Exception) -> VsmKitError:
        """The error for record i, whose annotations are not what the release holds: the first
        bad element of `_diagnosis`, else one naming the files and the record."""
        for path, fix, sections in self._diagnosis:
            if (bad := find_bad(path, fix, sections)) is not None:
                return bad
        files = ", ".join(str(d[0]) for d in self._diagnosis) or str(self.data_dir)
        fix = self._diagnosis[0][1] if self._diagnosis else "check it with `vsm-kit check`"
        return AnnotationError(
            files, f"record {i} of {self.name}: unexpected content ({err!r})", fix
        )

    def find(self, query: str) -> list[int]:
        """Indices of records with a target text (or caption) containing `query`, any case."""
        q = query.strip().lower()
        if not q:
            return list(range(len(self)))
        hits = []
        for i in range(len(self)):
            try:
                texts = self._texts(i)
            except SHAPE_ERRORS as err:
                raise self._record_error(i, err) from None
            if any(q in t.lower() for t in texts):
                hits.append(i)
        return hits

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self)} records from {self.data_dir}>"


def require(path: Path, what: str, fix: str) -> Path:
    """`path` if it exists, else a `MissingDataError` that says where it comes from (a link
    loop or a dangling link is named as such)."""
    try:
        path.stat()
    except OSError as err:
        if reason := link_problem(path, err):
            raise AnnotationError(path, reason, fix) from None
        raise MissingDataError(path, what, fix) from None
    return path
