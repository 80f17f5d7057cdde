"""COCO step: `cocostuff/annotations/image2bboxes.json` from COCO-2017 instances + COCO-Stuff."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import tree
from ._common import (
    AnnotationColumns,
    Skips,
    StepResult,
    byte_bar,
    image_columns,
    require_boxes,
    require_inputs,
    write_box_index,
)
from ._stream import BadInputError, stream_arrays

INPUTS = [("coco", "instances"), ("cocostuff", "annotations")]  # keys of `data.tree.PATHS`
OUTPUT = ("cocostuff", "index")


def build_coco_index(data_dir: Path, progress: bool = True) -> StepResult:
    """Group the boxes of both files (things, then stuff) by image file name.

    Refused, with the output left as it was: a file that is not JSON, truncated, without the
    top-level `images` and `annotations` arrays, an image id listed with two file names, or a
    file without a usable annotation (none, or all malformed) or no box left to index. Counted
    and named in the warnings, and left out: image entries without an integer `id` and a string
    `file_name`, annotations that are not objects or whose `image_id`/`category_id` is not an
    integer or whose `bbox` is not 4 finite numbers (one bad row should not cost a 1.5 M-box
    index), and annotations of unknown image ids."""
    inputs = require_inputs(data_dir, INPUTS, "coco")
    id_name: dict[int, str] = {}
    id_source: dict[int, Path] = {}
    cols = AnnotationColumns()
    bad_images = Skips("image entries")
    with byte_bar(inputs, "coco", progress) as bar, cols.in_background() as submit:
        for path in inputs:
            position = 0
            for batch in stream_arrays(path, ("images", "annotations"), bar.update):
                if batch.key == "annotations":
                    submit(batch)
                    continue
                ids, file_names, n_read = image_columns(batch, bad_images, position)
                position += n_read
                for image_id, file_name in zip(ids, file_names, strict=True):
                    name = id_name.setdefault(image_id, file_name)
                    if name != file_name:
                        raise BadInputError(
                            f"image id {image_id} is {name!r} in {id_source[image_id]} but "
                            f"{file_name!r} in {path}: the two files do not belong together. "
                            "Fix: use the COCO-2017 instances and COCO-Stuff files of one release"
                        )
                    id_source.setdefault(image_id, path)
    names = sorted(set(id_name.values()))
    name_idx = {n: i for i, n in enumerate(names)}
    known = np.array(sorted(id_name), np.int64)
    group = cols.group_by(known, np.array([name_idx[id_name[i]] for i in known.tolist()]))
    out = tree.at(data_dir, *OUTPUT)
    unknown = int((group < 0).sum())
    require_boxes(inputs, int(group.size) - unknown, cols, unknown)
    n_images = write_box_index(out, names, group, cols)  # consumes `group`
    result = StepResult(
        "coco", out, "built", n_images, int(group.size) - unknown, unknown_image_ids=unknown
    )
    result.malformed = len(bad_images) + len(cols.skips)
    result.warnings += bad_images.warnings() + cols.skips.warnings()
    if unknown:
        result.warnings.append(f"{unknown} annotations name image ids absent from the files")
    return result
