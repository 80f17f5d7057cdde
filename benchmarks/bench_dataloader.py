"""Training data pipeline: samples/s of one dataloader worker, ours against the original's way.

Builds a demo world, copies its `dataset/` twice with every JPEG re-encoded at 640×480 and at
1024×768, and on each copy times, in this process with `torch.set_num_threads(1)` (one worker):
(a) a baseline doing what the original V* code does per sample: decode the image twice with PIL
(it uses OpenCV, then PIL), the OWL-ViT processor's steps on the first and numpy
expand-to-square + the CLIP processor's steps on the second as transformers 4.31 runs them (array
→ PIL bicubic resize → array, ×1/255 in float64, float32 normalise on the HWC array, then CHW;
tests/compat checks these steps against 4.31 itself), and dummy full-resolution
`torch.rand(n, H, W)` masks for sources without masks; (b) `HybridDataset[i]` (one torchvision
decode, PIL resize, no dummy masks; it ships uint8 inputs and the engine normalises them on the
training device, as timm's prefetcher does), and (b') the same plus that normalisation on the
CPU, for CPU-only training.
All build the same `draw(i)` samples of the default mix. Prints samples/s of each (wall clock),
the ratios (also in process CPU time, steadier on a shared machine) per size, and checks once per
size that (a) and (b') give the same OWL and CLIP tensors (exit status 1 when not), so the
speed-up is not from doing different work. `--smoke`: 8 samples after 2 warm-up ones (seconds;
for the tests).
Usage: .venv/bin/python benchmarks/bench_dataloader.py [--samples N] [--warmup N] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vsm_kit.demo.world import make_demo_world
from vsm_kit.model.image_inputs import CLIP_MEAN, CLIP_STD, PAD_RGB
from vsm_kit.train.config import RunConfig
from vsm_kit.train.hybrid import HybridDataset

SIZES = ((640, 480), (1024, 768))  # (W, H)


def resized_copy(src: Path, dst: Path, size: tuple[int, int], seed: int = 0) -> None:
    """Copy `src` to `dst`, re-encoding every JPEG at `size` (quality 90) and resizing the
    COCO-Stuff label maps to match (nearest: they hold class ids; a label map must have its
    image's size). Annotations keep the old coordinates, so boxes no longer match the pixels;
    that does not matter for throughput. Demo images are flat synthetic shapes (~9 KB); a light
    grain (σ = 10) gives files of a photo's size and decoding cost (~110 KB at 640×480, like
    COCO), else decoding is too cheap."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for p in sorted(dst.rglob("*.jpg")):
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB").resize(size, Image.BICUBIC), dtype=np.float32)
        a += rng.normal(0, 10, (*a.shape[:2], 1)).astype(np.float32)
        Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p, "JPEG", quality=90)
    for p in sorted((dst / "cocostuff").rglob("*.png")):
        with Image.open(p) as im:
            im.resize(size, Image.NEAREST).save(p)


def expand_np(image: np.ndarray) -> np.ndarray:
    """The original's expand2square (PIL new + paste) in numpy: pad to M×M with the CLIP-mean
    colour, image at top-left. Filled row-wise (a broadcast `out[:] = PAD_RGB` is ~10x slower,
    and the baseline should not be a straw man)."""
    h, w, _ = image.shape
    m = max(h, w)
    out = np.empty((m, m * 3), np.uint8)
    row = np.tile(np.array(PAD_RGB, np.uint8), m)
    out[h:] = row
    out[:h, w * 3 :] = row[: (m - w) * 3]
    out[:h, : w * 3] = image.reshape(h, w * 3)
    return out.reshape(m, m, 3)


