"""Objects365-v2: JPEGs in patch folders and the train json with its path prefixes. Its images
are the demo's cluttered ones: 4–8 small boxed things on a busy background, as in the real set,
at the sizes of V*Bench's deepest search patches (each thing 24 px up to a quarter of the image's
width), so the detector learns the zoomed view the search ends on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import tree
from ..data.classes import objects365_classes
from ._draw import COLORS, THING_SHAPES, Canvas, background, cells, make_thing, save_jpeg
from ._truth import TruthRecord, TruthTarget, xywh_rows

# Objects365 category id → the demo name it is drawn as (its silhouette and texture; V*Bench's
# cup, book, kite and umbrella among them); "/" names exercise the alternatives the sampler
# picks from, drawn with the skis' and the knife's silhouettes (no V*Bench name's), untextured
CATEGORIES = {
    3: "chair",
    6: "car",
    9: "bottle",
    11: "cup",
    13: "two_part",
    19: "book",
    40: "umbrella",
    93: "dog",
    95: "clock",
    155: "kite",
    300: "arrow",
}
IMAGES = 128  # at scale 1
THINGS = (4, 8)  # per image, fewest and most
GRID = (4, 3)  # cells' (columns, rows), transposed for portrait images
SIZES = ((192, 256), (240, 320), (288, 384), (384, 512), (320, 240))  # (height, width)
MIN_SIDE = 24
# (json version folder, patch) per image group; patch16 onwards are v2 names
PATCHES = (("v1", 0), ("v1", 1), ("v2", 16))
KNOWN_MISSING = (
    "patch16/objects365_v2_00908726.jpg",
    "patch6/objects365_v1_00320532.jpg",
    "patch6/objects365_v1_00320534.jpg",
)


def write_objects365(ds: Path, rng: np.random.Generator, scale: int, dump) -> dict:
    names = objects365_classes()
    images, anns, truth = [], [], []
    n = IMAGES * scale
    for k in range(n):
        version, patch = PATCHES[k % len(PATCHES)]
        image_id = 100 + k
        stem = f"objects365_{version}_{image_id:08d}.jpg"
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        images.append(_image(image_id, f"images/{version}/patch{patch}/{stem}", h, w))
        canvas = Canvas(h, w, rng, base=np.asarray(background(rng, w, h), np.float32))
        count = int(rng.integers(THINGS[0], THINGS[1] + 1))
        cats = [int(c) for c in rng.choice(list(CATEGORIES), size=count, replace=True)]
        grid = GRID if w >= h else GRID[::-1]
        boxes = [_small(rng, cell) for cell in cells(rng, h, w, len(cats), grid=grid)]
        by_cat: dict[int, list] = {}
        for j, (cat, box) in enumerate(zip(cats, boxes, strict=True)):
            if k == 0 and j == 0:  # partly outside the image: the box reaches past the border
                # (the first cell's row has nothing to its left, so this overlaps no object)
                x0, y0, x1, y1 = box
                box = (-0.4 * (x1 - x0), y0, 0.6 * (x1 - x0), y1)
            name = CATEGORIES[cat]
            kind = THING_SHAPES.get(name, name)
            t = make_thing(name, str(rng.choice(list(COLORS))), kind, box, h, w)
            canvas.paint_thing(t)
            by_cat.setdefault(cat, []).append(t.bbox)
            anns.append(_ann(len(anns) + 1, image_id, cat, t.bbox))
        if k == 1:  # a zero-width box, as the real file has: kept as annotated, dropped in training
            anns.append(_ann(len(anns) + 1, image_id, cats[0], [10.0, 20.0, 0.0, 15.0]))
            by_cat[cats[0]].append([10.0, 20.0, 0.0, 15.0])
        save_jpeg(canvas.image(), tree.at(ds, "objects365", "images") / f"patch{patch}" / stem)
        truth.append(
            TruthRecord(
                f"{tree.path('objects365', 'images')}/patch{patch}/{stem}",
                [TruthTarget(names[c], xywh_rows(b)) for c, b in by_cat.items()],
            )
        )
    for j, rel in enumerate(KNOWN_MISSING):  # listed in the json, absent on disk
        patch, stem = rel.split("/")
        version = "v2" if "_v2_" in stem else "v1"
        image_id = 900_000 + j
        images.append(_image(image_id, f"images/{version}/{patch}/{stem}", 480, 640))
        anns.append(_ann(len(anns) + 1, image_id, 1, [5.0, 5.0, 50.0, 80.0]))
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"name": nm, "id": i} for i, nm in enumerate(names) if i > 0],
        "licenses": [{"name": "demo", "id": 1, "url": ""}],
    }
    dump(tree.at(ds, "objects365", "annotations"), data)
    return {"objects365": truth}


def _small(rng: np.random.Generator, cell) -> tuple[float, float, float, float]:
    """A box of MIN_SIDE px up to the cell's own size, anywhere inside the cell."""
    x0, y0, x1, y1 = cell
    bw, bh = (rng.uniform(min(MIN_SIDE, side), side) for side in (x1 - x0, y1 - y0))
    x, y = rng.uniform(x0, x1 - bw), rng.uniform(y0, y1 - bh)
    return x, y, x + bw, y + bh


def _image(image_id: int, file_name: str, h: int, w: int) -> dict:
    return {
        "height": h,
        "id": image_id,
        "license": 1,
        "width": w,
        "file_name": file_name,
        "url": "",
    }


def _ann(ann_id: int, image_id: int, cat: int, bbox: list[float]) -> dict:
    return {
        "id": ann_id,
        "iscrowd": 0,
        "isfake": 0,
        "area": round(bbox[2] * bbox[3], 2),
        "isreflected": 0,
        "bbox": bbox,
        "image_id": image_id,
        "category_id": cat,
    }
