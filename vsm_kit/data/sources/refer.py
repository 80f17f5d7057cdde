"""refCOCO, refCOCO+, refCOCOg and refCLEF through their REFER files: a target per sentence."""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from ...errors import AnnotationError, UnsafePickleError
from .. import tree
from ..boxes import xywh_to_xyxy
from ..masks import SummedParts
from ..records import BoxTable, Grouping, Record, Target
from ._base import Source
from ._checks import (
    ANNOTATION,
    CATEGORY,
    ID,
    SEGMENTATION,
    SHAPE_ERRORS,
    SIZED_IMAGE,
    annotation_file,
    boxes_xyxy,
    diagnosing,
    read_json,
)

# the source whose ("images") entry of `tree.PATHS` holds a dataset's images
IMAGES_OF = {
    "refclef": "refclef",
    "refcoco": "refcoco",
    "refcoco+": "refcoco",
    "refcocog": "refcoco",
}
_LISTS = ("images", "annotations", "categories")
_FIX = "download the REFER annotations of {ds} ({refs} and {instances}) into {folder}/"


_REFS_FIX = "download the REFER annotations again (refs files are lists of plain dicts)"


class _PlainDataUnpickler(pickle.Unpickler):
    """Refs files are plain lists/dicts/strings; anything needing a class import is refused, so a
    downloaded pickle can never run code. The one exception, `_codecs.encode`, is how protocol 2
    stores bytes; it only builds them."""

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise UnsafePickleError(
            f"{self.path}: refuses to load {module}.{name}; refs files hold only plain data. "
            f"Fix: {_REFS_FIX}"
        )


def load_refs(path: Path) -> list[dict]:
    """Read a REFER `refs(<splitBy>).p` file without executing any code.

    Python 2 pickles whose strings hold non-ASCII bytes are read as bytes, and every bytes
    object is decoded (UTF-8, else Latin-1), keys included."""
    try:
        return _unpickle(path, "ASCII")
    except UnicodeDecodeError:
        return _as_text(_unpickle(path, "bytes"))


def _unpickle(path: Path, encoding: str):
    with open(path, "rb") as f:
        unpickler = _PlainDataUnpickler(f, encoding=encoding)
        unpickler.path = path
        try:
            return unpickler.load()
        except (UnsafePickleError, UnicodeDecodeError):
            raise
        except (pickle.UnpicklingError, EOFError, *SHAPE_ERRORS) as err:
            raise UnsafePickleError(
                f"{path}: not a readable refs pickle ({err or type(err).__name__}). "
                f"Fix: {_REFS_FIX}"
            ) from None


def text(value) -> str:
    """`value` as str: bytes decoded as UTF-8, else Latin-1 (every byte is a Latin-1 char)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return value


def _as_text(obj):
    if isinstance(obj, dict):
        return {_as_text(k): _as_text(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_as_text(v) for v in obj)
    return text(obj)


def _sentences(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(s, dict) and isinstance(s.get("sent"), str | bytes) for s in v
    )


_REF = {
    "image_id": ID,
    "ann_id": ID,
    "split": (lambda v: isinstance(v, str | bytes), "a string"),
    "sentences": (_sentences, 'a list of objects with a "sent" string'),
}
_ANN = {"id": ID, **ANNOTATION, "segmentation": SEGMENTATION}


class ReferSource(Source):
    """A REFER dataset; `split` selects the refs (`train` as in training, or val/test...)."""

    group = "refer_seg"

    def __init__(self, data_dir, split: str = "train"):
        super().__init__(data_dir)
        ds = self.name
        refs_path = tree.at(self.data_dir, ds, "refs")
        path = tree.at(self.data_dir, ds, "instances")
        folder = Path(tree.path(ds, "instances")).parent
        fix = _FIX.format(ds=ds, refs=refs_path.name, instances=path.name, folder=folder)
        refs = load_refs(annotation_file(refs_path, f"{ds} refs", fix))
        if not isinstance(refs, list):
            raise AnnotationError(refs_path, f"holds a {type(refs).__name__}, not a list", fix)
        data = read_json(path, f"{ds} instances", fix, lists=_LISTS)
        checks = {
            "images": (data["images"], SIZED_IMAGE),
            "annotations": (data["annotations"], _ANN),
            "categories": (data["categories"], CATEGORY),
        }
        self._diagnosis = ((path, fix, checks),)
        self.split = split
        with diagnosing(path, fix, checks):
            self._images = {im["id"]: im for im in data["images"]}
            self._anns = {a["id"]: a for a in data["annotations"]}
            self._cat_name = {c["id"]: c["name"] for c in data["categories"]}
        # one row per sentence of the selected split, grouped by image
        with diagnosing(refs_path, fix, {"refs": (refs, _REF)}):
            sents = [
                (ref["image_id"], ref["ann_id"], text(s["sent"]).strip())
                for ref in refs
                if text(ref["split"]) == split
                for s in ref["sentences"]
            ]
        self._check_ids(refs_path, path, sents, fix, checks)
        self._image_ids = sorted({image_id for image_id, _, _ in sents})
        row = {image_id: i for i, image_id in enumerate(self._image_ids)}
        self._sents = sents
        keys = np.array([row[image_id] for image_id, _, _ in sents], dtype=np.int64)
        self._groups = Grouping(keys, len(self._image_ids))
        self._image_dir = tree.at(self.data_dir, IMAGES_OF[ds], "images")

    def _check_ids(self, refs_path: Path, path: Path, sents: list, fix: str, checks) -> None:
        """Every referred annotation and image is in instances.json, with a box and a category."""
        for k, (known, what) in enumerate(((self._images, "image"), (self._anns, "annotation"))):
            unknown = sorted({row[k] for row in sents} - known.keys(), key=str)
            if unknown:
                raise AnnotationError(
                    refs_path,
                    f"refs name {what} ids {unknown[:5]} that {path} does not hold; both files "
                    "must come from the same release",
                    fix,
                )
        anns = [self._anns[a] for a in {row[1]: None for row in sents}]
        with diagnosing(path, fix, checks):
            boxes_xyxy([a["bbox"] for a in anns])
            unknown = sorted({a["category_id"] for a in anns} - self._cat_name.keys())
        if unknown:
            raise AnnotationError(
                path, f'annotations name category ids {unknown[:5]} that "categories" lacks', fix
            )

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
