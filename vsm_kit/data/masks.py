"""Decoding COCO-style segmentations in every form the real releases use."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Binary mask (bool [height, width]) of one annotation's `segmentation`.

    Accepts polygon lists (one or several parts), a compressed RLE dict (`counts` str),
    an uncompressed RLE dict (`counts` list, used for crowds), a list of compressed RLE dicts
    (refCLEF), and empty values (→ all False). Parts are OR-ed: overlap never exceeds 1.
    """
    if not segmentation:
        return np.zeros((height, width), dtype=bool)
    if isinstance(segmentation, dict):
        rles = [_rle(segmentation, height, width)]
    elif isinstance(segmentation[0], dict):
        rles = [_rle(s, height, width) for s in segmentation]
    else:
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles, intersect=False)).astype(bool)


def _rle(seg: dict, height: int, width: int) -> dict:
    counts = seg["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(seg, height, width)
    if isinstance(counts, str):
        seg = {"size": seg["size"], "counts": counts.encode("ascii")}
    return seg
