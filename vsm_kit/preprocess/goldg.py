"""GoldG step: `MixedGrounding/goldG_train.json`, the mixed (COCO/VG) and Flickr MDETR files in
one list of `{"file_name", "caption", "data_source", "instances"}` records."""

from __future__ import annotations

from pathlib import Path

import orjson

from ..data import tree
from ..data.sources.grounding import IMAGE_ROOTS
from ..fsutil import atomic_write
from ._common import (
    Skips,
    StepResult,
    bbox_problem,
    byte_bar,
    is_int,
    require_inputs,
    require_usable,
)
from ._stream import BadInputError, stream_arrays

INPUTS = [("goldg", "mixed"), ("goldg", "flickr")]  # keys of `data.tree.PATHS`
OUTPUT = (
    "goldg",
    "combined",
)  # the training readers take it (`data.sources.grounding.goldg_entries`)
_FIX = "download MDETR's pre-processed annotations (mdetr_annotations) into MixedGrounding/ again"


def _image_problem(im, mixed: bool) -> str | None:
    if not isinstance(im, dict):
        return "is not an object"
    if not is_int(im.get("id")):
        return f"has id {im.get('id')!r}, not an integer"
    for key in ("file_name", "caption") + (("data_source",) if mixed else ()):
        if type(im.get(key)) is not str:
            return f"has {key} {im.get(key)!r}, not a string"
    if mixed and im["data_source"] not in IMAGE_ROOTS:
        return f"has data_source {im['data_source']!r}, not one of {', '.join(IMAGE_ROOTS)}"
    return None


def _annotation_problem(a) -> str | None:
    if not isinstance(a, dict):
        return "not an object"
    if not is_int(a.get("image_id")):
        return f"image_id {a.get('image_id')!r} is not an integer"
    spans = a.get("tokens_positive")
    if not (
        type(spans) is list
        and all(type(s) is list and len(s) == 2 and all(map(is_int, s)) for s in spans)
    ):
        return f"tokens_positive {spans!r} is not a list of [start, end] pairs"[:120]
    return bbox_problem(a.get("bbox"))


def build_goldg(data_dir: Path, progress: bool = True, fix_ids: bool = False) -> StepResult:
    """Mixed images in file order, then Flickr images (`data_source` "flickr"); annotations kept
    verbatim.

    As the original, each annotation goes to `records[image_id]` of the combined list, which
    puts Flickr boxes (their ids restart at 0) on mixed images, and a warning counts the
    annotations this moves; `fix_ids=True` attaches each one to the image its id names within
    its own file instead.

    Refused, with the output left as it was: a file that is not JSON, truncated, or without the
    top-level `images` and `annotations` arrays; an image entry without an integer `id`, string
    `file_name`/`caption` (and a known `data_source` in the mixed file), since records are found
    by list position and leaving one out would move every later annotation; a file without image
    entries or without a usable annotation. Counted, named in the warnings and left out:
    annotations that are not objects, or lack an integer `image_id`, `tokens_positive` spans or
    a bbox of 4 finite numbers (what the training readers use)."""
    inputs = require_inputs(data_dir, INPUTS, "goldg")
    records: list[bytes] = []  # serialised record heads, without instances
    anns: list[tuple[int, int, bytes]] = []  # (own-rule position, original-rule position, json)
    unknown = 0
    skips = Skips("annotations")
    with byte_bar(inputs, "goldg", progress) as bar:
        for path, source in zip(inputs, (None, "flickr"), strict=True):
            own_pos: dict[int, int] = {}
            pending = []
            n_images = n_anns = 0
            for batch in stream_arrays(path, ("images", "annotations"), bar.update):
                items = batch.parse_lenient()
                if batch.key == "annotations":
                    for k, a in enumerate(items, n_anns):
                        why = _annotation_problem(a)
                        if not why:
                            try:
                                pending.append((a["image_id"], orjson.dumps(a)))
                                continue
                            except orjson.JSONEncodeError as err:  # e.g. a 100-digit integer
                                why = str(err)
                        skips.add(path, "annotations", k, a, why)
                    n_anns += len(items)
                    continue
                for k, im in enumerate(items, n_images):
                    why = _image_problem(im, source is None)
                    if why:
                        raise BadInputError(
                            f"{path}: images[{k}] {why}; GoldG finds records by list position, "
                            f"so none can be left out. Fix: {_FIX}"
                        )
                    own_pos.setdefault(im["id"], len(records))
                    head = {
                        "file_name": im["file_name"],
                        "caption": im["caption"],
                        "data_source": source or im["data_source"],
                    }
                    records.append(orjson.dumps(head)[:-1])
                n_images += len(items)
            if not n_images:
                raise BadInputError(
                    f"{path}: no image entries, so no GoldG record; the existing output is left "
                    f"as it was. Fix: {_FIX}"
                )
            require_usable(path, n_anns, skips)
            for image_id, raw in pending:
                pos = own_pos.get(image_id, -1)
                unknown += pos < 0
                anns.append((pos, image_id, raw))
    differ = sum(1 for own, orig, _ in anns if own != orig)
    instances: list[list[bytes]] = [[] for _ in records]
    for own, orig, raw in anns:
        pos = own if fix_ids else orig
        if not fix_ids and not 0 <= pos < len(records):
            raise BadInputError(
                f"{', '.join(map(str, inputs))}: an annotation names image_id {pos}, beyond the "
                f"{len(records)} records; the original code fails here too. Fix: "
                "--fix-goldg-ids attaches annotations by their own file's ids"
            )
        if pos >= 0:
            instances[pos].append(raw)
    out = tree.at(data_dir, *OUTPUT)
    with atomic_write(out) as f:
        f.write(b"[")
        for k, (head, inst) in enumerate(zip(records, instances, strict=True)):
            f.write((b"," if k else b"") + head + b',"instances":[' + b",".join(inst) + b"]}")
        f.write(b"]")
    boxes = sum(len(i) for i in instances)
    result = StepResult(
        "goldg",
        out,
        "built",
        len(records),
        boxes,
        unknown_image_ids=unknown if fix_ids else 0,
        malformed=len(skips),
    )
    result.warnings += skips.warnings()
    if differ and not fix_ids:
        result.warnings.append(
            f"{differ} annotations sit on another image than their own file names, as in the "
            "original (records[image_id] of the combined list); --fix-goldg-ids attaches them "
            "to their own images"
        )
    if unknown and fix_ids:
        result.warnings.append(f"{unknown} annotations name image ids their file does not list")
    return result
