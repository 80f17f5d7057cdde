"""Typed records every source reader returns: one image, its targets, boxes in `xyxy_px`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import load_rgb


@dataclass(frozen=True)
class Target:
    """One thing to find in the image: a class name, referring expression or caption phrase.

    `boxes_xyxy`: float32 [k, 4], pixels, exactly as annotated (not clamped: a box may reach outside
    the image or be empty; the training pipeline clamps and drops, see `boxes.training_targets`).
    The mask, when the source has one, is decoded only when `mask()` is called.
    """

    text: str
    boxes_xyxy: np.ndarray
    category_id: int | None = None
    mask_fn: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def has_mask(self) -> bool:
        return self.mask_fn is not None

    def mask(self) -> np.ndarray | None:
        """bool [H, W] or None when the source has no masks."""
        return None if self.mask_fn is None else self.mask_fn()


@dataclass(frozen=True)
class Record:
    """One image of a source. `height`/`width` are the stored pixel grid's size."""

    source: str
    index: int
    image_path: Path
    height: int
    width: int
    targets: tuple[Target, ...] = ()
    image_id: int | str | None = None
    caption: str | None = None
    conversations: tuple[dict, ...] = ()

    def load_image(self) -> np.ndarray:
        """uint8 [H, W, 3]; raises `CorruptImageError` / `MissingDataError`."""
        return load_rgb(self.image_path)

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.targets]


@dataclass(frozen=True)
class BoxTable:
    """Every box of a source in flat arrays (for statistics without building records).

    `record`: int32 [N] record index; `label`: int32 [N] index into `labels`;
    `boxes_xyxy`: float32 [N, 4] pixels; `image_size`: int32 [N, 2] (height, width) or None.
    """

    record: np.ndarray
    label: np.ndarray
    boxes_xyxy: np.ndarray
    labels: tuple[str, ...]
    image_size: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.record)


class Grouping:
    """Rows (annotations, sentences) grouped by an integer key (their record), stably.

    `rows(g)` lists the row indices of group g in their original order; `owner()` gives each
    row's group. Built with one argsort, so millions of rows group in well under a second."""

    def __init__(self, keys: np.ndarray, n_groups: int):
        keys = np.asarray(keys, dtype=np.int64)
        self._order = np.argsort(keys, kind="stable")
        self._offsets = np.searchsorted(keys[self._order], np.arange(n_groups + 1), side="left")
        self._n_rows = keys.size

    def rows(self, g: int) -> np.ndarray:
        return self._order[self._offsets[g] : self._offsets[g + 1]]

    def owner(self) -> np.ndarray:
        """int32 [rows]: the group of each row (-1 for rows whose key is outside the groups)."""
        out = np.full(self._n_rows, -1, np.int32)
        inside = self._order[self._offsets[0] : self._offsets[-1]]
        out[inside] = np.repeat(np.arange(len(self._offsets) - 1), np.diff(self._offsets))
        return out
