"""Decoding COCO-style segmentations in every form the real releases use."""

from __future__ import annotations

from dataclasses import dataclass

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


def sum_segmentation_parts(segmentation, height: int, width: int) -> np.ndarray:
    """uint8 [height, width]: the parts of a REFER annotation's segmentation decoded and summed,
    as the original composes its refCOCO-family training masks (§3.4): pixels where parts
    overlap hold 2 or more, and that is the BCE/DICE target it trains with.

    Empty → zeros; a polygon list → `frPyObjects` with the image's height and width; a list of
    compressed RLEs (`counts` str or bytes) as is. Forms the original cannot read (a bare RLE
    dict, uncompressed RLE) are taken as one part each rather than failing."""
    if not segmentation:
        return np.zeros((height, width), dtype=np.uint8)
    if isinstance(segmentation, dict):
        rles = [_rle(segmentation, height, width)]
    elif isinstance(segmentation[0], dict):
        rles = [_rle(s, height, width) for s in segmentation]
    else:
        rles = mask_utils.frPyObjects(segmentation, height, width)
    return mask_utils.decode(rles).sum(axis=2).astype(np.uint8)


@dataclass(frozen=True)
class SummedParts:
    """A REFER target's lazy mask: calling it gives the bool union (display, statistics, every
    reader's `Target.mask()` contract); `summed()` the uint8 training target the original uses
    (`sum_segmentation_parts`)."""

    segmentation: object
    height: int
    width: int

    def __call__(self) -> np.ndarray:
        return self.summed() > 0

    def summed(self) -> np.ndarray:
        return sum_segmentation_parts(self.segmentation, self.height, self.width)
