"""The reader interface every source implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from ...errors import MissingDataError
from ..boxes import xywh_to_xyxy
from ..records import BoxTable, Record


class Source(Sequence[Record], ABC):
    """A sequence of `Record`s read from one dataset of the data tree.

    Annotation files are parsed once, when the reader is built (and shared between readers of
    the same file); records are assembled on access and masks decoded only when asked for.
    """

    name: ClassVar[str]
    group: ClassVar[str]  # the original tool's --dataset name this source belongs to

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
        return self._record(i % n)

    def find(self, query: str) -> list[int]:
        """Indices of records with a target text (or caption) containing `query`, any case."""
        q = query.strip().lower()
        if not q:
            return list(range(len(self)))
        return [i for i in range(len(self)) if any(q in t.lower() for t in self._texts(i))]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {len(self)} records from {self.data_dir}>"


def require(path: Path, what: str, fix: str) -> Path:
    """`path` if it exists, else a `MissingDataError` that says where it comes from."""
    if not path.exists():
        raise MissingDataError(path, what, fix)
    return path


def ann_arrays(annotations: list[dict], image_row: dict) -> tuple[np.ndarray, ...]:
    """(image row, category id, xyxy box) arrays for COCO-style annotations.

    `image_row` maps image id → record row; annotations whose image is not a record get row -1.
    """
    n = len(annotations)
    rows = np.fromiter((image_row.get(a["image_id"], -1) for a in annotations), np.int64, n)
    cats = np.fromiter((a["category_id"] for a in annotations), np.int64, n)
    return rows, cats, xywh_to_xyxy([a["bbox"] for a in annotations])
