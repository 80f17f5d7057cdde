"""LoRA merge: the run's model rebuilt from its base, the converted weights loaded strictly,
LoRA folded into the base, saved as a Hugging Face folder, then verified.

The folder holds safetensors shards, `config.json` (the original merged model's form),
`generation_config.json`, the tokenizer and both image-processor configs; it is written beside
its destination and renamed into place, so an interrupted merge changes nothing. By default its
dtypes are the original's: the LLM in bf16, the VSM heads in fp32 ("mixed"). Verification
reloads the folder in the LLM's dtype and compares LM logits, box logits, boxes and mask logits
on a fixed input with the unmerged LoRA model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch
from safetensors import SafetensorError, safe_open

from ..errors import VsmKitError
from ..fsutil import recover_dir
from ..model.conversation import render, tokenize_with_image
from ..model.image_inputs import ImageInputs
from ..model.weights import check_and_load, init_vsm_from_base, load_vsm, save_vsm
from ..train.config import RunConfig
from ..train.lora import wrap_lora
from ..train.samples import ANSWER, QUESTION
from .zero import BEST, ConvertReport, arch_of, convert

# saved dtypes (LLM, VSM heads) by name; "mixed" is what the original's merge writes
DTYPES = {
    "mixed": (torch.bfloat16, torch.float32),
    "bf16": (torch.bfloat16, torch.bfloat16),
    "fp16": (torch.float16, torch.float16),
    "fp32": (torch.float32, torch.float32),
}
DEFAULT_DTYPE = "mixed"
# max |merged − unmerged| / max |unmerged| allowed per output, by the LLM's saved dtype
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
GiB = 1024**3
STAGES = 2  # convert_merge's steps: convert, merge (+ verify)


class MergeError(VsmKitError):
    """The merge cannot run here, or its result does not match the unmerged model."""


@dataclass
class MergeReport:
    out: Path
    dtype: str
    seconds: float
    differences: dict[str, float] = field(default_factory=dict)  # relative, per output
    tolerance: float | None = None

    @property
    def verified(self) -> bool | None:
        if not self.differences:
            return None
        return max(self.differences.values()) <= self.tolerance

    def __str__(self) -> str:
        llm, heads = (str(d).removeprefix("torch.") for d in DTYPES[self.dtype])
        dtypes = self.dtype if llm == heads else f"{self.dtype}: LLM {llm}, heads {heads}"
        lines = [f"merged model ({dtypes}) → {self.out} in {self.seconds:.1f} s"]
        if self.differences:
            lines.append(f"verification (max |Δ| / max |ref|, tolerance {self.tolerance:g}):")
            lines += [f"  {k:<12} {v:.2e}" for k, v in self.differences.items()]
            lines.append("  passed" if self.verified else "  FAILED")
        return "\n".join(lines)


def ram_needed(weights: Path, dtype: str) -> int:
    """Bytes a CPU merge holds at its peak: the fp32 checkpoint, the fp32 model it loads into,
    the saved copy in `dtype`, and the reloaded one for verification, plus 2 GiB of slack (which
    also covers the heads that "mixed" keeps in fp32)."""
    fp32 = weights.stat().st_size
    out = fp32 * torch.finfo(DTYPES[dtype][0]).bits // 32
    return 2 * fp32 + 2 * out + 2 * GiB


def check_ram(weights: Path, dtype: str) -> None:
    need, have = ram_needed(weights, dtype), psutil.virtual_memory().available
    if need > have:
        raise MergeError(
            f"merging {weights.name} in {dtype} needs ~{need / GiB:.0f} GiB of RAM; this machine "
            f"has {have / GiB:.0f} GiB available. Run it on a machine with more memory, or close "
            "what else is using it (the merge holds the fp32 weights and the model at once)."
        )


def merge(
    config: RunConfig,
    weights: str | Path,
    out: str | Path,
    dtype: str = DEFAULT_DTYPE,
    verify: bool = True,
) -> MergeReport:
    """Merge the LoRA run described by `config` (its base, CLIP, OWL-ViT and LoRA settings)
    with the converted `weights` into the folder `out`. `dtype`: "mixed" (the original's: LLM
    bf16, heads fp32), or "bf16", "fp16", "fp32" for every tensor."""
    if dtype not in DTYPES:
        raise MergeError(f"dtype {dtype!r}: choose from {', '.join(DTYPES)}")
    weights, out = Path(weights), Path(out)
    if not weights.exists():
        raise MergeError(f"{weights} does not exist: run `vsm-kit convert RUN_DIR` first")
    recover_dir(out)  # a merge killed mid-swap moved the old folder aside: put it back
    check_ram(weights, dtype)
    start = time.perf_counter()
    try:  # read first: a damaged file fails before the base is built
        with safe_open(str(weights), "pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError) as err:
        raise MergeError(
            f"{weights} is not a readable safetensors file ({err}): write it again with "
            "`vsm-kit convert RUN_DIR`"
        ) from None
    clip = config.weight_path("clip")
    model, tokenizer, ids = init_vsm_from_base(
        config.weight_path("base"), clip, config.weight_path("owlvit"), arch_of(config)
    )
    peft = wrap_lora(model, config.lora)
    try:
        check_and_load(peft, state)
    except VsmKitError as err:
        raise MergeError(
            f"{weights} does not fit the run's base {config.weight_path('base')}:\n{err}"
        ) from None
    del state
    peft.eval()
    probe = probe_batch(tokenizer, ids, model.arch)
    reference = outputs(peft.get_base_model(), probe) if verify else None
    merged = peft.merge_and_unload()
    llm_dtype, head_dtype = DTYPES[dtype]
    save_vsm(merged, tokenizer, out, clip, dtype=llm_dtype, head_dtype=head_dtype)
    report = MergeReport(out, dtype, 0.0)
    if verify:
        del merged, peft, model
        loaded, _, _ = load_vsm(out, clip=clip, dtype=llm_dtype, arch=arch_of(config))
        got = outputs(loaded, probe)
        report.differences = {k: _relative(got[k], reference[k]) for k in reference}
        report.tolerance = TOLERANCE[llm_dtype]
    report.seconds = time.perf_counter() - start
    if report.verified is False:
        raise MergeError(f"the saved model differs from the unmerged one:\n{report}")
    return report


def convert_merge(
    run_dir: str | Path,
    out: str | Path,
    tag: str = BEST,
    dtype: str = DEFAULT_DTYPE,
    verify: bool = True,
    progress: Callable[[int, str], None] | None = None,
) -> tuple[ConvertReport, MergeReport]:
    """Both steps for a run folder, with the base and weight paths from its saved config;
    `tag` as for `convert` (default: the best checkpoint, as the original exports).
    `progress(done, text)` hears each stage of STAGES as it starts and once all are done."""
    progress = progress or (lambda done, text: None)
    progress(0, f"converting the {tag} checkpoint of {run_dir} …")
    converted = convert(run_dir, tag)
    progress(1, f"{converted}; merging …")
    config = RunConfig.load(Path(run_dir) / "config.yaml")
    merged = merge(config, converted.out, out, dtype=dtype, verify=verify)
    progress(STAGES, f"saved {merged.out}")
    return converted, merged


def probe_batch(tokenizer, ids, arch, seed: int = 0) -> dict:
    """A fixed input: a seeded noise image, one detection query, a mask at image size."""
    image = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    owl, clip = ImageInputs(arch.owlvit.image_size, arch.clip.image_size).both(image)
    text = render([QUESTION.format("red ball"), ANSWER])
    input_ids = torch.tensor([tokenize_with_image(text, tokenizer)])
    return {
        "images": owl[None],
        "images_clip": clip[None],
        "input_ids": input_ids,
        "labels": input_ids.clone(),
        "attention_masks": torch.ones_like(input_ids, dtype=torch.bool),
        "offset": torch.tensor([0, 1]),
        "bboxes_labels_list": [torch.tensor([[0.5, 0.5, 0.2, 0.2]])],
        "bboxes_valid_list": torch.tensor([1]),
        "masks_list": [torch.zeros(1, 240, 320)],
        "masks_valid_list": [torch.tensor([1])],
    }


@torch.no_grad()
def outputs(model, batch: dict) -> dict[str, torch.Tensor]:
    dtype = next(model.parameters()).dtype
    batch = {k: v.to(dtype) if k in ("images", "images_clip") else v for k, v in batch.items()}
    p = model.predict(batch, masks_for=[True])
    return {
        "lm_logits": p["logits"].float(),
        "box_logits": p["det_logits"].float(),
        "boxes": p["det_boxes"].float(),
        "mask_logits": p["masks"][0].float(),
    }


def _relative(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
