"""Search evaluation on a V*Bench-format folder: images in subfolders, each beside a json of the
same stem whose `target_object` names pair with `bbox` boxes (xywh pixels). As the original does,
every named target of every image is searched for; a search that found the target (its box was
confident, or the best fallback reached `confidence_low`) is a hit when its box overlaps the
annotated one with IoU > 0.5; one that did not is a miss with path length 0, whatever the IoU of
its fallback box (§10.5)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm.auto import tqdm

from ..data.boxes import xywh_to_xyxy
from ..data.images import load_rgb
from ..errors import VsmKitError
from ..fsutil import atomic_write
from ..jsonio import dump_json_bytes, load_json
from .config import SearchConfig
from .guided import SearchModel, visual_search

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
HIT_IOU = 0.5  # a hit needs IoU above this
_ANNOTATION_FIX = (
    "the json needs `target_object` (a list of names) and `bbox` (one [x, y, w, h] in pixels "
    "per name)"
)


class BenchFormatError(VsmKitError, ValueError):
    """A bench folder or annotation that cannot be used; the message names the file and why."""

    def __init__(self, path: Path, problem: str, fix: str = _ANNOTATION_FIX):
        self.path = path
        super().__init__(f"V*Bench {path}: {problem}.\n  Fix: {fix}")


class BenchOptionError(VsmKitError, ValueError):
    """An `evaluate_bench` argument out of range; the message names it and the fix."""


@dataclass(frozen=True)
class BenchSample:
    """One target of one image. `box_xywh` in image pixels."""

    folder: str  # the image's folder relative to the bench root ("." for the root itself)
    image: Path
    target: str
    box_xywh: tuple[float, float, float, float]


@dataclass
class Bench:
    root: Path
    samples: list[BenchSample]
    unpaired: list[str]  # files relative to the root: an image without its json, or the reverse


def load_bench(root: str | Path) -> Bench:
    """Every (image, target) pair under `root`, in folder then file-name order. A json that is
    missing a field or malformed raises `BenchFormatError` / `MalformedJsonError`."""
    root = Path(root)
    if not root.is_dir():
        raise BenchFormatError(root, "not a folder", "give the folder holding the image folders")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root))
    images: dict[Path, Path] = {}
    for p in files:
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.with_suffix("") in images:  # which one would its json describe?
                other = images[p.with_suffix("")].name
                raise BenchFormatError(p, f"{other} has the same stem", "keep one of them")
            images[p.with_suffix("")] = p
    jsons = {p.with_suffix(""): p for p in files if p.suffix == ".json"}
    samples = []
    for stem, image in images.items():
        if stem in jsons:
            folder = image.parent.relative_to(root).as_posix()
            for target, box in _annotation(jsons[stem]):
                samples.append(BenchSample(folder, image, target, box))
    unpaired = [images[s] for s in images.keys() - jsons.keys()]
    unpaired += [jsons[s] for s in jsons.keys() - images.keys()]
    return Bench(root, samples, sorted(p.relative_to(root).as_posix() for p in unpaired))


def _annotation(path: Path) -> list[tuple[str, tuple[float, float, float, float]]]:
    ann = load_json(path, "V*Bench annotation")
    if not isinstance(ann, dict):
        raise BenchFormatError(path, f"expected a JSON object, found {type(ann).__name__}")
    for key in ("target_object", "bbox"):
        if not isinstance(ann.get(key), list):
            raise BenchFormatError(path, f"`{key}` is missing or not a list")
    names, boxes = ann["target_object"], ann["bbox"]
    if not names or len(names) != len(boxes):
        raise BenchFormatError(path, f"{len(names)} target_object name(s) but {len(boxes)} bbox")
    out = []
    for name, box in zip(names, boxes, strict=True):
        if not isinstance(name, str) or not name.strip():
            raise BenchFormatError(path, f"target_object {name!r} is not a name")
        ok = isinstance(box, list) and len(box) == 4
        if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            raise BenchFormatError(path, f"bbox {box!r} of {name!r} is not [x, y, w, h]")
        if box[2] <= 0 or box[3] <= 0:
            raise BenchFormatError(path, f"bbox {box!r} of {name!r} has no area")
        out.append((name, tuple(float(v) for v in box)))
    return out


@dataclass(frozen=True)
class SampleRecord:
    """One search's outcome; one line of the per-sample log. Boxes in image pixels, xywh."""

    folder: str
    image: str  # relative to the bench root
    target: str
    gt_xywh: list[float]
    pred_xywh: list[float] | None
    iou: float  # of the returned box, a fallback's below confidence_low included
    hit: bool  # found and iou > HIT_IOU
    found: bool
    score: float
    path_length: int  # as scored: the search's path length when found, else 0
    steps: int  # patches visited
    model_calls: int
    encodes: int
    seconds: float  # the search alone, image decoding excluded


@dataclass(frozen=True)
class Summary:
    samples: int
    hits: int
    success_rate: float  # hits / samples
    mean_path_length_found: float | None  # over the searches that found the target, else None
    mean_path_length_hits: float | None  # what the original prints; None without hits
    mean_model_calls: float
    mean_seconds: float

    @classmethod
    def of(cls, records: list[SampleRecord]) -> Summary:
        hits = [r for r in records if r.hit]
        found = [r for r in records if r.found]  # the others' path length 0 is no length
        return cls(
            samples=len(records),
            hits=len(hits),
            success_rate=len(hits) / len(records),
            mean_path_length_found=_mean(r.path_length for r in found) if found else None,
            mean_path_length_hits=_mean(r.path_length for r in hits) if hits else None,
            mean_model_calls=_mean(r.model_calls for r in records),
            mean_seconds=_mean(r.seconds for r in records),
        )


