"""PACO-LVIS: objects and object parts on COCO-2017 images, a target per category."""

from __future__ import annotations

import numpy as np

from ...errors import AnnotationError
from .. import tree
from ..masks import decode_segmentation
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source
from ._checks import (
    ANNOTATION,
    CATEGORY,
    SEGMENTATION,
    SIZED_IMAGE,
    ann_arrays,
    diagnosing,
    read_json,
)

_LISTS = ("images", "annotations", "categories")
_FIX = "download paco_lvis_v1 annotations (PACO release) into vlpart/paco/annotations/"


def parse_paco_name(name: str) -> tuple[str, str | None]:
    """`"cup_(drink_container):handle"` → `("cup", "handle")`; objects give `(name, None)`.

    Each `:`-separated piece loses its LVIS disambiguation suffix (from the first `_(`) and its
    underscores."""
    pieces = [p.split("_(")[0].replace("_", " ").strip() for p in name.split(":")]
    return pieces[0], (pieces[1] if len(pieces) > 1 else None)


def paco_text(name: str) -> str:
    """Canonical target text: the object, or "object part"."""
    obj, part = parse_paco_name(name)
    return obj if part is None else f"{obj} {part}"


class PacoLvis(Source):
    name = "paco_lvis"
    group = "general_segdet"

    def __init__(self, data_dir):
        super().__init__(data_dir)
        path = tree.at(self.data_dir, "paco_lvis", "annotations")
        data = read_json(path, "PACO-LVIS annotations", _FIX, lists=_LISTS)
        checks = {
            "images": (data["images"], SIZED_IMAGE),
            "annotations": (data["annotations"], {**ANNOTATION, "segmentation": SEGMENTATION}),
            "categories": (data["categories"], CATEGORY),
        }
        self._diagnosis = ((path, _FIX, checks),)
        with diagnosing(path, _FIX, checks):
            self._anns = data["annotations"]
            annotated = {a["image_id"] for a in self._anns}
            self._images = [im for im in data["images"] if im["id"] in annotated]
            image_row = {im["id"]: i for i, im in enumerate(self._images)}
            self._cat_name = {c["id"]: c["name"] for c in data["categories"]}
            rows, cats, xyxy = ann_arrays(self._anns, image_row)
            keep = np.flatnonzero(rows >= 0)  # drop annotations of images the file does not list
            self._anns = [self._anns[k] for k in keep]
            rows, self._cats, self._xyxy = rows[keep], cats[keep], xyxy[keep]
            unknown = set(self._cats.tolist()) - set(self._cat_name)
            if unknown:
                raise AnnotationError(
                    path,
                    f"annotations name category ids {sorted(unknown)[:5]} that "
                    '"categories" does not list',
                    _FIX,
                )
        self._groups = Grouping(rows, len(self._images))
        cat_ids = sorted(self._cat_name)
        self._labels = tuple(paco_text(self._cat_name[c]) for c in cat_ids)
        self._label_of = {c: k for k, c in enumerate(cat_ids)}

    def category_name(self, cat: int) -> str:
        """The release's raw name, e.g. `"cup_(drink_container):handle"`."""
        return self._cat_name[cat]

    def __len__(self) -> int:
        return len(self._images)

    def _record(self, i: int) -> Record:
        im = self._images[i]
        h, w = int(im["height"]), int(im["width"])
        rows = self._groups.rows(i)
        targets = []
        for cat in dict.fromkeys(self._cats[rows].tolist()):  # first-appearance order
            hit = rows[self._cats[rows] == cat]
            segs = [self._anns[r]["segmentation"] for r in hit]
            targets.append(
                Target(
                    paco_text(self._cat_name[cat]),
                    self._xyxy[hit],
                    cat,
                    mask_fn=lambda segs=segs: _union(segs, h, w),
                )
            )
        return Record(
            source=self.name,
            index=i,
            # PACO file names start with train2017/: they sit under the COCO images' parent
            image_path=tree.at(self.data_dir, "coco", "images").parent / im["file_name"],
            height=h,
            width=w,
            targets=tuple(targets),
            image_id=im["id"],
        )

    def _texts(self, i: int) -> list[str]:
        return [
            paco_text(self._cat_name[c]) for c in set(self._cats[self._groups.rows(i)].tolist())
        ]

    def box_table(self) -> BoxTable:
        record = self._groups.owner()
        label = np.array([self._label_of[c] for c in self._cats.tolist()], np.int32)
        return BoxTable(record, label, self._xyxy, self._labels)


def _union(segmentations: list, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for seg in segmentations:
        mask |= decode_segmentation(seg, height, width)
    return mask
