"""What the demo generator drew, kept in memory so tests can compare readers against it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TruthTarget:
    text: str
    boxes_xyxy: np.ndarray  # float32 [k, 4], pixels
    mask: np.ndarray | None = None  # bool [H, W] when the source has masks


@dataclass
class TruthRecord:
    image: str  # path relative to the dataset root
    targets: list[TruthTarget] = field(default_factory=list)
    caption: str | None = None
    conversations: list[dict] | None = None


Truth = dict[str, list[TruthRecord]]


def xywh_rows(boxes) -> np.ndarray:
    """[k, 4] xyxy float32 from xywh lists (computed in float32, as the readers do)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
