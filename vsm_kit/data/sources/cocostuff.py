"""COCO-Stuff: label maps (semantic masks) plus COCO things+stuff boxes, as the original tool
pairs them: a target per class in the label map (ignored classes remapped away), its boxes from
the COCO jsons."""

from __future__ import annotations

import functools
import os

import numpy as np

from ...jsonio import load_json_shared
from ..classes import cocostuff_classes, cocostuff_ignored
from ..images import load_label_map
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source, ann_arrays, require

INSTANCES = "coco2017/annotations/instances_train2017.json"
STUFF = "cocostuff/annotations/stuff_train2017.json"
INDEX = "cocostuff/annotations/image2bboxes.json"
LABEL_DIR = "cocostuff/train2017"
IMAGE_DIR = "coco2017/train2017"

_FIX_INSTANCES = "download COCO-2017 annotations_trainval2017.zip and extract it into coco2017/"
_FIX_STUFF = "download COCO-Stuff stuff_trainval2017.zip and extract it into cocostuff/annotations/"


def ignore_lut() -> np.ndarray:
    """uint8 [256] lookup: label value → value used for training (ignored classes → 255)."""
    lut = np.arange(256, dtype=np.uint8)
    lut[list(cocostuff_ignored())] = 255
    return lut


class CocoStuff(Source):
    name = "cocostuff"
    group = "general_segdet"

    def __init__(self, data_dir):
        super().__init__(data_dir)
        label_dir = require(
            self.data_dir / LABEL_DIR,
            "COCO-Stuff label maps",
            "download stuffthingmaps_trainval2017.zip and extract its train2017/ into cocostuff/",
        )
        self._pngs = sorted(e.name for e in os.scandir(label_dir) if e.name.endswith(".png"))
        file_row = {png[:-4] + ".jpg": i for i, png in enumerate(self._pngs)}
        rows, cats, xyxy = self._boxes(file_row)
        keep = rows >= 0
        self._cats, self._xyxy, rows = cats[keep], xyxy[keep], rows[keep]
        self._groups = Grouping(rows, len(self._pngs))
        self._lut = ignore_lut()
        self._names = cocostuff_classes()

    def _boxes(self, file_row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per annotation: record row, category id, xyxy box. Uses the preprocessed index when it
        is newer than both jsons (same content, far smaller), else the two jsons."""
        index = self.data_dir / INDEX
        sources = [self.data_dir / INSTANCES, self.data_dir / STUFF]
        if index.exists() and all(
            not s.exists() or s.stat().st_mtime <= index.stat().st_mtime for s in sources
        ):
            by_file = load_json_shared(index, "COCO-Stuff box index")
            anns = [
                {"image_id": f, "category_id": b["category_id"], "bbox": b["bbox"]}
                for f, boxes in by_file.items()
                for b in boxes
            ]
            return ann_arrays(anns, file_row)
        parts = []
        for path, what, fix in (
            (sources[0], "COCO-2017 instances annotations", _FIX_INSTANCES),
            (sources[1], "COCO-Stuff stuff annotations", _FIX_STUFF),
        ):
            data = load_json_shared(path, what, fix)
            id_row = {im["id"]: file_row.get(im["file_name"], -1) for im in data["images"]}
            parts.append(ann_arrays(data["annotations"], id_row))
        return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))

    def __len__(self) -> int:
        return len(self._pngs)

    def _record(self, i: int) -> Record:
        png = self._pngs[i]
        label = self._lut[load_label_map(self.data_dir / LABEL_DIR / png)]
        rows = self._groups.rows(i)
        targets = []
        for value in np.unique(label):
            if value == 255:
                continue
            # every class of the label map is a candidate, as in the original, even one without
            # a box (its target has none; the original then asserts, training re-draws)
            hit = rows[self._cats[rows] - 1 == value]
            mask_fn = functools.partial(np.equal, label, value)
            targets.append(
                Target(self._names[value], self._xyxy[hit], int(value) + 1, mask_fn=mask_fn)
            )
        stem = png[:-4]
        return Record(
            source=self.name,
            index=i,
            image_path=self.data_dir / IMAGE_DIR / f"{stem}.jpg",
            height=label.shape[0],
            width=label.shape[1],
            targets=tuple(targets),
            image_id=int(stem) if stem.isdigit() else stem,
        )

    def _usable(self, cats: np.ndarray) -> np.ndarray:
        idx = cats - 1
        ok = (idx >= 0) & (idx < len(self._names))
        ok[ok] &= self._lut[idx[ok]] != 255
        return ok

    def _texts(self, i: int) -> list[str]:
        cats = self._cats[self._groups.rows(i)]
        return [self._names[c - 1] for c in np.unique(cats[self._usable(cats)])]

    def box_table(self) -> BoxTable:
        record = self._groups.owner()
        ok = self._usable(self._cats)
        return BoxTable(
            record[ok], (self._cats[ok] - 1).astype(np.int32), self._xyxy[ok], self._names
        )
