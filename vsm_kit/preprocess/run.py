"""The preprocessing entry point: run the selected steps, skip those already up to date."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.stats import format_table
from ..errors import MissingDataError
from ..fsutil import is_up_to_date
from . import coco, goldg, objects365
from ._common import StepResult, Timer, peak_rss_mb

STEPS = {
    "coco": (coco.INPUTS, coco.OUTPUT),
    "objects365": (objects365.INPUTS, objects365.OUTPUT),
    "goldg": (goldg.INPUTS, goldg.OUTPUT),
}


@dataclass
class PreprocessSummary:
    steps: list[StepResult]

    def table(self, timings: bool = True) -> str:
        cols = ["step", "status", "images", "boxes", "skipped", "unknown ids"]
        if timings:
            cols += ["seconds", "peak RSS MB"]
        rows = []
        for r in self.steps:
            row = [r.step, r.status, r.images, r.boxes, r.skipped, r.unknown_image_ids]
            if timings:
                row += [f"{r.seconds:.2f}", f"{r.peak_rss_mb:.0f}"]
            rows.append(row)
        return format_table(rows, cols)

    def __str__(self) -> str:
        lines = [self.table()]
        for r in self.steps:
            lines += [f"{r.step}: {w}" for w in r.warnings]
            if r.status == "built":
                lines.append(f"{r.step}: wrote {r.output}")
        return "\n".join(lines)


def preprocess(
    data_dir: str | Path,
    only=None,
    force: bool = False,
    fix_goldg_ids: bool = False,
    check_images: bool = False,
    progress: bool = True,
) -> PreprocessSummary:
    """Build the three index files the training reads (see `STEPS`), each written atomically.

    `only`: step names (default all); `force`: rebuild even when the output is newer than every
    input; `fix_goldg_ids`: GoldG attaches each annotation to its own file's image (the
    original's rule, the default, puts Flickr boxes on mixed images);
    `check_images`: report Objects365 images listed but absent on disk.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingDataError(data_dir, "dataset folder", "pass the folder holding coco2017/, …")
    steps = list(only or STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    results = []
    for step in steps:
        inputs, output = STEPS[step]
        if not force and is_up_to_date(data_dir / output, [data_dir / p for p in inputs]):
            results.append(StepResult(step, data_dir / output, "up to date"))
            continue
        with Timer() as t:
            if step == "coco":
                r = coco.build_coco_index(data_dir, progress)
            elif step == "objects365":
                r = objects365.build_objects365_index(data_dir, progress, check_images)
            else:
                r = goldg.build_goldg(data_dir, progress, fix_goldg_ids)
        r.seconds, r.peak_rss_mb = t.seconds, peak_rss_mb()
        results.append(r)
    return PreprocessSummary(results)
