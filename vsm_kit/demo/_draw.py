"""Shapes, placement and painting for the demo world's synthetic images.

Objects are COCO polygons rasterised by pycocotools (the definition the annotation format uses);
painting fills exactly those pixels, so every mask and box in the files is what the image shows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from scipy import ndimage

from ..data.masks import decode_segmentation

COLORS = {
    "red": (205, 45, 40),
    "green": (45, 160, 70),
    "blue": (45, 85, 205),
    "yellow": (235, 205, 40),
    "orange": (240, 140, 30),
    "purple": (145, 65, 175),
    "white": (240, 240, 235),
    "black": (30, 30, 35),
    "brown": (125, 80, 45),
    "pink": (240, 150, 185),
}


# a surface texture per name (stripes, checks, dots in the object's own colour, lighter or
# darker): what a detector's patch sees of an object is its texture, as a real dog's fur or a
# real book's spines; names not listed are plain
THING_TEXTURES = {
    "book": "hstripes",
    "kite": "vstripes",
    "umbrella": "dots",
    "dog": "checks",
    "car": "dstripes",
    "clock": "grid",
    "chair": "astripes",
    "bottle": "wide_hstripes",
    "knife": "wide_vstripes",
}


def _texture(kind: str | None, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """1.0 where the texture's marks fall at image pixels (ys, xs), else 0.0. Marks cover at
    most 3/8 of a surface, so the object's own colour stays its most common one."""
    if kind is None:
        return np.zeros(ys.shape, np.float32)
    marks = {
        "hstripes": ys % 9 < 3,
        "vstripes": xs % 9 < 3,
        "dstripes": (xs + ys) % 9 < 3,
        "astripes": (xs - ys) % 9 < 3,
        "checks": (xs // 6) % 2 + (ys // 6) % 2 == 0,
        "dots": (xs % 8 < 3) & (ys % 8 < 3),
        "grid": (xs % 10 < 2) | (ys % 10 < 2),
        "wide_hstripes": ys % 14 < 5,
        "wide_vstripes": xs % 14 < 5,
    }[kind]
    return marks.astype(np.float32)


def surface(color, kind: str | None, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """float32 [n, 3]: the colour with its texture's marks shifted by 70 levels (darker on a
    light colour, lighter on a dark one)."""
    rgb = np.asarray(color, dtype=np.float32)
    shift = -70.0 if rgb.mean() > 110 else 70.0
    return rgb[None] + shift * _texture(kind, ys, xs)[:, None]


def with_article(phrase: str) -> str:
    """'a red ball', 'an orange box'."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def _flat(points: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in points.reshape(-1)]


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 20) -> list[float]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _flat(np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1))


def rectangle(x0: float, y0: float, x1: float, y1: float) -> list[float]:
    return _flat(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))


def triangle(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    """Three points only: the smallest polygon the format allows."""
    return _flat(np.array([[cx, cy - ry], [cx + rx, cy + ry], [cx - rx, cy + ry]]))


def star(cx: float, cy: float, rx: float, ry: float, k: int = 5) -> list[float]:
    t = np.linspace(-np.pi / 2, 1.5 * np.pi, 2 * k, endpoint=False)
    r = np.where(np.arange(2 * k) % 2 == 0, 1.0, 0.45)
    return _flat(np.stack([cx + rx * r * np.cos(t), cy + ry * r * np.sin(t)], axis=1))


def _outline(cx: float, cy: float, rx: float, ry: float, unit) -> list[float]:
    """A polygon given in unit coordinates (-1..1 on both axes) stretched over the box."""
    pts = np.asarray(unit, dtype=np.float64)
    return _flat(np.stack([cx + rx * pts[:, 0], cy + ry * pts[:, 1]], axis=1))


def diamond(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return _outline(cx, cy, rx, ry, [(0, -1), (1, 0), (0, 1), (-1, 0)])


def cross(cx: float, cy: float, rx: float, ry: float, a: float = 0.3) -> list[float]:
    unit = [(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a)]
    return _outline(cx, cy, rx, ry, unit + [(-1, a), (-1, -a), (-a, -a)])


def trapezoid(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return _outline(cx, cy, rx, ry, [(-0.5, -1), (0.5, -1), (1, 1), (-1, 1)])


def tee(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    unit = [(-1, -1), (1, -1), (1, -0.3), (0.35, -0.3), (0.35, 1), (-0.35, 1), (-0.35, -0.3)]
    return _outline(cx, cy, rx, ry, unit + [(-1, -0.3)])


def bottle(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    unit = [(-0.35, -1), (0.35, -1), (0.35, -0.5), (1, -0.2), (1, 1), (-1, 1), (-1, -0.2)]
    return _outline(cx, cy, rx, ry, unit + [(-0.35, -0.5)])


def arrow(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    unit = [(-1, -0.3), (0.2, -0.3), (0.2, -1), (1, 0), (0.2, 1), (0.2, 0.3), (-1, 0.3)]
    return _outline(cx, cy, rx, ry, unit)


SHAPES = {
    "ellipse": ellipse,
    "rectangle": rectangle,
    "triangle": triangle,
    "star": star,
    "diamond": diamond,
    "cross": cross,
    "trapezoid": trapezoid,
    "tee": tee,
    "bottle": bottle,
    "arrow": arrow,
}
# the shape of each name the COCO-family sources, refCOCO/+/g and V*Bench draw: one silhouette
# per name, so a detector can tell every name from every other by its look alone
THING_SHAPES = {
    "cup": "ellipse",
    "book": "rectangle",
    "kite": "triangle",
    "umbrella": "star",
    "dog": "cross",
    "car": "trapezoid",
    "clock": "diamond",
    "chair": "tee",
    "bottle": "bottle",
    "knife": "arrow",
    "skis": "two_part",
    "person": "ellipse",  # only as a crowd of thin ellipses
}


def make_polygons(kind: str, x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    """Polygons of a shape filling the box (x0, y0)-(x1, y1). `two_part` gives two pieces."""
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if kind == "rectangle":
        return [rectangle(x0, y0, x1, y1)]
    if kind == "two_part":  # two parallel bars, one annotation (a multi-part polygon)
        w = (x1 - x0) * 0.3
        return [rectangle(x0, y0, x0 + w, y1), rectangle(x1 - w, y0, x1, y1)]
    return [SHAPES[kind](cx, cy, rx, ry)]


def polygon_extent(polygons: list[list[float]]) -> list[float]:
    """COCO bbox of polygons: [x, y, w, h] of their vertices, 2 decimals."""
    pts = np.concatenate([np.asarray(p).reshape(-1, 2) for p in polygons])
    lo, hi = pts.min(0), pts.max(0)
    return [round(float(v), 2) for v in (lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1])]


@dataclass
class Part:
    name: str
    polygons: list[list[float]]
    mask: np.ndarray


@dataclass
class Thing:
    """A drawn object: `name` is the demo's own name, `color` a key of COLORS."""

    name: str
    color: str
    polygons: list[list[float]]
    mask: np.ndarray
    parts: list[Part] = field(default_factory=list)

    @property
    def bbox(self) -> list[float]:
        return polygon_extent(self.polygons)

    @property
    def center_x(self) -> float:
        b = self.bbox
        return b[0] + b[2] / 2


def cells(rng: np.random.Generator, h: int, w: int, n: int, top: float = 0.0, grid=(3, 2)):
    """`n` non-overlapping boxes (x0, y0, x1, y1) inside a `grid` (columns, rows) below `top`·h,
    so objects never occlude each other and each drawn region equals its annotation."""
    cols, rows = grid
    picks = rng.choice(cols * rows, size=min(n, cols * rows), replace=False)
    cw, ch = w / cols, h * (1 - top) / rows
    out = []
    for p in sorted(picks.tolist()):
        c, r = p % cols, p // cols
        bw, bh = cw * rng.uniform(0.45, 0.8), ch * rng.uniform(0.45, 0.8)
        x0 = c * cw + rng.uniform(0.05 * cw, cw - bw - 0.05 * cw)
        y0 = top * h + r * ch + rng.uniform(0.05 * ch, ch - bh - 0.05 * ch)
        out.append((x0, y0, x0 + bw, y0 + bh))
    return out


def make_thing(name: str, color: str, kind: str, box, h: int, w: int) -> Thing:
    polygons = make_polygons(kind, *box)
    return Thing(name, color, polygons, decode_segmentation(polygons, h, w))


def add_part(thing: Thing, part: str, rng: np.random.Generator, h: int, w: int) -> Part:
    """A part inside the object's bounding box and mask (e.g. a mug's handle)."""
    x, y, bw, bh = thing.bbox
    fx, fy = rng.uniform(0.3, 0.5), rng.uniform(0.25, 0.4)
    centres = [(x + bw / 2, y + bh * (rng.uniform(0.3, 0.55) + fy / 2))]
    depth = ndimage.distance_transform_edt(thing.mask)  # the object's most inward pixel next
    iy, ix = np.unravel_index(int(depth.argmax()), depth.shape)
    centres.append((ix + 0.5, iy + 0.5))
    # shrunk, at either centre, until the object holds it
    for s, (cx, cy) in itertools.product((1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1), centres):
        rx, ry = bw * fx * s / 2, bh * fy * s / 2
        polygons = [rectangle(cx - rx, cy - ry, cx + rx, cy + ry)]
        mask = decode_segmentation(polygons, h, w)
        if mask.any() and not (mask & ~thing.mask).any():
            break
    mask &= thing.mask
    p = Part(part, polygons, mask)
    thing.parts.append(p)
    return p


class Canvas:
    """An RGB float image with a soft texture; `paint` colours exactly the given mask."""

    def __init__(self, h: int, w: int, rng: np.random.Generator, base=(128, 128, 128)):
        self.h, self.w = h, w
        ys, xs = np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32)
        self._shade = 0.88 + 0.12 * np.sin(np.add.outer(ys / 31.0, xs / 23.0))
        self._noise = 6.0 * rng.standard_normal((h, w, 1), dtype=np.float32)
        self.rgb = np.empty((h, w, 3), dtype=np.float32)
        self.rgb[:] = base

    def paint(self, mask: np.ndarray, color, texture: str | None = None) -> None:
        ys, xs = np.nonzero(mask)
        base = surface(color, texture, ys, xs)
        self.rgb[ys, xs] = base * self._shade[ys, xs][:, None] + self._noise[ys, xs]

    def paint_thing(self, thing: Thing) -> None:
        """A thing in its colour and its name's texture."""
        self.paint(thing.mask, COLORS[thing.color], THING_TEXTURES.get(thing.name))

    def image(self, mode: str = "RGB") -> Image.Image:
        im = Image.fromarray(self.rgb.clip(0, 255).astype(np.uint8), "RGB")
        return im.convert(mode) if mode != "RGB" else im


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a bool mask: run lengths in column-major order, zeros first."""
    flat = np.asfortranarray(mask).reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0] == 1:
        runs = [0] + runs
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": runs}


def save_jpeg(im: Image.Image, path, exif_orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": 88}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    im.save(path, "JPEG", **kwargs)


CLUTTER_SIDE = (16, 160)
CLUTTER_PER_MPIX = 60


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A tinted texture (coarse blotches plus finer grain, mostly in brightness) under scattered
    muted shapes: clutter that keeps the saturated targets unique and compresses well."""
    layers = []
    for cell, lum, chroma, mean in ((64, 28, 10, rng.uniform(90, 170, 3)), (12, 10, 3, 128)):
        grid = (height // cell + 2, width // cell + 2)
        noise = mean + rng.normal(0, lum, (*grid, 1)) + rng.normal(0, chroma, (*grid, 3))
        layer = Image.fromarray(noise.clip(0, 255).astype(np.uint8), "RGB")
        layers.append(layer.resize((width, height), Image.BILINEAR))
    im = ImageChops.add(*layers, scale=1.0, offset=-128)  # the fine layer is centred on 128
    draw = ImageDraw.Draw(im)
    for _ in range(int(CLUTTER_PER_MPIX * width * height / 1e6)):
        side = rng.uniform(*CLUTTER_SIDE, size=2)
        x0, y0 = rng.uniform(0, width - side[0]), rng.uniform(0, height - side[1])
        color = rng.uniform(60, 200, size=3)
        muted = tuple(int(v) for v in color.mean() + 0.3 * (color - color.mean()))
        kind = str(rng.choice(["ellipse", "rectangle", "triangle", "star"]))
        for poly in make_polygons(kind, x0, y0, x0 + side[0], y0 + side[1]):
            draw.polygon(poly, fill=muted)
    return im