@dataclass
class BenchReport:
    root: Path
    config: SearchConfig
    batch_siblings: bool
    records: list[SampleRecord]
    unpaired: list[str] = field(default_factory=list)

    @property
    def summary(self) -> Summary:
        return Summary.of(self.records)

    @property
    def per_folder(self) -> dict[str, Summary]:
        folders: dict[str, list[SampleRecord]] = {}
        for r in self.records:
            folders.setdefault(r.folder, []).append(r)
        return {name: Summary.of(rs) for name, rs in folders.items()}

    def to_dict(self) -> dict:
        """The summaries and settings; the records go to the log (`write_log`)."""
        return {
            "bench": str(self.root),
            "summary": asdict(self.summary),
            "per_folder": {k: asdict(v) for k, v in self.per_folder.items()},
            "unpaired": self.unpaired,
            "batch_siblings": self.batch_siblings,
            "config": self.config.to_dict(),
        }

    def __str__(self) -> str:
        s = self.summary
        found, hits = (_text(v) for v in (s.mean_path_length_found, s.mean_path_length_hits))
        return (
            f"{s.hits}/{s.samples} hits (success rate {s.success_rate:.1%}), mean path length "
            f"{hits} over hits ({found} when found), {s.mean_model_calls:.1f} model calls, "
            f"{s.mean_seconds:.2f} s per search"
        )


def evaluate_bench(
    model: SearchModel,
    bench: str | Path | Bench,
    config: SearchConfig | None = None,
    *,
    batch_siblings: bool = False,
    limit: int | None = None,
    progress: bool = True,
) -> BenchReport:
    """Search every target of the bench (the first `limit` samples when given) and score it."""
    bench = bench if isinstance(bench, Bench) else load_bench(bench)
    if limit is not None and limit < 1:
        raise BenchOptionError(
            f"limit must be at least 1, got {limit}.\n  Fix: give a positive count (--limit N), "
            "or None to search every target"
        )
    samples = bench.samples[:limit]
    if not samples:
        raise BenchFormatError(
            bench.root, "no image has an annotation json beside it", "check the folder"
        )
    config = config or SearchConfig()
    records: list[SampleRecord] = []
    image_path, image = None, None
    bar = tqdm(samples, desc="search-eval", unit="target", disable=not progress)
    for s in bar:
        if s.image != image_path:  # the samples of one image are consecutive
            image_path, image = s.image, load_rgb(s.image)
        result = visual_search(model, image, s.target, config, batch_siblings=batch_siblings)
        pred = None if result.box_xywh is None else [float(v) for v in result.box_xywh]
        iou = _iou(pred, s.box_xywh)  # logged for every search, scored only for found ones
        records.append(
            SampleRecord(
                folder=s.folder,
                image=s.image.relative_to(bench.root).as_posix(),
                target=s.target,
                gt_xywh=list(s.box_xywh),
                pred_xywh=pred,
                iou=iou,
                hit=result.found and iou > HIT_IOU,
                found=result.found,
                score=float(result.score),
                path_length=result.path_length if result.found else 0,
                steps=len(result.steps),
                model_calls=result.model_calls,
                encodes=result.encodes,
                seconds=result.seconds,
            )
        )
        bar.set_postfix(hits=sum(r.hit for r in records))
    return BenchReport(bench.root, config, batch_siblings, records, bench.unpaired)


def write_log(report: BenchReport, path: str | Path) -> Path:
    """The per-sample records as JSON lines, written whole or not at all."""
    path = Path(path)
    with atomic_write(path) as f:
        for r in report.records:
            f.write(dump_json_bytes(asdict(r)) + b"\n")
    return path


def summary_table(report: BenchReport) -> list[dict]:
    """One row per folder and a last row `all`, rounded for display (e.g. in a notebook)."""
    rows = []
    for folder, s in [*report.per_folder.items(), ("all", report.summary)]:
        found, hits = s.mean_path_length_found, s.mean_path_length_hits
        rows.append(
            {
                "folder": folder,
                "samples": s.samples,
                "hits": s.hits,
                "success rate": round(s.success_rate, 3),
                "mean path length (hits)": None if hits is None else round(hits, 2),
                "mean path length (found)": None if found is None else round(found, 2),
                "mean model calls": round(s.mean_model_calls, 2),
                "mean seconds": round(s.mean_seconds, 3),
            }
        )
    return rows


def _hidden(path: Path, root: Path) -> bool:
    """Inside a hidden folder such as `.ipynb_checkpoints`, or a hidden file itself."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _iou(pred_xywh, gt_xywh) -> float:
    """IoU of two xywh pixel boxes; 0 without a prediction."""
    if pred_xywh is None:
        return 0.0
    boxes = torch.from_numpy(xywh_to_xyxy(np.array([pred_xywh, gt_xywh])))
    return float(box_iou(boxes[:1], boxes[1:])[0, 0])


def _text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _mean(values) -> float:
    values = list(values)
    return math.fsum(values) / len(values)
