"""Checks of annotation files against the shape their release has, for readers to fail with one
line naming the file, the element and the fix (never a KeyError from deep inside a reader).

Good files cost nothing extra: readers build their arrays directly and only on a failure
`diagnosing` (or a reader's `_record_error`) walks the elements to name the first bad one."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...errors import AnnotationError, MissingDataError, VsmKitError
from ...jsonio import load_json_shared
from ..boxes import xywh_to_xyxy
from ..images import link_problem

# what a reader's comprehension raises on a wrong-shaped element
SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _box(v) -> bool:
    try:
        return len(v) == 4 and all(math.isfinite(float(x)) for x in v) and not isinstance(v, str)
    except (TypeError, ValueError):
        return False


def _key(v) -> bool:
    return isinstance(v, int | str) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _size(v) -> bool:
    try:
        return int(v) > 0
    except (TypeError, ValueError):
        return False


def _spans(v) -> bool:
    return isinstance(v, list) and all(
        isinstance(p, list) and len(p) == 2 and all(map(_integer, p)) for p in v
    )


Field = tuple[Callable[[object], bool], str]
ID: Field = (_key, "an id (integer or string)")
INTEGER: Field = (_integer, "an integer")
SIZE: Field = (_size, "a positive integer")
TEXT: Field = (lambda v: isinstance(v, str), "a string")
BBOX: Field = (_box, "[x, y, width, height], four finite numbers")
SEGMENTATION: Field = (lambda v: isinstance(v, list | dict), "polygons or an RLE object")
SPANS: Field = (_spans, "a list of [start, end] character spans")

IMAGE = {"id": ID, "file_name": TEXT}
SIZED_IMAGE = {**IMAGE, "height": SIZE, "width": SIZE}
ANNOTATION = {"image_id": ID, "category_id": INTEGER, "bbox": BBOX}
CATEGORY = {"id": INTEGER, "name": TEXT}
INDEX_BOX = {"category_id": INTEGER, "bbox": BBOX}


def annotation_file(path: Path, what: str, fix: str) -> Path:
    """`path` when it is a readable, non-empty file; else the one-line reason and `fix`."""
    try:
        size = path.stat().st_size
    except OSError as err:
        if reason := link_problem(path, err):
            raise AnnotationError(path, reason, fix) from None
        if isinstance(err, FileNotFoundError):
            raise MissingDataError(path, what, fix) from None
        raise AnnotationError(path, f"cannot read the {what} ({err.strerror})", fix) from None
    if path.is_dir():
        raise AnnotationError(path, f"is a folder, not the {what} file", fix)
    if size == 0:
        raise AnnotationError(path, f"the {what} file is empty (0 bytes)", fix)
    return path


def read_json(path: Path, what: str, fix: str, top: type = dict, lists: tuple[str, ...] = ()):
    """The parsed file (shared, read-only), checked to be a `top` holding the `lists`."""
    annotation_file(path, what, fix)
    try:
        data = load_json_shared(path, what, fix)
    except OSError as err:  # unreadable (permissions, a vanished mount)
        raise AnnotationError(path, f"cannot read the {what} ({err.strerror})", fix) from None
    if not isinstance(data, top):
        raise AnnotationError(
            path, f"the top level is a JSON {_kind(data)}, expected a JSON {_kind(top())}", fix
        )
    for key in lists:
        if not isinstance(data.get(key), list):
            got = "missing" if key not in data else f"a {_kind(data[key])}"
            raise AnnotationError(path, f'"{key}" is {got}, expected a list', fix)
    return data


def _kind(v) -> str:
    return {dict: "object", list: "array", str: "string"}.get(type(v), type(v).__name__)


def element_problem(item, fields: dict[str, Field]) -> str | None:
    """Why `item` is not an object with `fields`, or None."""
    if not isinstance(item, dict):
        return f"is a {_kind(item)} ({_short(item)}), not an object"
    for key, (ok, expected) in fields.items():
        if key not in item:
            return f'has no "{key}"'
        if not ok(item[key]):
            return f'has "{key}" = {_short(item[key])}, expected {expected}'
    return None


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def first_bad(path: Path, section: str, items, fields: dict[str, Field], fix: str):
    """The `AnnotationError` naming the first element of `items` that lacks `fields`, or None."""
    pairs = items.items() if isinstance(items, dict) else enumerate(items)
    for k, item in pairs:
        if problem := element_problem(item, fields):
            label = f"{section}[{k!r}]" if isinstance(k, str) else f"{section}[{k}]"
            if isinstance(item, dict) and "id" in item:
                label += f" (id {_short(item['id'])})"
            elif isinstance(item, dict) and isinstance(item.get("file_name"), str):
                label += f" ({item['file_name']})"
            return AnnotationError(path, f"{label} {problem}", fix)
    return None


Sections = dict[str, tuple[object, dict[str, Field]]]  # name → (items, fields)


def find_bad(path: Path, fix: str, sections: Sections) -> AnnotationError | None:
    """The error naming the first bad element of `sections`, or None."""
    for section, (items, fields) in sections.items():
        if (bad := first_bad(path, section, items, fields, fix)) is not None:
            return bad
    return None


@contextlib.contextmanager
def diagnosing(path: Path, fix: str, sections: Sections):
    """Turn a failure of the block into the `AnnotationError` of the first bad element of
    `sections`; a generic one naming the file when none is found."""
    try:
        yield
    except VsmKitError:
        raise
    except SHAPE_ERRORS as err:
        raise find_bad(path, fix, sections) or AnnotationError(
            path, f"unexpected content ({type(err).__name__}: {err})", fix
        ) from None


def boxes_xyxy(bboxes: list) -> np.ndarray:
    """float32 [n, 4] xyxy of xywh `bboxes`; ValueError unless each is four finite numbers."""
    b = np.asarray(bboxes, dtype=np.float32)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4 or not np.isfinite(b).all():
        raise ValueError("a bbox is not four finite numbers")
    return xywh_to_xyxy(b)


def ann_arrays(annotations: list[dict], image_row: dict) -> tuple[np.ndarray, ...]:
    """(image row, category id, xyxy box) arrays for COCO-style annotations.

    `image_row` maps image id → record row; annotations whose image is not a record get row -1.
    Raises one of `SHAPE_ERRORS` on a bad element (run it under `diagnosing`)."""
    n = len(annotations)
    rows = np.fromiter((image_row.get(a["image_id"], -1) for a in annotations), np.int64, n)
    cats = np.fromiter((a["category_id"] for a in annotations), np.int64, n)
    return rows, cats, boxes_xyxy([a["bbox"] for a in annotations])


def index_arrays(path: Path, by_file, file_row: dict, fix: str) -> tuple[np.ndarray, ...]:
    """`ann_arrays` of a preprocessed `image2bboxes.json` (file name → list of boxes)."""
    with diagnosing(path, fix, {}):
        try:
            anns = [
                {"image_id": f, "category_id": b["category_id"], "bbox": b["bbox"]}
                for f, boxes in by_file.items()
                for b in boxes
            ]
            return ann_arrays(anns, file_row)
        except SHAPE_ERRORS:
            for f, boxes in by_file.items():
                if not isinstance(boxes, list):
                    raise AnnotationError(
                        path, f"[{f!r}] is a {_kind(boxes)}, not a list of boxes", fix
                    ) from None
                if (bad := first_bad(path, f"[{f!r}]", boxes, INDEX_BOX, fix)) is not None:
                    raise bad from None
            raise
