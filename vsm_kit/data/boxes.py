"""Box conventions, named at every boundary.

- `xywh_px`: (x_min, y_min, width, height) in pixels — the annotation files' format.
- `xyxy_px`: (x_min, y_min, x_max, y_max) in pixels — our records and drawings.
- `cxcywh_norm`: (center_x, center_y, width, height) / (W, H, W, H) — the model's targets.
All functions take and return float arrays of shape [k, 4].
"""

from __future__ import annotations

import numpy as np


def xywh_to_xyxy(boxes_xywh_px) -> np.ndarray:
    b = np.asarray(boxes_xywh_px, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def xyxy_to_xywh(boxes_xyxy_px) -> np.ndarray:
    b = np.asarray(boxes_xyxy_px, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def clamp_xyxy(boxes_xyxy_px, width: int, height: int) -> np.ndarray:
    """Clip x to [0, width] and y to [0, height]."""
    b = np.asarray(boxes_xyxy_px, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 0::2] = b[:, 0::2].clip(0, width)
    b[:, 1::2] = b[:, 1::2].clip(0, height)
    return b


def nonempty(boxes_xyxy_px) -> np.ndarray:
    """Boolean [k]: boxes with positive width and height."""
    b = np.asarray(boxes_xyxy_px, dtype=np.float32).reshape(-1, 4)
    return (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])


def xyxy_to_cxcywh_norm(boxes_xyxy_px, width: int, height: int) -> np.ndarray:
    b = np.asarray(boxes_xyxy_px, dtype=np.float32).reshape(-1, 4)
    c = np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)
    return c / np.array([width, height, width, height], dtype=np.float32)


def training_targets(boxes_xywh_px, width: int, height: int) -> np.ndarray:
    """The original tool's box pipeline: xywh → xyxy → clamp → drop empty → cxcywh_norm."""
    b = clamp_xyxy(xywh_to_xyxy(boxes_xywh_px), width, height)
    return xyxy_to_cxcywh_norm(b[nonempty(b)], width, height)
