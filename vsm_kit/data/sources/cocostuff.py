"""COCO-Stuff: label maps (semantic masks) plus COCO things+stuff boxes, as the original tool
pairs them: a target per class in the label map (ignored classes remapped away), its boxes from
the COCO jsons.

A label map whose size is not its image's raises `LabelMapSizeError`, naming both files and
sizes (its masks would not align); it is a `CorruptImageError`, so training re-draws that sample
and counts it among the skipped images, as it does an unreadable image."""

from __future__ import annotations

import functools
import os

import numpy as np

from ...errors import CorruptImageError, LabelMapSizeError, MissingDataError
from .. import tree
from ..classes import cocostuff_classes, cocostuff_ignored
from ..images import image_size, load_label_map
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source, require
from ._checks import ANNOTATION, IMAGE, ann_arrays, diagnosing, index_arrays, read_json

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
            tree.at(self.data_dir, "cocostuff", "label_maps"),
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
        index = tree.at(self.data_dir, "cocostuff", "index")
        sources = [
            tree.at(self.data_dir, "coco", "instances"),
            tree.at(self.data_dir, "cocostuff", "annotations"),
        ]
        if index.exists() and all(
            not s.exists() or s.stat().st_mtime <= index.stat().st_mtime for s in sources
        ):
            fix = "rebuild it with `vsm-kit preprocess --only coco`"
            by_file = read_json(index, "COCO-Stuff box index", fix)
            return index_arrays(index, by_file, file_row, fix)
        parts = []
        for path, what, fix in (
            (sources[0], "COCO-2017 instances annotations", _FIX_INSTANCES),
            (sources[1], "COCO-Stuff stuff annotations", _FIX_STUFF),
        ):
            data = read_json(path, what, fix, lists=("images", "annotations"))
            checks = {
                "images": (data["images"], IMAGE),
                "annotations": (data["annotations"], ANNOTATION),
            }
            with diagnosing(path, fix, checks):
                id_row = {im["id"]: file_row.get(im["file_name"], -1) for im in data["images"]}
                parts.append(ann_arrays(data["annotations"], id_row))
        return tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True))

    def __len__(self) -> int:
        return len(self._pngs)

    def _record(self, i: int) -> Record:
        png, stem = self._pngs[i], self._pngs[i][:-4]
        label_path, image_path = (
            tree.at(self.data_dir, "cocostuff", "label_maps") / png,
            tree.at(self.data_dir, "coco", "images") / f"{stem}.jpg",
        )
        label = self._lut[load_label_map(label_path)]
        try:
            hw = image_size(image_path)
        except (MissingDataError, CorruptImageError):
            hw = label.shape  # an unreadable image fails when it is loaded, as before
        if hw != label.shape:
            raise LabelMapSizeError(label_path, image_path, label.shape, hw)
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
        return Record(
            source=self.name,
            index=i,
            image_path=image_path,
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
