"""Objects365-v2: boxes only, a target per category present in the image."""

from __future__ import annotations

import numpy as np

from .. import tree
from ..classes import objects365_classes
from ..images import image_size
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source
from ._checks import (
    ANNOTATION,
    SIZED_IMAGE,
    ann_arrays,
    diagnosing,
    index_arrays,
    read_json,
)

# Listed in the annotations but absent from the released image archives.
MISSING_IMAGES = frozenset(
    {
        "patch16/objects365_v2_00908726.jpg",
        "patch6/objects365_v1_00320532.jpg",
        "patch6/objects365_v1_00320534.jpg",
    }
)
_LISTS = ("images", "annotations")


def strip_prefix(file_name: str) -> str:
    """`images/v1/patch8/x.jpg` → `patch8/x.jpg` (drop the first two path components)."""
    return "/".join(file_name.replace("\\", "/").split("/")[2:])


class Objects365(Source):
    name = "objects365"
    group = "general_segdet"

    def __init__(self, data_dir):
        super().__init__(data_dir)
        index = tree.at(self.data_dir, "objects365", "index")
        raw = tree.at(self.data_dir, "objects365", "annotations")
        use_index = index.exists() and (
            not raw.exists() or raw.stat().st_mtime <= index.stat().st_mtime
        )
        if use_index:  # the preprocessed index: same boxes, a fraction of the size
            fix = "rebuild it with `vsm-kit preprocess --only objects365`"
            by_file = read_json(index, "Objects365 box index", fix)
            self._files = [f for f in by_file if f not in MISSING_IMAGES]
            self._sizes = None
            file_row = {f: i for i, f in enumerate(self._files)}
            rows, cats, xyxy = index_arrays(index, by_file, file_row, fix)
        else:
            where = tree.path("objects365", "annotations").rsplit("/", 1)
            fix = f"download the Objects365-v2 train annotations ({raw.name}) into {where[0]}/"
            data = read_json(raw, "Objects365 train annotations", fix, lists=_LISTS)
            checks = {"images": (data["images"], SIZED_IMAGE)}
            checks["annotations"] = (data["annotations"], ANNOTATION)
            with diagnosing(raw, fix, checks):
                annotated = {a["image_id"] for a in data["annotations"]}
                images = [
                    im
                    for im in data["images"]
                    if im["id"] in annotated and strip_prefix(im["file_name"]) not in MISSING_IMAGES
                ]
                self._files = [strip_prefix(im["file_name"]) for im in images]
                self._sizes = [(int(im["height"]), int(im["width"])) for im in images]
                rows, cats, xyxy = ann_arrays(
                    data["annotations"], {im["id"]: i for i, im in enumerate(images)}
                )
        keep = rows >= 0
        self._cats, self._xyxy = cats[keep], xyxy[keep]
        self._groups = Grouping(rows[keep], len(self._files))
        self._names = objects365_classes()

    def __len__(self) -> int:
        return len(self._files)

    def _name(self, cat: int) -> str:
        return self._names[cat] if 0 < cat < len(self._names) else f"category {cat}"

    def _record(self, i: int) -> Record:
        path = tree.at(self.data_dir, "objects365", "images") / self._files[i]
        h, w = self._sizes[i] if self._sizes else image_size(path)
        rows = self._groups.rows(i)
        targets = tuple(
            Target(self._name(cat), self._xyxy[rows[self._cats[rows] == cat]], cat)
            for cat in dict.fromkeys(self._cats[rows].tolist())
        )
        return Record(self.name, i, path, h, w, targets, image_id=self._files[i])

    def _texts(self, i: int) -> list[str]:
        return [self._name(c) for c in set(self._cats[self._groups.rows(i)].tolist())]

    def box_table(self) -> BoxTable:
        record = self._groups.owner()
        labels = tuple(
            self._name(c) for c in range(max(len(self._names), self._cats.max(initial=0) + 1))
        )
        return BoxTable(record, self._cats.astype(np.int32), self._xyxy, labels)
