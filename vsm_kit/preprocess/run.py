"""The preprocessing entry point: run the selected steps, skip those already up to date."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import tree
from ..data.stats import format_table
from ..errors import BadArgumentError, MissingDataError, VsmKitError
from ..fsutil import is_up_to_date
from . import coco, goldg, objects365
from ._common import StepResult, Timer, peak_rss_mb, require_inputs

STEPS = {  # step → (input keys, output key) of `data.tree.PATHS`
    "coco": (coco.INPUTS, coco.OUTPUT),
    "objects365": (objects365.INPUTS, objects365.OUTPUT),
    "goldg": (goldg.INPUTS, goldg.OUTPUT),
}


class PreprocessInterrupted(VsmKitError, KeyboardInterrupt):
    """Ctrl-C during preprocessing; the message says which outputs were written and which
    were left as they were (the CLI prints it and exits 2; it is still a KeyboardInterrupt)."""


def _interrupted(data_dir: Path, steps: list[str], results: list[StepResult]) -> str:
    done = [f"{r.output} ({r.status})" for r in results]
    step = steps[len(results)]
    untouched = [str(tree.at(data_dir, *STEPS[s][1])) for s in steps[len(results) :]]
    return (
        f"preprocessing interrupted during the {step} step; kept: {', '.join(done) or 'nothing'}; "
        f"left as they were: {', '.join(untouched)} (no temporary file remains). Fix: run the "
        "same command again; finished steps are skipped as up to date"
    )


@dataclass
class PreprocessSummary:
    steps: list[StepResult]

    def table(self, timings: bool = True) -> str:
        cols = ["step", "status", "images", "boxes", "skipped", "unknown ids", "malformed"]
        if timings:
            cols += ["seconds", "peak RSS MB"]
        rows = []
        for r in self.steps:
            row = [r.step, r.status, r.images, r.boxes, r.skipped, r.unknown_image_ids, r.malformed]
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
    A missing input is a `MissingDataError` even when an old output exists (which is kept);
    Ctrl-C becomes `PreprocessInterrupted`, saying what was written and what was kept.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingDataError(data_dir, "dataset folder", "pass the folder holding coco2017/, …")
    steps = list(only or STEPS)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise BadArgumentError(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    results: list[StepResult] = []
    try:
        for step in steps:
            results.append(_run_step(step, data_dir, force, fix_goldg_ids, check_images, progress))
    except KeyboardInterrupt:
        raise PreprocessInterrupted(_interrupted(data_dir, steps, results)) from None
    return PreprocessSummary(results)


def _run_step(step, data_dir, force, fix_goldg_ids, check_images, progress) -> StepResult:
    inputs, output = STEPS[step]
    paths = require_inputs(data_dir, inputs, step)  # before the up-to-date check stats them
    out = tree.at(data_dir, *output)
    if not force and is_up_to_date(out, paths):
        return StepResult(step, out, "up to date")
    with Timer() as t:
        if step == "coco":
            r = coco.build_coco_index(data_dir, progress)
        elif step == "objects365":
            r = objects365.build_objects365_index(data_dir, progress, check_images)
        else:
            r = goldg.build_goldg(data_dir, progress, fix_goldg_ids)
    r.seconds, r.peak_rss_mb = t.seconds, peak_rss_mb()
    return r
