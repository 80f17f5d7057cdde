"""refCOCO, refCOCO+, refCOCOg and refCLEF through their REFER files: a target per sentence."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ...errors import UnsafePickleError
from ...jsonio import load_json_shared
from ..boxes import xywh_to_xyxy
from ..masks import SummedParts
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source, require

SPLIT_BY = {"refclef": "unc", "refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
IMAGE_DIRS = {
    "refclef": "refer_seg/images/saiapr_tc-12",
    "refcoco": "refer_seg/images/mscoco/images/train2014",
    "refcoco+": "refer_seg/images/mscoco/images/train2014",
    "refcocog": "refer_seg/images/mscoco/images/train2014",
}
_FIX = (
    "download the REFER annotations of {ds} (refs({by}).p and instances.json) into refer_seg/{ds}/"
)


class _PlainDataUnpickler(pickle.Unpickler):
    """Refs files are plain lists/dicts/strings; anything needing a class import is refused, so a
    downloaded pickle can never run code."""

    def find_class(self, module, name):
        raise UnsafePickleError(
            f"{self.path}: refuses to load {module}.{name}; refs files hold only plain data"
        )


def load_refs(path: Path) -> list[dict]:
    """Read a REFER `refs(<splitBy>).p` file without executing any code."""
    with open(path, "rb") as f:
        unpickler = _PlainDataUnpickler(f)
        unpickler.path = path
        try:
            return unpickler.load()
        except (pickle.UnpicklingError, EOFError) as err:
            raise UnsafePickleError(f"{path}: not a readable refs pickle ({err})") from None


class ReferSource(Source):
    """A REFER dataset; `split` selects the refs (`train` as in training, or val/test...)."""

    group = "refer_seg"

    def __init__(self, data_dir, split: str = "train"):
        super().__init__(data_dir)
        ds, by = self.name, SPLIT_BY[self.name]
        fix = _FIX.format(ds=ds, by=by)
        folder = self.data_dir / "refer_seg" / ds
        refs = load_refs(require(folder / f"refs({by}).p", f"{ds} refs", fix))
        data = load_json_shared(folder / "instances.json", f"{ds} instances", fix)
        self.split = split
        self._images = {im["id"]: im for im in data["images"]}
        self._anns = {a["id"]: a for a in data["annotations"]}
        self._cat_name = {c["id"]: c["name"] for c in data["categories"]}
        # one row per sentence of the selected split, grouped by image
        sents = [
            (ref["image_id"], ref["ann_id"], s["sent"].strip())
            for ref in refs
            if ref["split"] == split
            for s in ref["sentences"]
        ]
        self._image_ids = sorted({image_id for image_id, _, _ in sents})
        row = {image_id: i for i, image_id in enumerate(self._image_ids)}
        self._sents = sents
        keys = np.array([row[image_id] for image_id, _, _ in sents], dtype=np.int64)
        self._groups = Grouping(keys, len(self._image_ids))
        self._image_dir = self.data_dir / IMAGE_DIRS[ds]

    def __len__(self) -> int:
        return len(self._image_ids)

    def _record(self, i: int) -> Record:
        im = self._images[self._image_ids[i]]
        h, w = int(im["height"]), int(im["width"])
        targets = []
        for r in self._groups.rows(i):
            _, ann_id, sent = self._sents[r]
            ann = self._anns[ann_id]
            targets.append(
                Target(
                    sent,
                    xywh_to_xyxy(ann["bbox"]),
                    ann["category_id"],
                    # bool union on display; training takes the original's sum of parts
                    mask_fn=SummedParts(ann["segmentation"], h, w),
                )
            )
        return Record(
            self.name, i, self._image_dir / im["file_name"], h, w, tuple(targets), im["id"]
        )

    def _texts(self, i: int) -> list[str]:
        return [self._sents[r][2] for r in self._groups.rows(i)]

    def box_table(self) -> BoxTable:
        """One box per referred object (not per sentence), labelled with its category."""
        cat_ids = sorted(self._cat_name)
        label_of = {c: k for k, c in enumerate(cat_ids)}
        seen = {}
        for r in range(len(self._sents)):
            image_id, ann_id, _ = self._sents[r]
            seen.setdefault(ann_id, image_id)
        row = {image_id: i for i, image_id in enumerate(self._image_ids)}
        anns = [self._anns[a] for a in seen]
        return BoxTable(
            np.array([row[seen[a["id"]]] for a in anns], np.int32),
            np.array([label_of[a["category_id"]] for a in anns], np.int32),
            xywh_to_xyxy([a["bbox"] for a in anns]),
            tuple(self._cat_name[c] for c in cat_ids),
        )


class RefClef(ReferSource):
    name = "refclef"


class RefCoco(ReferSource):
    name = "refcoco"


class RefCocoPlus(ReferSource):
    name = "refcoco+"


class RefCocog(ReferSource):
    name = "refcocog"
