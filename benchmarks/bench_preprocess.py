"""Objects365 preprocessing: our streaming step against the original code's whole-file approach.

Generates an Objects365-shaped annotation file (default ~170,000 images, ~2.4 M boxes, ~350 MB)
and runs, each in a fresh process, (a) a baseline that `json.load`s the whole file, groups with
dicts and `json.dump`s, as the original's step does (its steps and its three skipped files, as
VSM_FACTS §2 describes them), and (b) `vsm-kit preprocess --only objects365`; prints wall time
and whole-process peak RSS (`wait4`, as `/usr/bin/time` reports it) of each and the ratios. Both
outputs are parsed and compared: the run exits 1 unless they are equal, so the two did the same
work. Then runs ours alone on a file `--grow` times larger to show how its memory scales.
`--smoke`: 2,000 images, `--grow 2` (seconds; for the tests).
Usage: .venv/bin/python benchmarks/bench_preprocess.py [--images N] [--grow K] [--smoke]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

BASELINE = r"""
import json, os, sys
from collections import defaultdict
ds = sys.argv[1]
skip = {"patch16/objects365_v2_00908726.jpg", "patch6/objects365_v1_00320532.jpg",
        "patch6/objects365_v1_00320534.jpg"}
data = json.load(open(os.path.join(ds, "object365/zhiyuan_objv2_train.json")))
names = {im["id"]: os.sep.join(im["file_name"].split(os.sep)[2:]) for im in data["images"]}
out = defaultdict(list)
for a in data["annotations"]:
    name = names[a["image_id"]]
    if name not in skip:
        out[name].append({"category_id": a["category_id"], "bbox": a["bbox"]})
json.dump(out, open(os.path.join(ds, "object365/image2bboxes.baseline.json"), "w"))
"""

# what a user runs: the CLI in a fresh interpreter
OURS = ["-m", "vsm_kit", "preprocess", "--only", "objects365", "--force", "--data-dir"]

# The peak is the process's whole resident set as `/usr/bin/time` reports it: `wait4`'s
# ru_maxrss of the command, started by this small shim (Linux counts a child's pre-exec
# resident set too, so the command must not be forked from this large benchmark process).
MEASURE = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print("MEASURED", os.waitstatus_to_exitcode(status), time.perf_counter() - t0, usage.ru_maxrss)
"""


def generate(ds: Path, images: int, boxes_per_image: float, seed: int = 0) -> int:
    """Write object365/zhiyuan_objv2_train.json in the real file's shape; return its size."""
    rng = np.random.default_rng(seed)
    path = ds / "object365/zhiyuan_objv2_train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = rng.poisson(boxes_per_image, images)
    with open(path, "wb") as f:
        f.write(b'{"images": [')
        for lo in range(0, images, 50_000):
            hi = min(lo + 50_000, images)
            batch = [
                {
                    "height": 512,
                    "id": i,
                    "license": 5,
                    "width": 683,
                    "file_name": f"images/v1/patch{i % 16}/objects365_v1_{i:08d}.jpg",
                    "url": "",
                }
                for i in range(lo, hi)
            ]
            f.write((b", " if lo else b"") + orjson.dumps(batch)[1:-1])
        f.write(b'], "annotations": [')
        ann_id, first = 0, True
        for lo in range(0, images, 20_000):
            hi = min(lo + 20_000, images)
            img = np.repeat(np.arange(lo, hi), counts[lo:hi])
            n = img.size
            xywh = np.round(rng.uniform(0, 600, (n, 4)), 4).tolist()
            cats = rng.integers(1, 366, n).tolist()
            batch = [
                {
                    "id": ann_id + k,
                    "iscrowd": 0,
                    "isfake": 0,
                    "area": round(b[2] * b[3], 4),
                    "isreflected": 0,
                    "bbox": b,
                    "image_id": i,
                    "category_id": c,
                }
                for k, (i, b, c) in enumerate(zip(img.tolist(), xywh, cats, strict=True))
            ]
            ann_id += n
            if batch:
                f.write((b"" if first else b", ") + orjson.dumps(batch)[1:-1])
                first = False
        f.write(b'], "categories": [')
        f.write(orjson.dumps([{"name": f"c{i}", "id": i} for i in range(1, 366)])[1:-1])
        f.write(b"]}")
    return path.stat().st_size, int(counts.sum())


def run(args: list[str], ds: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a fresh `python ARGS DS` process."""
    proc = subprocess.run(
        [sys.executable, "-S", "-c", MEASURE, sys.executable, *args, str(ds)],
        capture_output=True,
        text=True,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("MEASURED")), None)
    if line is None or line.split()[1] != "0":
        raise SystemExit(f"benchmark process failed:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    _, _, wall, peak_kb = line.split()
    return float(wall), int(peak_kb) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=170_000)
    ap.add_argument("--boxes-per-image", type=float, default=14.0)
    ap.add_argument("--grow", type=int, default=4, help="size factor of the scaling run (0: skip)")
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run, for the tests")
    args = ap.parse_args()
    if args.smoke:
        args.images, args.grow = 2_000, 2
    with tempfile.TemporaryDirectory(prefix="bench_preprocess_") as tmp:
        ds = Path(tmp) / "base"
        size, n_boxes = generate(ds, args.images, args.boxes_per_image)
        print(f"input: {args.images:,} images, {n_boxes:,} boxes, {size / 2**20:.0f} MB")
        base_t, base_m = run(["-c", BASELINE], ds)
        ours_t, ours_m = run(OURS, ds)
        a = orjson.loads((ds / "object365/image2bboxes.json").read_bytes())
        b = orjson.loads((ds / "object365/image2bboxes.baseline.json").read_bytes())
        same = a == b
        del a, b
        print(f"baseline (json.load + dicts): {base_t:7.2f} s  {base_m:7.0f} MB peak RSS")
        print(f"vsm_kit (streaming):          {ours_t:7.2f} s  {ours_m:7.0f} MB peak RSS")
        print(
            f"speed-up: {base_t / ours_t:.1f}x   memory ratio: {ours_m / base_m:.3f} "
            f"(1/{base_m / ours_m:.1f})   outputs identical: {same}"
        )
        if not same:
            raise SystemExit("the baseline's and our outputs differ: the comparison is void")
        if args.grow:
            import shutil

            shutil.rmtree(ds)
            big = Path(tmp) / "big"
            size, n_boxes = generate(big, args.images * args.grow, args.boxes_per_image, seed=1)
            t, m = run(OURS, big)
            print(
                f"vsm_kit at {args.grow}x ({n_boxes:,} boxes, {size / 2**20:.0f} MB): "
                f"{t:.2f} s  {m:.0f} MB peak RSS ({m / ours_m:.2f}x the 1x peak)"
            )


if __name__ == "__main__":
    main()
