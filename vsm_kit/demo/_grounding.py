"""MDETR-style GoldG annotations: the mixed COCO/VG file and the Flickr file (ids from 0 again,
sizes as strings), captions with `tokens_positive` character spans per box."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import tree
from ..data.sources.grounding import IMAGE_ROOTS
from ._draw import COLORS, Canvas, cells, make_thing, save_jpeg
from ._truth import TruthRecord, TruthTarget, xywh_rows

KINDS = {
    "ball": "ellipse",
    "box": "rectangle",
    "kite": "triangle",
    "flag": "rectangle",
    "star": "star",
    "plate": "ellipse",
}


def _caption(things) -> tuple[str, list[list[list[int]]]]:
    """'A red ball and an orange box next to a green kite.' and the span(s) of each phrase; the
    first phrase is given as two spans (colour, noun), which readers join with a space."""
    text, spans = "", []
    for j, t in enumerate(things):
        if j:
            text += " and " if j < len(things) - 1 else " next to "
        text += "an " if t.color[0] in "aeiou" else "a "
        s = len(text)
        text += f"{t.color} {t.name}"
        c_end = s + len(t.color)
        spans.append([[s, c_end], [c_end + 1, len(text)]] if j == 0 else [[s, len(text)]])
    return text[0].upper() + text[1:] + ".", spans


def write_grounding(ds: Path, rng: np.random.Generator, scale: int, dump) -> dict:
    scenes = []
    for k in range(10 * scale):
        source = ("coco", "vg", "flickr")[k % 3]
        h, w = ((375, 500), (333, 500), (500, 375))[int(rng.integers(3))]
        canvas = Canvas(h, w, rng, base=(170, 165, 150))
        names = [str(x) for x in rng.choice(list(KINDS), int(rng.integers(2, 4)), replace=False)]
        things = []
        for box, name in zip(cells(rng, h, w, len(names)), names, strict=True):
            t = make_thing(name, str(rng.choice(list(COLORS))), KINDS[name], box, h, w)
            canvas.paint(t.mask, COLORS[t.color])
            things.append(t)
        if source == "coco":
            fname = f"COCO_train2014_{300_000 + 11 * k:012d}.jpg"
        elif source == "vg":
            fname = f"{2_350_000 + 7 * k}.jpg"
        else:
            fname = f"{1_000_000_000 + 13 * k}.jpg"
        save_jpeg(canvas.image(), tree.at(ds, "goldg", IMAGE_ROOTS[source]) / fname)
        scenes.append((source, fname, h, w, things))
    truth = {}
    mixed = [s for s in scenes if s[0] != "flickr"]
    flickr = [s for s in scenes if s[0] == "flickr"]
    truth["goldg_mixed"] = _write(tree.at(ds, "goldg", "mixed"), mixed, dump, flickr=False)
    truth["flickr"] = _write(tree.at(ds, "goldg", "flickr"), flickr, dump, flickr=True)
    return truth


def _write(path: Path, scenes, dump, flickr: bool) -> list[TruthRecord]:
    """One image entry per caption; each image gets a second caption naming a subset of its
    things (so file names repeat, as in the real files). Ids restart at 0 in every file."""
    images, anns, truth = [], [], []
    for source, fname, h, w, things in scenes:
        for sentence_id, subset in enumerate((things, things[1:])):
            caption, spans = _caption(subset)
            image_id = len(images)
            entry = {
                "file_name": fname,
                "height": str(h) if flickr else h,
                "width": str(w) if flickr else w,
                "id": image_id,
                "caption": caption,
                "dataset_name": "flickr" if flickr else "mixed",
                "tokens_negative": [[0, len(caption)]],
                "sentence_id": sentence_id,
                "original_img_id": int(fname.split(".")[0].split("_")[-1]),
                "tokens_positive_eval": spans,
            }
            if not flickr:
                entry["data_source"] = source
            images.append(entry)
            rec = TruthRecord(f"{tree.path('goldg', IMAGE_ROOTS[source])}/{fname}", caption=caption)
            for t, sp in zip(subset, spans, strict=True):
                ann = {
                    "area": float(t.mask.sum()),
                    "iscrowd": 0,
                    "image_id": image_id,
                    "category_id": 1,
                    "id": len(anns) + 1,
                    "bbox": t.bbox,
                    "tokens_positive": sp,
                }
                if flickr:
                    ann["phrase_ids"] = len(anns)
                anns.append(ann)
                rec.targets.append(TruthTarget(f"{t.color} {t.name}", xywh_rows([t.bbox])))
            truth.append(rec)
    dump(
        path,
        {
            "images": images,
            "annotations": anns,
            "categories": [{"supercategory": "object", "id": 1, "name": "object"}],
        },
    )
    return truth