def processor_4_31(image: np.ndarray, size: int) -> torch.Tensor:
    """transformers 4.31's resize + rescale + normalise of an RGB array to size × size."""
    resized = np.array(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    x = (resized * (1 / 255)).astype(np.float32)
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return torch.from_numpy(x.transpose(2, 0, 1).copy())


def baseline_item(ds: HybridDataset, i: int):
    """Sample i the original's way: two decodes, numpy images, dummy masks."""
    s = ds.draw(i)
    img = np.array(Image.open(s.image_path).convert("RGB"))  # the original's cv2.imread
    s.images = processor_4_31(img, ds.inputs.owl_size)
    img_clip = np.array(Image.open(s.image_path).convert("RGB"))  # the original's PIL open
    s.images_clip = processor_4_31(expand_np(img_clip), ds.inputs.clip_size)
    if s.masks is None:
        s.masks = torch.rand(len(s.messages), *img.shape[:2])
    return s


def normalised_item(ds: HybridDataset, i: int):
    """Ours with the device-side normalisation done here on the CPU (CPU-only training)."""
    s = ds[i]
    s.images, s.images_clip = ds.inputs.normalise(s.images), ds.inputs.normalise(s.images_clip)
    return s


def rates(ds: HybridDataset, n: int, warmup: int) -> tuple[list[float], list[float]]:
    """Samples/s (wall, CPU) of baseline, ours and ours + CPU normalisation. The pipelines take
    turns sample by sample, in a rotating order, so drift in machine load hits all alike."""
    pipes = (baseline_item, HybridDataset.__getitem__, normalised_item)
    wall, cpu = [0.0] * 3, [0.0] * 3
    for i in range(warmup + n):
        for k in np.roll(np.arange(3), i):
            t0, c0 = time.perf_counter(), time.process_time()
            pipes[k](ds, i)
            if i >= warmup:
                wall[k] += time.perf_counter() - t0
                cpu[k] += time.process_time() - c0
    return [n / t for t in wall], [n / t for t in cpu]


def max_diff(ds: HybridDataset, i: int) -> tuple[float, float]:
    """Max abs differences (OWL, CLIP) between the two pipelines' inputs for sample i. PIL and
    torchvision both decode with libjpeg-turbo's defaults, so the pixels, hence tensors, match."""
    a, b = baseline_item(ds, i), normalised_item(ds, i)
    owl = (a.images - b.images).abs().max().item()
    return owl, (a.images_clip - b.images_clip).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=200, help="timed samples per pipeline and size")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="a seconds-long run, for the tests")
    args = ap.parse_args()
    if args.smoke:
        args.samples, args.warmup = 8, 2
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_dataloader_") as tmp:
        world = make_demo_world(
            Path(tmp) / "world", seed=0, scale=1, progress=False, bases="random"
        )
        for w, h in SIZES:
            data = Path(tmp) / f"dataset_{w}x{h}"
            resized_copy(world.dataset, data, (w, h))
            ds = HybridDataset(data, RunConfig().data.mix, seed=0)
            owl, clip = np.max([max_diff(ds, i) for i in range(5)], axis=0)
            (b, o, on), (b_cpu, o_cpu, _) = rates(ds, args.samples, args.warmup)
            rows.append((f"{w}x{h}", b, o, o / b, o_cpu / b_cpu, on, on / b, owl, clip))
    print(f"one worker (torch threads: {torch.get_num_threads()}), {args.samples} samples each")
    print(
        "     size  baseline/s  ours/s  ratio  CPU ratio  +CPU-normalise/s  ratio"
        "  max|diff| OWL, CLIP"
    )
    for size, b, o, r, r_cpu, on, rn, owl, clip in rows:
        print(
            f"{size:>9}  {b:10.1f}  {o:6.1f}  {r:4.2f}x  {r_cpu:8.2f}x  {on:16.1f}  {rn:4.2f}x"
            f"  {owl:.0e}, {clip:.0e}"
        )
    if any(owl or clip for *_, owl, clip in rows):
        raise SystemExit("the two pipelines' tensors differ: the comparison is void")


if __name__ == "__main__":
    main()
