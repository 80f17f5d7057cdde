"""COCO step: `cocostuff/annotations/image2bboxes.json` from COCO-2017 instances + COCO-Stuff."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import VsmKitError
from ._common import (
    AnnotationColumns,
    StepResult,
    byte_bar,
    image_columns,
    require_inputs,
    write_box_index,
)
from ._stream import stream_arrays

INPUTS = [
    "coco2017/annotations/instances_train2017.json",
    "cocostuff/annotations/stuff_train2017.json",
]
OUTPUT = "cocostuff/annotations/image2bboxes.json"


def build_coco_index(data_dir: Path, progress: bool = True) -> StepResult:
    """Group the boxes of both files (things, then stuff) by image file name."""
    inputs = require_inputs(data_dir, INPUTS, "coco")
    id_name: dict[int, str] = {}
    id_source: dict[int, Path] = {}
    cols = AnnotationColumns()
    with byte_bar(inputs, "coco", progress) as bar, cols.in_background() as submit:
        for path in inputs:
            for batch in stream_arrays(path, ("images", "annotations"), bar.update):
                if batch.key == "annotations":
                    submit(batch)
                    continue
                for image_id, file_name in zip(*image_columns(batch), strict=True):
                    name = id_name.setdefault(image_id, file_name)
                    if name != file_name:
                        raise VsmKitError(
                            f"image id {image_id} is {name!r} in {id_source[image_id]} but "
                            f"{file_name!r} in {path}: the two files do not belong together"
                        )
                    id_source.setdefault(image_id, path)
    names = sorted(set(id_name.values()))
    name_idx = {n: i for i, n in enumerate(names)}
    known = np.array(sorted(id_name), np.int64)
    group = cols.group_by(known, np.array([name_idx[id_name[i]] for i in known.tolist()]))
    out = data_dir / OUTPUT
    unknown = int((group < 0).sum())
    n_images = write_box_index(out, names, group, cols)  # consumes `group`
    result = StepResult(
        "coco", out, "built", n_images, int(group.size) - unknown, unknown_image_ids=unknown
    )
    if unknown:
        result.warnings.append(f"{unknown} annotations name image ids absent from the files")
    return result
