"""Objects365 step: `object365/image2bboxes.json` (`patchN/<name>.jpg` → boxes)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..data import tree
from ..data.sources.objects365 import MISSING_IMAGES, strip_prefix
from ._common import (
    AnnotationColumns,
    Skips,
    StepResult,
    byte_bar,
    image_columns,
    lookup,
    require_boxes,
    require_inputs,
    write_box_index,
)
from ._stream import BadInputError, stream_arrays

INPUTS = [("objects365", "annotations")]  # keys of `data.tree.PATHS`
OUTPUT = ("objects365", "index")


def _image_groups(ids: list[int], names: list[str]):
    """(sorted image ids, their name index, names): several ids may share a file name and then
    share its key, as dict-append would; the known-absent images get -2 (skipped)."""
    name_idx: dict[str, int] = {}
    values = np.array([name_idx.setdefault(n, len(name_idx)) for n in names], np.int32)
    for n in MISSING_IMAGES & name_idx.keys():
        values[values == name_idx[n]] = -2
    ids_arr = np.array(ids, np.int64)
    order = np.argsort(ids_arr, kind="stable")
    return ids_arr[order], values[order], list(name_idx)


def _resolve(sorted_ids: np.ndarray, values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return lookup(sorted_ids, values, ids).astype(np.int32)


def build_objects365_index(
    data_dir: Path, progress: bool = True, check_images: bool = False
) -> StepResult:
    """Group boxes by stripped file name, skipping the three images the release lacks.

    Annotations naming an unknown image id are counted, not fatal; with `check_images`, listed
    images absent on disk are reported too. As in the COCO step, a file that is not JSON, is
    truncated, lacks the top-level `images`/`annotations` arrays or repeats `images`, or has no
    usable annotation (none, or all malformed) or no box to index is refused (the output is left
    as it was); bad image entries and bad annotations (see `AnnotationColumns`) are left out,
    counted and named in the warnings."""
    (path,) = require_inputs(data_dir, INPUTS, "objects365")
    image_ids, image_names = [], []
    cols = AnnotationColumns()
    bad_images = Skips("image entries")
    position = 0
    lookup_table = None
    with byte_bar([path], "objects365", progress) as bar, cols.in_background() as submit:
        for batch in stream_arrays(path, ("images", "annotations"), bar.update):
            if batch.key == "annotations":
                if cols.resolve is None and image_ids:  # images came first, as released
                    lookup_table = _image_groups(image_ids, image_names)
                    cols.resolve = partial(_resolve, *lookup_table[:2])
                    image_ids.clear()
                    image_names.clear()
                submit(batch)
            else:
                if lookup_table is not None:
                    raise BadInputError(
                        f"{path}: the key 'images' appears twice in the object. Fix: this is "
                        "not the released file; download it again"
                    )
                ids, names, n_read = image_columns(batch, bad_images, position)
                position += n_read
                image_ids.extend(ids)
                image_names.extend(map(strip_prefix, names))
    if lookup_table is None:  # annotations came before images (or there were none)
        lookup_table = _image_groups(image_ids, image_names)
    sorted_ids, values, names = lookup_table
    del image_ids, image_names, lookup_table
    group = cols.group_by(sorted_ids, values)
    unknown = int((group == -1).sum())
    skipped = int((group == -2).sum())
    group[group < 0] = -1
    n_boxes = int((group >= 0).sum())
    used = np.flatnonzero(np.bincount(group[group >= 0], minlength=len(names)))
    out = tree.at(data_dir, *OUTPUT)
    require_boxes([path], n_boxes, cols, unknown)
    n_images = write_box_index(out, names, group, cols)  # consumes `group`
    del group
    result = StepResult(
        "objects365", out, "built", n_images, n_boxes, skipped=skipped, unknown_image_ids=unknown
    )
    result.malformed = len(bad_images) + len(cols.skips)
    result.warnings += bad_images.warnings() + cols.skips.warnings()
    if unknown:
        result.warnings.append(
            f"{unknown} annotations name image ids that {path.name} does not list (left out)"
        )
    if check_images:
        root = tree.at(data_dir, "objects365", "images")
        result.missing_images = [names[i] for i in used.tolist() if not (root / names[i]).exists()]
        if result.missing_images:
            result.warnings.append(
                f"{len(result.missing_images)} annotated images are absent from {root}"
            )
    return result
