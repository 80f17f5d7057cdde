"""GoldG step: `MixedGrounding/goldG_train.json`, the mixed (COCO/VG) and Flickr MDETR files in
one list of `{"file_name", "caption", "data_source", "instances"}` records."""

from __future__ import annotations

from pathlib import Path

import orjson

from ..data.sources.grounding import COMBINED, FLICKR, MIXED
from ..errors import VsmKitError
from ..fsutil import atomic_write
from ._common import StepResult, byte_bar, require_inputs
from ._stream import stream_arrays

INPUTS = [MIXED, FLICKR]
OUTPUT = COMBINED  # the training readers take it (`data.sources.grounding.goldg_entries`)


def build_goldg(data_dir: Path, progress: bool = True, fix_ids: bool = False) -> StepResult:
    """Mixed images in file order, then Flickr images (`data_source` "flickr"); annotations kept
    verbatim.

    As the original, each annotation goes to `records[image_id]` of the combined list, which
    puts Flickr boxes (their ids restart at 0) on mixed images, and a warning counts the
    annotations this moves; `fix_ids=True` attaches each one to the image its id names within
    its own file instead."""
    inputs = require_inputs(data_dir, INPUTS, "goldg")
    records: list[bytes] = []  # serialised record heads, without instances
    anns: list[tuple[int, int, bytes]] = []  # (own-rule position, original-rule position, json)
    unknown = 0
    with byte_bar(inputs, "goldg", progress) as bar:
        for path, source in zip(inputs, (None, "flickr"), strict=True):
            own_pos: dict[int, int] = {}
            pending = []
            for batch in stream_arrays(path, ("images", "annotations"), bar.update):
                if batch.key == "annotations":
                    pending.extend((a["image_id"], orjson.dumps(a)) for a in batch.parse())
                    continue
                for im in batch.parse():
                    own_pos.setdefault(im["id"], len(records))
                    head = {
                        "file_name": im["file_name"],
                        "caption": im["caption"],
                        "data_source": source or im["data_source"],
                    }
                    records.append(orjson.dumps(head)[:-1])
            for image_id, raw in pending:
                pos = own_pos.get(image_id, -1)
                unknown += pos < 0
                anns.append((pos, image_id if isinstance(image_id, int) else -1, raw))
    differ = sum(1 for own, orig, _ in anns if own != orig)
    instances: list[list[bytes]] = [[] for _ in records]
    for own, orig, raw in anns:
        pos = own if fix_ids else orig
        if not fix_ids and not 0 <= pos < len(records):
            raise VsmKitError(
                f"an annotation names image_id {pos}, beyond the {len(records)} records; the "
                "original code fails here too. Fix: --fix-goldg-ids attaches annotations by "
                "their own file's ids"
            )
        if pos >= 0:
            instances[pos].append(raw)
    out = data_dir / OUTPUT
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
    )
    if differ and not fix_ids:
        result.warnings.append(
            f"{differ} annotations sit on another image than their own file names, as in the "
            "original (records[image_id] of the combined list); --fix-goldg-ids attaches them "
            "to their own images"
        )
    if unknown and fix_ids:
        result.warnings.append(f"{unknown} annotations name image ids their file does not list")
    return result
