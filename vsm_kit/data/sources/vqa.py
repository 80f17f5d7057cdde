"""LLaVA-style conversation files on COCO-2017 images: no boxes, a conversation per record."""

from __future__ import annotations

import numpy as np

from .. import tree
from ..images import image_size
from ..records import BoxTable, Record
from ._base import Source
from ._checks import TEXT, first_bad, read_json


def _turns(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)
        for t in v
    )


_ITEM = {
    "image": TEXT,
    "conversations": (_turns, 'a list of {"from": ..., "value": ...} turns, both strings'),
}
_FIX = "download the VSM VQA data (Hugging Face dataset craigwu/vsm_vqa_data) into vsm_vqa_data/"


class _Conversations(Source):
    group = "vqa"

    def __init__(self, data_dir):
        super().__init__(data_dir)
        path = tree.at(self.data_dir, self.name, "annotations")
        self._items = read_json(path, "VQA conversations", _FIX, top=list)
        if bad := first_bad(path, "", self._items, _ITEM, _FIX):
            raise bad

    def __len__(self) -> int:
        return len(self._items)

    def _record(self, i: int) -> Record:
        item = self._items[i]
        path = tree.at(self.data_dir, "coco", "images") / item["image"]
        h, w = image_size(path)
        return Record(
            self.name,
            i,
            path,
            h,
            w,
            image_id=item.get("id"),
            conversations=tuple(item["conversations"]),
        )

    def _texts(self, i: int) -> list[str]:
        return [turn["value"] for turn in self._items[i]["conversations"]]

    def box_table(self) -> BoxTable:
        empty = np.zeros(0, np.int32)
        return BoxTable(empty, empty, np.zeros((0, 4), np.float32), ())


class LlavaInstruct80k(_Conversations):
    name = "llava_instruct_80k"


class PossibleLocations(_Conversations):
    name = "possible_locations_conv_86k"
