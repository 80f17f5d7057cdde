"""The three preprocessing outputs read back as sources, to look at what was written."""

from __future__ import annotations

import numpy as np

from ..data import tree
from ..data.boxes import xywh_to_xyxy
from ..data.classes import cocostuff_classes, objects365_classes
from ..data.images import image_size
from ..data.records import BoxTable, Record, Target
from ..data.sources import Source
from ..data.sources.grounding import image_root, phrase
from ..jsonio import load_json
from . import coco, goldg, objects365


class _BoxIndex(Source):
    """`{file name: [{"category_id", "bbox"}, ...]}`: a record per key, a target per category."""

    file: tuple[str, str]  # keys of `data.tree.PATHS`
    image_dir: tuple[str, str]

    def __init__(self, data_dir):
        super().__init__(data_dir)
        self._index = load_json(
            tree.at(self.data_dir, *self.file),
            f"{self.name} output",
            f"run `vsm-kit preprocess --data-dir {self.data_dir}`",
        )
        self._keys = list(self._index)

    def _label(self, cat: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self._keys)

    def _record(self, i: int) -> Record:
        key = self._keys[i]
        by_cat: dict[int, list] = {}
        for b in self._index[key]:
            by_cat.setdefault(b["category_id"], []).append(b["bbox"])
        path = tree.at(self.data_dir, *self.image_dir) / key
        h, w = image_size(path)
        targets = tuple(Target(self._label(c), xywh_to_xyxy(v), c) for c, v in by_cat.items())
        return Record(self.name, i, path, h, w, targets, image_id=key)

    def _texts(self, i: int) -> list[str]:
        return [self._label(b["category_id"]) for b in self._index[self._keys[i]]]

    def box_table(self) -> BoxTable:
        rows, cats, boxes = [], [], []
        for i, key in enumerate(self._keys):
            for b in self._index[key]:
                rows.append(i)
                cats.append(b["category_id"])
                boxes.append(b["bbox"])
        uniq = sorted(set(cats))
        code = {c: k for k, c in enumerate(uniq)}
        return BoxTable(
            np.array(rows, np.int32),
            np.array([code[c] for c in cats], np.int32),
            xywh_to_xyxy(boxes),
            tuple(self._label(c) for c in uniq),
        )


class CocoIndex(_BoxIndex):
    name, group = "coco index", "general_segdet"
    file, image_dir = coco.OUTPUT, ("coco", "images")

    def _label(self, cat: int) -> str:
        names = cocostuff_classes()
        return names[cat - 1] if 0 < cat <= len(names) else "other"


class Objects365Index(_BoxIndex):
    name, group = "objects365 index", "general_segdet"
    file, image_dir = objects365.OUTPUT, ("objects365", "images")

    def _label(self, cat: int) -> str:
        names = objects365_classes()
        return names[cat] if 0 < cat < len(names) else f"category {cat}"


class GoldGOutput(Source):
    """`goldG_train.json`: a record per entry, a target per attached instance."""

    name, group = "goldg output", "mixed_grounding"

    def __init__(self, data_dir):
        super().__init__(data_dir)
        self._items = load_json(
            tree.at(self.data_dir, *goldg.OUTPUT),
            "GoldG output",
            f"run `vsm-kit preprocess --data-dir {self.data_dir}`",
        )

    def __len__(self) -> int:
        return len(self._items)

    def _record(self, i: int) -> Record:
        it = self._items[i]
        path = image_root(self.data_dir, it["data_source"]) / it["file_name"]
        h, w = image_size(path)
        targets = tuple(
            Target(phrase(it["caption"], a["tokens_positive"]), xywh_to_xyxy(a["bbox"]))
            for a in it["instances"]
        )
        return Record(self.name, i, path, h, w, targets, caption=it["caption"])

    def _texts(self, i: int) -> list[str]:
        return [self._items[i]["caption"]]

    def box_table(self) -> BoxTable:
        rows = [i for i, it in enumerate(self._items) for _ in it["instances"]]
        boxes = [a["bbox"] for it in self._items for a in it["instances"]]
        return BoxTable(
            np.array(rows, np.int32),
            np.zeros(len(rows), np.int32),
            xywh_to_xyxy(boxes),
            ("phrase",),
        )


OUTPUT_VIEWS = {"coco": CocoIndex, "objects365": Objects365Index, "goldg": GoldGOutput}


def open_output(step: str, data_dir) -> Source:
    """The output of preprocessing `step` (coco, objects365, goldg) as a source of records."""
    return OUTPUT_VIEWS[step](data_dir)
