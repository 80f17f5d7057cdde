"""V*Bench: large JPEGs with small targets (each at most 0.2 % of its image, whole inside one of
the search's deepest patches) among saturated distractors of the other target kinds on a
cluttered background, each beside a json of the same stem (`target_object` names, `bbox` xywh
pixels per name, `question`, `options` with the correct answer first), in the benchmark's two
folders: 6 + 3 × 2 = 12 targets at scale 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..search import SearchConfig, split
from ._draw import (
    COLORS,
    THING_SHAPES,
    THING_TEXTURES,
    background,
    make_polygons,
    polygon_extent,
    save_jpeg,
    surface,
)
from ._truth import TruthRecord, TruthTarget, xywh_rows

ROOT = "vstar_bench"
TARGETS = {name: THING_SHAPES[name] for name in ("cup", "book", "kite", "umbrella")}
TARGET_COLORS = ("red", "green", "blue", "yellow", "orange", "purple", "pink")  # saturated
# folder, targets per image, (width, height) of its images in name order: the first ones are the
# smallest, so a quick `search-eval --limit 2` searches small images
FOLDERS = (
    ("direct_attributes", 1, ((1024, 768),) * 3 + ((1280, 960), (1536, 1024), (2048, 1536))),
    ("relative_position", 2, ((1536, 1024), (1280, 1920), (2048, 1536))),
)
MIN_SIDE = 24  # pixels: a few tens, as small as the real bench's targets
MAX_AREA = 0.002  # of the image, per target box
DISTRACTORS = 4  # per image: the other target kinds, saturated, away from the targets


def write_vstar_bench(ds: Path, rng: np.random.Generator, scale: int, dump) -> dict:
    records = []
    per_folder = [len(sizes) * scale for _, _, sizes in FOLDERS]
    ids = rng.choice(np.arange(1_000, 100_000), size=sum(per_folder), replace=False)
    start = 0
    for (folder, n_targets, sizes), n in zip(FOLDERS, per_folder, strict=True):
        stems = sorted(f"sa_{i}" for i in ids[start : start + n].tolist())
        start += n
        for k, stem in enumerate(stems):
            width, height = sizes[k % len(sizes)]
            im = background(rng, width, height)
            objects = [str(t) for t in rng.choice(list(TARGETS), n_targets, replace=False)]
            colors = [str(c) for c in rng.choice(TARGET_COLORS, n_targets, replace=False)]
            boxes = _place(rng, width, height, n_targets)
            others = [name for name in TARGETS if name not in objects]
            for box in _spread(rng, width, height, DISTRACTORS, avoid=boxes):
                other, color = str(rng.choice(others)), str(rng.choice(TARGET_COLORS))
                _draw_target(im, other, color, box)
            bboxes = [
                _draw_target(im, t, c, b) for t, c, b in zip(objects, colors, boxes, strict=True)
            ]
            if n_targets == 1:
                question, options = _attribute_question(objects[0], colors[0], rng)
            else:
                question, options = _position_question(objects, bboxes)
            rel = f"{ROOT}/{folder}/{stem}.jpg"
            save_jpeg(im, ds / rel)
            dump(
                ds / ROOT / folder / f"{stem}.json",
                {
                    "target_object": objects,
                    "bbox": bboxes,
                    "question": question,
                    "options": options,
                },
            )
            targets = [TruthTarget(t, xywh_rows([b])) for t, b in zip(objects, bboxes, strict=True)]
            records.append(TruthRecord(rel, targets))
    return {"vstar_bench": records}


def _sides(rng: np.random.Generator, width: int, height: int) -> tuple[int, int]:
    """A target's box sides: half to all of MAX_AREA of the image, near square, each side at
    least MIN_SIDE and at most the square root of that area."""
    top = (MAX_AREA * width * height) ** 0.5
    area, ratio = rng.uniform(0.5, 1.0) * top**2, rng.uniform(0.75, 4 / 3)
    return tuple(
        int(np.clip(v, MIN_SIDE, top)) for v in ((area * ratio) ** 0.5, (area / ratio) ** 0.5)
    )


def deepest_patches(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The search's smallest patches (xywh) of an image, split as the search splits it with its
    default sizes."""
    smallest = SearchConfig().smallest_size(width, height)
    todo, out = [(0, 0, width, height)], []
    while todo:
        box = todo.pop()
        if min(box[2], box[3]) > smallest:
            todo.extend(split(box))
        else:
            out.append(box)
    return sorted(out)


