"""GoldG (MDETR's grounding annotations): the mixed COCO/VG images and the Flickr30k-entities
images, a record per caption entry, a target per attached annotation.

The original trains on `goldG_train.json`, the combined list its preprocessing writes: mixed
entries in file order, then Flickr entries, each annotation on `entries[image_id]` of that list.
Flickr ids restart at 0, so Flickr boxes sit on mixed entries and Flickr entries keep none. The
readers take that file when it is newer than both MDETR files (as `vsm-kit preprocess` writes
it, with `--fix-goldg-ids` or without), else build the same list from the MDETR files in memory."""

from __future__ import annotations

import numpy as np

from ...errors import VsmKitError
from .. import tree
from ..images import image_size
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source
from ._checks import (
    BBOX,
    INTEGER,
    SIZE,
    SPANS,
    TEXT,
    boxes_xyxy,
    diagnosing,
    element_problem,
    read_json,
)

# an entry's data_source → the role of its image folder in `tree.PATHS` (source "goldg")
IMAGE_ROOTS = {"coco": "coco_images", "vg": "vg_images", "flickr": "flickr_images"}
_LISTS = ("images", "annotations")
_FIX_COMBINED = "rebuild it with `vsm-kit preprocess --only goldg`"
_FIX = "download MDETR's pre-processed annotations (mdetr_annotations) into MixedGrounding/"


def phrase(caption: str, tokens_positive: list) -> str:
    """The caption substrings of every `[start, end)` span, joined by a space."""
    return " ".join(caption[s:e] for s, e in tokens_positive).strip()


def _instances(v) -> bool:
    return isinstance(v, list) and all(element_problem(a, _INSTANCE) is None for a in v)


_SOURCE = (lambda v: isinstance(v, str) and v in IMAGE_ROOTS, f"one of {', '.join(IMAGE_ROOTS)}")
_INSTANCE = {"bbox": BBOX, "tokens_positive": SPANS}
_ENTRY = {
    "file_name": TEXT,
    "caption": TEXT,
    "data_source": _SOURCE,
    "instances": (
        _instances,
        ('a list of objects with "bbox" [x, y, width, height] and "tokens_positive" spans'),
    ),
}
_MDETR_IMAGE = {"file_name": TEXT, "caption": TEXT, "height": SIZE, "width": SIZE}
_MDETR_ANN = {"image_id": INTEGER, **_INSTANCE}


def image_root(data_dir, data_source: str):
    """The folder the images of `data_source` (coco, vg, flickr) sit in."""
    return tree.at(data_dir, "goldg", IMAGE_ROOTS[data_source])


def mdetr_files(data_dir) -> list:
    """The two MDETR inputs: the mixed COCO/VG file, then the Flickr file."""
    return [tree.at(data_dir, "goldg", "mixed"), tree.at(data_dir, "goldg", "flickr")]


def _combined_is_fresh(data_dir) -> bool:
    combined = tree.at(data_dir, "goldg", "combined")
    raw = mdetr_files(data_dir)
    return combined.exists() and all(
        p.exists() and p.stat().st_mtime <= combined.stat().st_mtime for p in raw
    )


