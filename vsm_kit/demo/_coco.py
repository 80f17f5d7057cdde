"""COCO-2017 images with their instances, COCO-Stuff label maps and stuff json, PACO-LVIS
objects and parts, and the two VQA conversation files that use the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..data import tree
from ..data.classes import cocostuff_classes, cocostuff_ignored
from ._draw import (
    COLORS,
    THING_SHAPES,
    Canvas,
    add_part,
    cells,
    make_thing,
    polygon_extent,
    save_jpeg,
    uncompressed_rle,
    with_article,
)
from ._truth import TruthRecord, TruthTarget, xywh_rows

# demo thing → (PACO object category or None, its part); shapes: `THING_SHAPES`
THINGS = {
    "cup": ("mug", "handle"),
    "bottle": ("bottle", "cap"),
    "car": ("car_(automobile)", "wheel"),
    "knife": ("knife", "blade"),
    "chair": ("chair", "back"),
    "dog": (None, None),
    "kite": (None, None),
    "clock": (None, None),
    "umbrella": (None, None),
    "book": (None, None),
    "skis": (None, None),
    "person": (None, None),
}
PACO_THINGS = [k for k, v in THINGS.items() if v[0]]
# background bands: (stuff names to pick from, share of the height)
BANDS = (
    (("sky", "clouds", "ceiling-other"), 0.35),
    (("wall-concrete", "tree", "building-other", "fence"), 0.3),
    (("grass", "road", "floor-wood", "sand"), 0.35),
)
STUFF_COLORS = {
    "sky": (135, 185, 235),
    "clouds": (215, 220, 230),
    "ceiling-other": (200, 195, 185),
    "wall-concrete": (165, 160, 150),
    "tree": (60, 110, 55),
    "building-other": (150, 120, 100),
    "fence": (170, 140, 100),
    "grass": (95, 160, 70),
    "road": (95, 95, 100),
    "floor-wood": (165, 120, 75),
    "sand": (215, 195, 145),
}
SIZES = ((240, 320), (360, 480), (300, 400), (480, 360))


def coco_id(name: str) -> int:
    return cocostuff_classes().index(name) + 1


def stuff_json_name(name: str) -> str:
    return "sky-other" if name == "sky" else name  # the stuff json uses the official name


def write_coco_family(ds: Path, rng: np.random.Generator, scale: int, dump) -> dict:
    n = 16 * scale
    ids = sorted(rng.choice(np.arange(9, 581_929), size=n, replace=False).tolist())
    images, things_anns, stuff_anns, paco_images, paco_anns = [], [], [], [], []
    truth = {"cocostuff": [], "paco_lvis": []}
    scenes = []
    paco_cats = _paco_categories()
    paco_cat_id = {c["name"]: c["id"] for c in paco_cats}
    for k, image_id in enumerate(ids):
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        fname = f"{image_id:012d}.jpg"
        images.append(_image_entry(image_id, fname, h, w))
        canvas = Canvas(h, w, rng)
        label = np.full((h, w), 255, dtype=np.uint8)
        bands = _paint_bands(canvas, label, rng)
        unlabeled = label == 255
        things, crowd = _paint_things(canvas, label, rng, k)
        thing_pixels = np.zeros((h, w), bool)
        for m in [t.mask for t in things] + ([crowd] if crowd is not None else []):
            thing_pixels |= m
        # --- COCO instances
        boxes_by_cat: dict[int, list] = {}
        for t in things:
            cat = coco_id(t.name)
            things_anns.append(
                _ann(len(things_anns) + 1, image_id, cat, t.polygons, t.bbox, float(t.mask.sum()))
            )
            boxes_by_cat.setdefault(cat, []).append(t.bbox)
        if crowd is not None:  # iscrowd=1 with uncompressed RLE, as COCO stores crowds
            bbox = _mask_bbox(crowd)
            cat = coco_id("person")
            things_anns.append(
                _ann(
                    len(things_anns) + 1,
                    image_id,
                    cat,
                    uncompressed_rle(crowd),
                    bbox,
                    float(crowd.sum()),
                    iscrowd=1,
                )
            )
            boxes_by_cat.setdefault(cat, []).append(bbox)
        # --- COCO-Stuff stuff annotations: band minus things minus the unlabeled corner
        for name, m in bands.items():
            region = m & ~thing_pixels & ~unlabeled
            if region.any():
                bbox = _rle_ann(stuff_anns, image_id, coco_id(name), region)
                boxes_by_cat.setdefault(coco_id(name), []).append(bbox)
        if thing_pixels.any():
            _rle_ann(stuff_anns, image_id, 183, thing_pixels)  # "other" covers all things
        rec = TruthRecord(f"{tree.path('coco', 'images')}/{fname}")
        for value in np.unique(label).tolist():
            if value == 255 or value in cocostuff_ignored():
                continue
            rec.targets.append(
                TruthTarget(
                    cocostuff_classes()[value], xywh_rows(boxes_by_cat[value + 1]), label == value
                )
            )
        truth["cocostuff"].append(rec)
        # --- PACO objects and their parts
        if any(t.parts for t in things):
            paco_images.append(_image_entry(image_id, f"train2017/{fname}", h, w))
            prec = TruthRecord(f"{tree.path('coco', 'images')}/{fname}")
            for t in things:
                if not t.parts:
                    continue
                obj, part = THINGS[t.name][0], t.parts[0]
                short = obj.split("_(")[0]
                for cat, polygons, m, text in (
                    (obj, t.polygons, t.mask, short),
                    (f"{obj}:{part.name}", part.polygons, part.mask, f"{short} {part.name}"),
                ):
                    bbox = polygon_extent(polygons)
                    paco_anns.append(
                        _ann(
                            len(paco_anns) + 1,
                            image_id,
                            paco_cat_id[cat],
                            polygons,
                            bbox,
                            float(m.sum()),
                        )
                    )
                    prec.targets.append(TruthTarget(text, xywh_rows([bbox]), m))
            truth["paco_lvis"].append(prec)
        # --- files: one grayscale JPEG and one with an EXIF rotation tag, as COCO has
        im = canvas.image("L" if k == 3 else "RGB")
        rotate = 6 if k == 4 else None
        save_jpeg(im, tree.at(ds, "coco", "images") / fname, exif_orientation=rotate)
        label_maps = tree.at(ds, "cocostuff", "label_maps")
        label_maps.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label, "L").save(label_maps / f"{image_id:012d}.png")
        scenes.append((fname, things, list(bands)[-1]))
    dump(tree.at(ds, "coco", "instances"), _coco_json(images, things_anns, _thing_categories()))
    dump(
        tree.at(ds, "cocostuff", "annotations"),
        _coco_json(images, stuff_anns, _stuff_categories()),
    )
    dump(
        tree.at(ds, "paco_lvis", "annotations"),
        _coco_json(paco_images, paco_anns, paco_cats),
    )
    truth.update(_write_vqa(ds, scenes, dump))
    return truth


def _paint_bands(canvas: Canvas, label: np.ndarray, rng) -> dict[str, np.ndarray]:
    """Three stuff bands top to bottom; a top-left corner stays unlabeled (255)."""
    h, w = label.shape
    bands, y = {}, 0
    for j, (names, share) in enumerate(BANDS):
        name = names[int(rng.integers(len(names)))]
        y1 = h if j == len(BANDS) - 1 else y + int(share * h)
        m = np.zeros((h, w), bool)
        m[y:y1] = True
        bands[name] = m
        canvas.paint(m, STUFF_COLORS[name])
        label[m] = coco_id(name) - 1
        y = y1
    corner = np.zeros((h, w), bool)
    corner[: h // 8, : w // 6] = True
    canvas.paint(corner, (120, 120, 120))
    label[corner] = 255
    return bands


def _paint_things(canvas: Canvas, label: np.ndarray, rng, k: int):
    """Things in separate cells. Image 0 adds a crowd, image 1 the two-part skis, image 2 has no
    things, odd images carry a PACO object with its part."""
    h, w = label.shape
    n_things = 0 if k == 2 else int(rng.integers(2, 5))
    pool = [t for t in THINGS if t not in ("skis", "person")]
    names = [str(x) for x in rng.choice(pool, n_things, replace=False)]
    if k == 1:
        names[0] = "skis"
    if k % 2 == 1 and not set(names) & set(PACO_THINGS):
        names[-1] = str(rng.choice([t for t in PACO_THINGS if t not in names]))
    boxes = cells(rng, h, w, n_things + (k == 0), top=0.3)
    things = []
    for box, name in zip(boxes, names, strict=False):
        t = make_thing(name, str(rng.choice(list(COLORS))), THING_SHAPES[name], box, h, w)
        canvas.paint_thing(t)
        label[t.mask] = coco_id(name) - 1
        if k % 2 == 1 and THINGS[name][0]:
            p = add_part(t, THINGS[name][1], rng, h, w)
            canvas.paint(p.mask, tuple(255 - c for c in COLORS[t.color]))
        things.append(t)
    crowd = None
    if k == 0:
        x0, y0, x1, y1 = boxes[n_things]
        crowd = np.zeros((h, w), bool)
        for j in range(4):
            cx = x0 + (x1 - x0) * (j + 0.5) / 4
            body = (cx - (x1 - x0) / 10, y0, cx + (x1 - x0) / 10, y1)
            crowd |= make_thing("person", "black", "ellipse", body, h, w).mask
        canvas.paint(crowd, COLORS["black"])
        label[crowd] = coco_id("person") - 1
    return things, crowd


def _mask_bbox(mask: np.ndarray) -> list[float]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return [float(v) for v in mask_utils.toBbox(rle)]


def _image_entry(image_id: int, fname: str, h: int, w: int) -> dict:
    return {
        "license": 1,
        "file_name": fname,
        "coco_url": "",
        "height": h,
        "width": w,
        "date_captured": "2013-11-14 11:18:45",
        "flickr_url": "",
        "id": image_id,
    }


def _ann(ann_id, image_id, cat, segmentation, bbox, area, iscrowd=0) -> dict:
    return {
        "segmentation": segmentation,
        "area": area,
        "iscrowd": iscrowd,
        "image_id": image_id,
        "bbox": bbox,
        "category_id": cat,
        "id": ann_id,
    }


def _rle_ann(anns: list, image_id: int, cat: int, region: np.ndarray) -> list[float]:
    """Append a compressed-RLE annotation (as the stuff json stores them); return its bbox."""
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    anns.append(_ann(10_000_000 + len(anns), image_id, cat, seg, bbox, float(region.sum())))
    return bbox


def _coco_json(images, annotations, categories) -> dict:
    return {
        "info": {"description": "vsm_kit demo world", "version": "1.0", "year": 2017},
        "licenses": [{"url": "", "id": 1, "name": "demo"}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }


def _thing_categories() -> list[dict]:
    names = cocostuff_classes()[:91]
    missing = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91}  # ids COCO never annotates
    return [
        {"supercategory": "thing", "id": i + 1, "name": n}
        for i, n in enumerate(names)
        if i + 1 not in missing
    ]


def _stuff_categories() -> list[dict]:
    cats = [
        {"supercategory": "stuff", "id": i + 1, "name": stuff_json_name(n)}
        for i, n in enumerate(cocostuff_classes())
        if i >= 91
    ]
    return cats + [{"supercategory": "other", "id": 183, "name": "other"}]


def _paco_categories() -> list[dict]:
    cats = []
    for obj, part in sorted({v for v in THINGS.values() if v[0]}):
        cats.append({"supercategory": "OBJECT", "id": len(cats) + 1, "name": obj})
        cats.append({"supercategory": "PART", "id": len(cats) + 1, "name": f"{obj}:{part}"})
    return cats


def _write_vqa(ds: Path, scenes, dump) -> dict:
    instruct, locations = [], []
    q_loc = (
        "According to the common sense knowledge and possible visual cues, what is the most "
        "likely location of the {} in the image?"
    )
    for fname, things, ground in scenes:
        if not things:
            continue
        listing = " and ".join(with_article(f"{t.color} {t.name}") for t in things)
        t0 = things[0]
        instruct.append(
            {
                "id": fname[:-4],
                "image": fname,
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat objects can you see in this image?"},
                    {"from": "gpt", "value": f"I can see {listing}."},
                    {"from": "human", "value": f"What colour is the {t0.name}?"},
                    {"from": "gpt", "value": f"The {t0.name} is {t0.color}."},
                ],
            }
        )
        for t in things:
            locations.append(
                {
                    "id": f"{fname[:-4]}_{t.name}",
                    "image": fname,
                    "conversations": [
                        {"from": "human", "value": "<image>\n" + q_loc.format(t.name)},
                        {
                            "from": "gpt",
                            "value": f"The {t.name} is most likely to appear on the {ground}.",
                        },
                    ],
                }
            )
    dump(tree.at(ds, "llava_instruct_80k", "annotations"), instruct)
    dump(tree.at(ds, "possible_locations_conv_86k", "annotations"), locations)
    return {
        name: [
            TruthRecord(
                f"{tree.path('coco', 'images')}/{it['image']}", conversations=it["conversations"]
            )
            for it in items
        ]
        for name, items in (
            ("llava_instruct_80k", instruct),
            ("possible_locations_conv_86k", locations),
        )
    }
