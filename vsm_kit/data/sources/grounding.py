"""MDETR grounding annotations (GoldG): the mixed COCO/VG file and the Flickr30k-entities file.
A record per image entry (caption), a target per annotated phrase."""

from __future__ import annotations

import numpy as np

from ...jsonio import load_json_shared
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source, ann_arrays

MIXED = "MixedGrounding/final_mixed_train.json"
FLICKR = "MixedGrounding/final_flickr_separateGT_train.json"
IMAGE_ROOTS = {
    "coco": "coco2014/train2014",
    "vg": "MixedGrounding/GQA/images",
    "flickr": "MixedGrounding/flickr30k-images",
}
_FIX = "download MDETR's pre-processed annotations (mdetr_annotations) into MixedGrounding/"


def phrase(caption: str, tokens_positive: list) -> str:
    """The caption substrings of every `[start, end)` span, joined by a space."""
    return " ".join(caption[s:e] for s, e in tokens_positive).strip()


class _Grounding(Source):
    group = "mixed_grounding"
    file: str

    def __init__(self, data_dir):
        super().__init__(data_dir)
        data = load_json_shared(self.data_dir / self.file, "MDETR grounding annotations", _FIX)
        self._images = data["images"]
        self._anns = data["annotations"]
        # Attach annotations to the image entry whose own id they name (ids restart at 0 in the
        # Flickr file, so positions in a combined list would be wrong).
        rows, _, self._xyxy = ann_arrays(
            self._anns, {im["id"]: i for i, im in enumerate(self._images)}
        )
        keep = np.flatnonzero(rows >= 0)
        self._anns = [self._anns[k] for k in keep]
        self._xyxy = self._xyxy[keep]
        self._groups = Grouping(rows[keep], len(self._images))

    def _source_of(self, im: dict) -> str:
        return im.get("data_source", "flickr")

    def __len__(self) -> int:
        return len(self._images)

    def _record(self, i: int) -> Record:
        im = self._images[i]
        caption = im["caption"]
        targets = tuple(
            Target(phrase(caption, self._anns[r]["tokens_positive"]), self._xyxy[r : r + 1])
            for r in self._groups.rows(i)
        )
        root = self.data_dir / IMAGE_ROOTS[self._source_of(im)]
        return Record(
            self.name,
            i,
            root / im["file_name"],
            int(im["height"]),  # the Flickr file stores sizes as strings
            int(im["width"]),
            targets,
            image_id=im["id"],
            caption=caption,
        )

    def _texts(self, i: int) -> list[str]:
        caption = self._images[i]["caption"]
        return [caption] + [
            phrase(caption, self._anns[r]["tokens_positive"]) for r in self._groups.rows(i)
        ]

    def box_table(self) -> BoxTable:
        record = self._groups.owner()
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
    file = MIXED


class FlickrEntities(_Grounding):
    name = "flickr"
    file = FLICKR

    def _source_of(self, im: dict) -> str:
        return "flickr"
