"""refCOCO / refCOCO+ / refCOCOg on shared COCO-2014 images, and refCLEF on saiapr images:
instances.json and refs(<splitBy>).p per dataset, with their split names."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from ..data import tree
from ..data.classes import cocostuff_classes
from ._draw import COLORS, THING_SHAPES, Canvas, cells, make_thing, save_jpeg
from ._truth import TruthRecord, TruthTarget, xywh_rows

COCO_THINGS = {
    name: THING_SHAPES[name]
    for name in ("dog", "car", "cup", "umbrella", "book", "kite", "clock", "chair")
}
CLEF_THINGS = {
    "man": "ellipse",
    "tree": "triangle",
    "house": "rectangle",
    "ball": "ellipse",
    "boat": "rectangle",
    "sign": "star",
}
COCO_SCENES = 384  # shared by refCOCO/+/g: every 6th is refCOCO val, 64 scenes of 2–3 objects
SPLITS = {
    "refcoco": ("train", "train", "train", "val", "testA", "testB"),
    "refcoco+": ("train", "train", "train", "val", "testA", "testB"),
    "refcocog": ("train", "train", "train", "val", "test"),
    "refclef": ("train", "train", "train", "val", "testA", "testB", "testC"),
}


def _position(thing, w: int) -> str:
    cx = thing.center_x
    return "left" if cx < w / 3 else "right" if cx > 2 * w / 3 else "middle"


def _sentences(ds: str, thing, others, w: int) -> list[str]:
    """Expressions in each dataset's style: refCOCO+ has no location words, refCOCOg is longer."""
    name, color = thing.name, thing.color
    if ds == "refcoco+":
        return [f"{color} {name}", f"the {color} one"]
    if ds == "refcocog":
        other = others[0].name if others else "background"
        return [f"a {color} {name} next to the {other}", f"the {name} that is {color}"]
    return [
        f"{color} {name}",
        f"{_position(thing, w)} {name}",
        f"the {name} on the {_position(thing, w)}",
    ]


def write_refer(ds: Path, rng: np.random.Generator, scale: int, dump) -> dict:
    truth = {}
    coco = _scenes(
        ds,
        rng,
        COCO_SCENES * scale,
        COCO_THINGS,
        tree.path("refcoco", "images"),
        lambda i: f"COCO_train2014_{i:012d}.jpg",
        id_base=200_000,
    )
    cats = [
        {"supercategory": "thing", "id": cocostuff_classes().index(n) + 1, "name": n}
        for n in COCO_THINGS
    ]
    cat_id = {c["name"]: c["id"] for c in cats}
    for name in ("refcoco", "refcoco+", "refcocog"):
        truth[name] = _write_dataset(ds, name, coco, cats, cat_id, rng, dump, polygons=True)
    clef = _scenes(
        ds,
        rng,
        8 * scale,
        CLEF_THINGS,
        tree.path("refclef", "images"),
        lambda i: f"{i // 1000:02d}/images/{i}.jpg",
        id_base=25_000,
    )
    clef_cats = [
        {"supercategory": "object", "id": j + 1, "name": n} for j, n in enumerate(CLEF_THINGS)
    ]
    truth["refclef"] = _write_dataset(
        ds,
        "refclef",
        clef,
        clef_cats,
        {c["name"]: c["id"] for c in clef_cats},
        rng,
        dump,
        polygons=False,
    )
    return truth


def _scenes(ds, rng, n, kinds, folder, file_name, id_base):
    scenes = []
    for k in range(n):
        image_id = id_base + 37 * k
        h, w = ((360, 480), (300, 400), (480, 360))[int(rng.integers(3))]
        canvas = Canvas(h, w, rng, base=(150, 160, 170))
        names = [
            str(x) for x in rng.choice(list(kinds), size=int(rng.integers(2, 4)), replace=False)
        ]
        things = []
        for box, name in zip(cells(rng, h, w, len(names)), names, strict=True):
            t = make_thing(name, str(rng.choice(list(COLORS))), kinds[name], box, h, w)
            canvas.paint_thing(t)
            things.append(t)
        rel = file_name(image_id)
        save_jpeg(canvas.image(), ds / folder / rel)
        scenes.append(
            {"id": image_id, "file_name": rel, "folder": folder, "h": h, "w": w, "things": things}
        )
    return scenes


def _write_dataset(ds, name, scenes, cats, cat_id, rng, dump, polygons: bool):
    splits = SPLITS[name]
    images, anns, refs, truth = [], [], [], []
    for k, sc in enumerate(scenes):
        split = splits[k % len(splits)]
        h, w = sc["h"], sc["w"]
        images.append({"file_name": sc["file_name"], "height": h, "width": w, "id": sc["id"]})
        rec = TruthRecord(f"{sc['folder']}/{sc['file_name']}")
        for j, t in enumerate(sc["things"]):
            ann_id = sc["id"] * 10 + j
            mask = t.mask
            if polygons:
                seg = t.polygons
            elif k == 1 and j == 0:  # refCLEF has annotations with an empty segmentation
                seg, mask = [], np.zeros_like(t.mask)
            else:  # refCLEF: a list of compressed RLE dicts
                rle = mask_utils.encode(np.asfortranarray(t.mask.astype(np.uint8)))
                seg = [{"size": rle["size"], "counts": rle["counts"].decode("ascii")}]
            anns.append(
                {
                    "segmentation": seg,
                    "area": float(t.mask.sum()),
                    "iscrowd": 0,
                    "image_id": sc["id"],
                    "bbox": t.bbox,
                    "category_id": cat_id[t.name],
                    "id": ann_id,
                }
            )
            others = [o for o in sc["things"] if o is not t]
            sents = _sentences(name, t, others, w)
            if split == "train":  # evaluation splits keep every expression (val: ≥ 24 in refCOCO)
                sents = sents[: int(rng.integers(1, 4))]
            ref_id = len(refs)
            sent_ids = [ref_id * 10 + s for s in range(len(sents))]
            refs.append(
                {
                    "sent_ids": sent_ids,
                    "file_name": sc["file_name"].rsplit(".", 1)[0] + f"_{ann_id}.jpg",
                    "ann_id": ann_id,
                    "ref_id": ref_id,
                    "image_id": sc["id"],
                    "split": split,
                    "sentences": [
                        {"tokens": s.split(), "raw": s, "sent_id": i, "sent": s}
                        for s, i in zip(sents, sent_ids, strict=True)
                    ],
                    "category_id": cat_id[t.name],
                }
            )
            if split == "train":
                rec.targets += [TruthTarget(s, xywh_rows([t.bbox]), mask) for s in sents]
        if rec.targets:
            truth.append(rec)
    instances = {"images": images, "annotations": anns, "categories": cats}
    dump(tree.at(ds, name, "instances"), instances)
    refs_path = tree.at(ds, name, "refs")
    refs_path.parent.mkdir(parents=True, exist_ok=True)
    with open(refs_path, "wb") as f:
        pickle.dump(refs, f, protocol=2)
    return truth
