"""Rebuild LLaVA weights from a LLaMA base plus a LLaVA delta, one tensor at a time.

The published LLaVA-Lightning-7B delta is relative to the original LLaMA-7B: every delta tensor
is added to the base tensor of the same name; the projector (absent from the base) is stored in
full; embed_tokens / lm_head are larger in the delta (the image markers) and the base is added
into their first rows. Peak memory is one tensor pair plus one output shard, not two models."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import VsmKitError
from ..fsutil import atomic_dir
from .weights import SHARD_BYTES, ShardWriter, TensorStore

KEPT_WHOLE = ("model.mm_projector.weight", "model.mm_projector.bias")
GROWN = ("model.embed_tokens.weight", "lm_head.weight")
WEIGHT_FILES = (".safetensors", ".bin", ".index.json")


@dataclass
class DeltaReport:
    out: Path
    added: int = 0
    kept_whole: list[str] = field(default_factory=list)
    grown: list[str] = field(default_factory=list)
    base_only: list[str] = field(default_factory=list)


def apply_delta(
    base: str | Path,
    delta: str | Path,
    out: str | Path,
    progress: bool = True,
    *,
    shard_bytes: int = SHARD_BYTES,
) -> DeltaReport:
    """Write `out` = base + delta (safetensors shards of at most `shard_bytes`, the delta's
    config and tokenizer files), into a temporary folder renamed into place at the end. Sums
    are computed in float32 and stored in the delta's dtype."""
    base_store, delta_store = TensorStore(Path(base)), TensorStore(Path(delta))
    out = Path(out)
    report = DeltaReport(out)
    with atomic_dir(out) as tmp:
        shards = ShardWriter(tmp, shard_bytes)
        for key in tqdm(delta_store.keys(), desc="apply delta", disable=not progress):
            d = delta_store.get(key)
            if key not in base_store:
                if key not in KEPT_WHOLE:
                    raise VsmKitError(
                        f"{key} is in the delta but not in the base {base}: "
                        "is this the base the delta was made from?"
                    )
                result = d.clone()
                report.kept_whole.append(key)
            else:
                b = base_store.get(key)
                if b.shape == d.shape:
                    result = (d.float() + b.float()).to(d.dtype)
                elif key in GROWN and b.shape[1:] == d.shape[1:] and b.shape[0] < d.shape[0]:
                    result = d.clone()
                    result[: b.shape[0]] = (d[: b.shape[0]].float() + b.float()).to(d.dtype)
                    report.grown.append(key)
                else:
                    raise VsmKitError(
                        f"{key}: base {tuple(b.shape)} and delta {tuple(d.shape)} "
                        "do not fit together"
                    )
                report.added += 1
            shards.add(key, result.contiguous())
        shards.close()
        report.base_only = [k for k in base_store.keys() if k not in delta_store]
        for p in Path(delta).iterdir():  # config, tokenizer and generation files
            if p.is_file() and not p.name.endswith(WEIGHT_FILES):
                shutil.copy2(p, tmp / p.name)
    return report