def _place(rng: np.random.Generator, width: int, height: int, n: int) -> list[tuple]:
    """`n` integer boxes (x0, y0, x1, y1), each well inside one of the search's deepest patches
    (the tiny detector's 12×12 grid, the real one's being 48×48, can neither box a target cut
    by a patch border nor see it from a level higher); target j's patch lies in the j-th of n
    vertical slots, so which one is on the left is never in doubt."""
    out = []
    leaves = deepest_patches(width, height)
    for j in range(n):
        w, h = _sides(rng, width, height)
        slot = [
            (x, y, pw, ph)
            for x, y, pw, ph in leaves
            if j * width / n <= x and x + pw <= (j + 1) * width / n
        ]
        x, y, pw, ph = slot[int(rng.integers(len(slot)))]
        margin = max(w, h) // 4
        x0 = int(rng.integers(x + margin, x + pw - w - margin + 1))
        y0 = int(rng.integers(y + margin, y + ph - h - margin + 1))
        out.append((x0, y0, x0 + w, y0 + h))
    if n == 2 and rng.random() < 0.5:
        out.reverse()  # the first-named target is on the right as often as on the left
    return out


def _spread(rng, width: int, height: int, n: int, avoid: list[tuple]) -> list[tuple]:
    """`n` target-sized boxes that keep a box's side away from `avoid` and from each other."""
    out: list[tuple] = []
    while len(out) < n:
        w, h = _sides(rng, width, height)
        x0, y0 = int(rng.uniform(0.03, 0.97) * width - w), int(rng.uniform(0.03, 0.97) * height - h)
        box = (max(x0, 0), max(y0, 0), max(x0, 0) + w, max(y0, 0) + h)
        if all(_apart(box, other, max(w, h)) for other in avoid + out):
            out.append(box)
    return out


def _apart(a: tuple, b: tuple, gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _draw_target(im: Image.Image, name: str, color: str, box) -> list[int]:
    """Paint the name's shape in the colour and the name's texture; its `bbox` (xywh, whole
    pixels) is the extent of what was drawn."""
    polygons = make_polygons(TARGETS[name], *box)
    x, y, w, h = (round(v) for v in polygon_extent(polygons))
    x0, y0 = max(x - 1, 0), max(y - 1, 0)
    region = Image.new("L", (w + 3, h + 3))
    draw = ImageDraw.Draw(region)
    for poly in polygons:
        draw.polygon([v - (x0 if j % 2 == 0 else y0) for j, v in enumerate(poly)], fill=255)
    ys, xs = np.nonzero(np.asarray(region) > 0)
    pixels = np.asarray(im.crop((x0, y0, x0 + region.width, y0 + region.height))).copy()
    texture = THING_TEXTURES.get(name)
    pixels[ys, xs] = surface(COLORS[color], texture, ys + y0, xs + x0).clip(0, 255)
    im.paste(Image.fromarray(pixels), (x0, y0))
    return [x, y, w, h]


def _attribute_question(name: str, color: str, rng: np.random.Generator):
    others = [
        str(c) for c in rng.choice([c for c in TARGET_COLORS if c != color], 3, replace=False)
    ]
    options = [f"The color of the {name} is {c}." for c in [color, *others]]
    return f"What is the color of the {name}?", options


def _position_question(names: list[str], bboxes: list[list[int]]):
    a, b = names
    centers = [x + w / 2 for x, _, w, _ in bboxes]
    sides = ["left", "right"] if centers[0] < centers[1] else ["right", "left"]
    options = [f"The {a} is on the {s} side of the {b}." for s in sides]
    return f"Is the {a} on the left or right side of the {b}?", options