def goldg_entries(data_dir) -> list[dict]:
    """The combined list the original trains on: `{"file_name", "caption", "data_source",
    "instances"}` per entry (plus the MDETR `height`/`width` when built from the MDETR files)."""
    raw = mdetr_files(data_dir)
    if _combined_is_fresh(data_dir):
        combined = tree.at(data_dir, "goldg", "combined")
        return read_json(combined, "GoldG training list", _FIX_COMBINED, top=list)
    files = [read_json(p, "MDETR grounding annotations", _FIX, lists=_LISTS) for p in raw]
    entries = []
    for k, (path, data) in enumerate(zip(raw, files, strict=True)):
        fields = _MDETR_IMAGE if k else {**_MDETR_IMAGE, "data_source": _SOURCE}
        with diagnosing(path, _FIX, {"images": (data["images"], fields)}):
            entries += [
                {
                    "file_name": im["file_name"],
                    "caption": im["caption"],
                    "data_source": "flickr" if k else im["data_source"],
                    "height": int(im["height"]),  # the Flickr file stores sizes as strings
                    "width": int(im["width"]),
                    "instances": [],
                }
                for im in data["images"]
            ]
            if not all(isinstance(im["caption"], str) for im in data["images"]):
                raise TypeError("a caption is not a string")
    for path, data in zip(raw, files, strict=True):
        with diagnosing(path, _FIX, {"annotations": (data["annotations"], _MDETR_ANN)}):
            for a in data["annotations"]:
                if not 0 <= a["image_id"] < len(entries):
                    raise VsmKitError(
                        f"{path}: an annotation names image_id {a['image_id']}, beyond "
                        f"the {len(entries)} GoldG entries (the original fails here too). Fix: "
                        f"`vsm-kit preprocess --data-dir {data_dir} --only goldg --fix-goldg-ids`"
                    )
                entries[a["image_id"]]["instances"].append(a)
            boxes_xyxy([a["bbox"] for a in data["annotations"]])
    return entries


class _Grounding(Source):
    group = "mixed_grounding"
    flickr: bool  # which entries of the combined list this reader holds

    def __init__(self, data_dir):
        super().__init__(data_dir)
        entries = goldg_entries(self.data_dir)
        checks = {"entries": (entries, _ENTRY)}
        if _combined_is_fresh(self.data_dir):
            combined = tree.at(self.data_dir, "goldg", "combined")
            self._diagnosis = ((combined, _FIX_COMBINED, checks),)
        else:  # entries built from both MDETR files: name both
            mixed, flickr = mdetr_files(self.data_dir)
            files = f"{mixed} + {flickr.name}"
            self._diagnosis = ((files, _FIX, checks),)
        with diagnosing(*self._diagnosis[0]):
            self._images = [e for e in entries if (e["data_source"] == "flickr") == self.flickr]
            rows = [i for i, e in enumerate(self._images) for _ in e["instances"]]
            self._anns = [a for e in self._images for a in e["instances"]]
            self._xyxy = boxes_xyxy([a["bbox"] for a in self._anns])
            if not all(isinstance(e["caption"], str) for e in self._images):
                raise TypeError("a caption is not a string")
        self._groups = Grouping(np.array(rows, np.int64), len(self._images))

    def __len__(self) -> int:
        return len(self._images)

    def _record(self, i: int) -> Record:
        im = self._images[i]
        caption = im["caption"]
        targets = tuple(
            Target(phrase(caption, self._anns[r]["tokens_positive"]), self._xyxy[r : r + 1])
            for r in self._groups.rows(i)
        )
        path = image_root(self.data_dir, im["data_source"]) / im["file_name"]
        h, w = (im["height"], im["width"]) if "height" in im else image_size(path)
        return Record(self.name, i, path, h, w, targets, caption=caption)

    def _texts(self, i: int) -> list[str]:
        caption = self._images[i]["caption"]
        return [caption] + [
            phrase(caption, self._anns[r]["tokens_positive"]) for r in self._groups.rows(i)
        ]

    def box_table(self) -> BoxTable:
        record = self._groups.owner()
        with diagnosing(*self._diagnosis[0]):
            texts = [
                phrase(self._images[record[k]]["caption"], a["tokens_positive"]).lower()
                for k, a in enumerate(self._anns)
            ]
        labels = tuple(sorted(set(texts)))
        label_of = {t: k for k, t in enumerate(labels)}
        return BoxTable(
            record, np.array([label_of[t] for t in texts], np.int32), self._xyxy, labels
        )


class GoldGMixed(_Grounding):
    name = "goldg_mixed"
    flickr = False


class FlickrEntities(_Grounding):
    name = "flickr"
    flickr = True
