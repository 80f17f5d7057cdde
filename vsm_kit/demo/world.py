"""The embedded demo world: a small, deterministic data tree in the original tool's exact layout
and file formats, so everything downstream runs through the loading code real data uses."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import BadArgumentError
from ..jsonio import dump_json_bytes, load_json
from ..model.architecture import vsm_tiny
from ._coco import write_coco_family
from ._grounding import write_grounding
from ._objects365 import write_objects365
from ._refer import write_refer
from ._truth import Truth
from ._vstar import write_vstar_bench
from ._weights import write_weights

FORMAT_VERSION = 10  # bump when the generator's output changes
STAMP = "demo_world.json"
BASES = ("random", "pretrained")

# each writer gets its own random stream, so changing one source leaves the others identical
_WRITERS = (
    ("COCO-2017, COCO-Stuff, PACO-LVIS, VQA", write_coco_family),
    ("Objects365", write_objects365),
    ("refCOCO/+/g, refCLEF", write_refer),
    ("GoldG mixed + Flickr", write_grounding),
    ("V*Bench", write_vstar_bench),  # for search evaluation only; no training source reads it
)


@dataclass
class DemoWorld:
    """A generated world; `truth` (what was drawn, per source) is kept only by `make_demo_world`."""

    root: Path
    seed: int
    scale: int
    bases: str = "random"
    truth: Truth | None = None

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    def recipe(self, **overrides):
        """The demo recipe (demo_tiny_cpu) on this world's data and weights, then `overrides`
        (dotted paths, as for `RunConfig.replace`: `recipe(**{"optim.lr": 1e-3})`)."""
        from .. import configs

        world = {"data.data_dir": str(self.dataset), "weights.dir": str(self.weights)}
        return configs.load("demo_tiny_cpu").replace(**world | overrides)


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(dump_json_bytes(obj))


def make_demo_world(
    out: str | Path,
    seed: int = 0,
    scale: int = 1,
    progress: bool = True,
    bases: str = "pretrained",
) -> DemoWorld:
    """Write `out/dataset/` (the data tree) and `out/weights/` (tiny base weights and a tiny VSM),
    replacing an earlier world only once the new one is complete. `bases`: "pretrained" (fitted
    to the demo's scenes once, then cached: the demo recipe learns from them) or "random"
    (seeded initialisations, seconds: for tests of plumbing, not of learning)."""
    if scale < 1:
        raise BadArgumentError(f"scale must be a positive integer, got {scale}")
    if bases not in BASES:
        raise BadArgumentError(f"bases must be one of {', '.join(BASES)}, got {bases!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth: Truth = {}
    with tempfile.TemporaryDirectory(dir=out, prefix=".dataset-") as tmp:
        ds = Path(tmp) / "dataset"
        bar = tqdm(_WRITERS, desc="demo world", disable=not progress, unit="source")
        for k, (label, writer) in enumerate(bar):
            bar.set_postfix_str(label)
            truth.update(writer(ds, np.random.default_rng([seed, k]), scale, _dump))
        bar.set_postfix_str("tiny weights")
        write_weights(Path(tmp) / "weights", vsm_tiny(), bases, seed, progress)
        for name in ("dataset", "weights"):  # replace the previous world only when complete
            final = out / name
            if final.exists():
                final.rename(Path(tmp) / f"old-{name}")
            (Path(tmp) / name).rename(final)
    _dump(
        out / STAMP,
        {
            "seed": seed,
            "scale": scale,
            "format": FORMAT_VERSION,
            "bases": bases,
            "seconds": round(time.perf_counter() - t0, 2),
        },
    )
    return DemoWorld(out, seed, scale, bases, truth)


def ensure_demo_world(
    out: str | Path, seed: int = 0, scale: int = 1, bases: str = "pretrained"
) -> DemoWorld:
    """The demo world at `out`, generated only when absent or made with other settings."""
    out = Path(out)
    stamp = out / STAMP
    if stamp.exists() and (out / "dataset").is_dir() and (out / "weights").is_dir():
        meta = load_json(stamp)
        made = (meta.get("seed"), meta.get("scale"), meta.get("format"), meta.get("bases"))
        if made == (seed, scale, FORMAT_VERSION, bases):
            return DemoWorld(out, seed, scale, bases)
    return make_demo_world(out, seed, scale, bases=bases)
