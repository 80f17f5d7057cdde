"""How much the image inputs depend on the Pillow version: the original's pin (9.4.0) against this
environment's Pillow, on the same decoded pixels.

Both inputs resize with PIL's bicubic filter (as transformers 4.31 does): OWL-ViT's whole image to
768×768 and CLIP's padded square to 224×224. A venv with `pillow==9.4.0` is built once in
`~/.cache/vsm_kit/pillow-9.4.0/` (or `$VSM_KIT_CACHE`). Images: the demo world's dataset images
(≤ 640 px, so OWL-ViT upscales them), its V*Bench images (1024–2048 px) and photo-like
1280×1920 images (demo pictures enlarged, with grain). Prints, per group and input, the share of
uint8 values that differ, by how many levels at most, and how many images are affected.
`--smoke`: two images per group (seconds once the venv is built; the tests skip it until then,
as building needs the package index).
Usage: .venv/bin/python benchmarks/pillow_versions.py [--smoke]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from vsm_kit.demo.world import make_demo_world
from vsm_kit.model.image_inputs import PAD_RGB

OLD = "9.4.0"
RESIZE = """
import sys, numpy as np
from PIL import Image
src, out = np.load(sys.argv[1]), {}
for k in src.files:
    a = src[k]
    h, w = a.shape[:2]
    m = max(h, w)
    square = np.empty((m, m, 3), np.uint8)
    square[:] = tuple(int(v) for v in sys.argv[3].split(","))
    square[:h, :w] = a
    out[k + "/owl"] = np.asarray(Image.fromarray(a).resize((768, 768), Image.BICUBIC))
    out[k + "/clip"] = np.asarray(Image.fromarray(square).resize((224, 224), Image.BICUBIC))
np.savez(sys.argv[2], **out)
"""


def old_env() -> Path:
    """Where the Pillow 9.4.0 venv lives; `.complete` in it marks it built."""
    root = Path(os.environ.get("VSM_KIT_CACHE", Path.home() / ".cache" / "vsm_kit"))
    return root / f"pillow-{OLD}"


def old_python() -> Path:
    env = old_env()
    if not (env / ".complete").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True)
        pip = [str(env / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, f"pillow=={OLD}", "numpy<2"], check=True)
        (env / ".complete").touch()
    return env / "bin" / "python"


def images(tmp: Path, per_group: int | None = None) -> dict[str, np.ndarray]:
    """The three groups' images, at most `per_group` of each."""
    world = make_demo_world(tmp / "world", progress=False, bases="random")  # images only
    out = {}
    for k, p in enumerate(sorted((world.dataset).glob("[!v]*/**/*.jpg"))[:per_group]):
        out[f"dataset {k}"] = np.array(Image.open(p).convert("RGB"))
    for k, p in enumerate(sorted((world.dataset / "vstar_bench").rglob("*.jpg"))[:per_group]):
        out[f"vstar {k}"] = np.array(Image.open(p).convert("RGB"))
    rng = np.random.default_rng(0)
    photos = sorted((world.dataset / "coco2017" / "train2017").glob("*.jpg"))[: per_group or 10]
    for k, p in enumerate(photos):
        big = np.asarray(Image.open(p).convert("RGB").resize((1280, 1920), Image.BICUBIC))
        grain = rng.normal(0, 10, (*big.shape[:2], 1))
        out[f"photo {k}"] = np.clip(big + grain, 0, 255).astype(np.uint8)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="two images per group, for the tests")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pillow_versions_") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "src.npz", **images(tmp, 2 if args.smoke else None))
        pad = ",".join(map(str, PAD_RGB))
        runs = {}
        for name, python in ((OLD, old_python()), (PIL.__version__, Path(sys.executable))):
            out = tmp / f"{name}.npz"
            subprocess.run([str(python), "-c", RESIZE, tmp / "src.npz", out, pad], check=True)
            runs[name] = np.load(out)
        old, new = runs[OLD], runs[PIL.__version__]
        print(f"Pillow {OLD} vs {PIL.__version__}, PIL bicubic on the same pixels")
        print("group     input  images  values differing  max levels  images affected")
        for group in ("dataset", "vstar", "photo"):
            for kind in ("owl", "clip"):
                keys = [k for k in old.files if k.startswith(group) and k.endswith(kind)]
                diffs = [np.abs(old[k].astype(int) - new[k].astype(int)) for k in keys]
                share = sum((d > 0).sum() for d in diffs) / sum(d.size for d in diffs)
                worst = max(int(d.max()) for d in diffs)
                hit = sum(int(d.max() > 0) for d in diffs)
                print(
                    f"{group:<9} {kind:<5} {len(keys):>7}  {share:>16.3%}  {worst:>10}  {hit:>15}"
                )


if __name__ == "__main__":
    main()
