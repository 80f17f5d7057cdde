"""ZeRO checkpoint → one fp32 safetensors file, in-process through DeepSpeed's own API.

Works for any ZeRO stage and world size (DeepSpeed reassembles the shards) and checks the result
against the run: every trainable parameter of the PEFT-wrapped model (LoRA and the heads) must be
there; the frozen ones it also carries are counted (the merge needs them for a strict load).
The checkpoint exported by default is the best by validation det_acc: the original keeps only
that one, so its export is always the best, never simply the last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..errors import VsmKitError
from ..fsutil import atomic_path
from ..model.architecture import SIZES
from ..model.tokenizer import load_tokenizer
from ..model.vsm import VSMForCausalLM, llama_config
from ..train.checkpoints import Checkpoints
from ..train.config import RunConfig
from ..train.lora import wrap_lora

WEIGHTS_FILE = "weights_fp32.safetensors"
BEST, LAST = "best", "last"  # the checkpoint a run's `best.json` / `latest` names


class ConvertError(VsmKitError):
    """A checkpoint cannot be converted, or lacks parameters the run trained."""


@dataclass
class ConvertReport:
    out: Path
    tag: str
    chosen: str  # which checkpoint this is: "the best, val det_acc 0.412", "the last", …
    trainable: int  # trainable tensors found (all of the run's)
    frozen: int  # other tensors carried (frozen parameters and buffers)
    numel: int
    seconds: float
    extra: list[str] = field(default_factory=list)  # names the run's model does not have

    def __str__(self) -> str:
        return (
            f"{self.tag} ({self.chosen}) → {self.out}: {self.trainable} trainable + "
            f"{self.frozen} frozen tensors, {self.numel / 1e6:.1f} M values, {self.seconds:.1f} s"
        )


def arch_of(config: RunConfig):
    return SIZES[config.weights.arch]()


def skeleton(config: RunConfig):
    """The run's PEFT-wrapped model on the meta device (names, shapes and trainability, no
    memory): what a checkpoint of the run must contain."""
    tokenizer, ids = load_tokenizer(config.weight_path("base"), config.data.model_max_length)
    arch = arch_of(config)
    with torch.device("meta"):
        model = VSMForCausalLM(llama_config(arch, len(tokenizer), loc_token_idx=ids.loc), arch)
        return wrap_lora(model, config.lora)


def pick_checkpoint(ckpts: Checkpoints, tag: str = BEST) -> tuple[str, str]:
    """(tag, why it was chosen) for `tag`: BEST, LAST or a checkpoint tag. BEST falls back to
    the last checkpoint when the run recorded no best (validation had not run before it)."""
    available = sorted(p.name for p in ckpts.dir.glob("global_step*") if p.is_dir())
    hint = f"(available in {ckpts.dir}: {', '.join(available) or 'none'})"
    if tag == BEST and ckpts.best is None:
        if ckpts.last is None:
            raise ConvertError(f"no checkpoint in {ckpts.dir}: train first {hint}")
        return ckpts.last, "the last: no best recorded, no validation ran before it"
    if tag == BEST:
        best = ckpts.best
        if not (ckpts.dir / best["tag"]).is_dir():
            raise ConvertError(
                f"best.json names {best['tag']}, which is gone: pass --last or --tag {hint}"
            )
        det_acc = (best.get("metrics") or {}).get("det_acc")
        why = (
            "the best: a run without validation, its last"
            if det_acc is None
            else f"the best, val det_acc {det_acc:.3f}"
        )
        return best["tag"], why
    if tag == LAST:
        if ckpts.last is None:
            raise ConvertError(f"no complete checkpoint in {ckpts.dir}: train first {hint}")
        return ckpts.last, "the last"
    if not (ckpts.dir / tag).is_dir():
        raise ConvertError(f"no checkpoint {tag} {hint}")
    return tag, "as given"


def convert(run_dir: str | Path, tag: str = BEST, out: str | Path | None = None):
    """Write `RUN_DIR/weights_fp32.safetensors` (or `out`) from checkpoint `tag`: BEST (the
    default, what the original exports), LAST, or a tag such as `global_step500`. Returns a
    `ConvertReport` saying which checkpoint and why; raises `ConvertError` naming missing
    parameters."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / "config.yaml")
    ckpts = Checkpoints(run_dir / "checkpoints")
    tag, chosen = pick_checkpoint(ckpts, tag)
    out = Path(out) if out else run_dir / WEIGHTS_FILE
    start = time.perf_counter()
    state = get_fp32_state_dict_from_zero_checkpoint(str(ckpts.dir), tag=tag)
    model = skeleton(config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(trainable - set(state))
    if missing:
        raise ConvertError(
            f"checkpoint {ckpts.dir / tag} lacks {len(missing)} trainable parameter(s) of the run: "
            + ", ".join(missing[:10])
        )
    known = set(model.state_dict())
    # DeepSpeed hands out views of one flat buffer; safetensors wants separate storage
    state = {k: (v.clone() if v._base is not None else v).contiguous() for k, v in state.items()}
    with atomic_path(out, size=sum(v.numel() * v.element_size() for v in state.values())) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "tag": tag})
    return ConvertReport(
        out=out,
        tag=tag,
        chosen=chosen,
        trainable=len(trainable),
        frozen=len(state) - len(trainable),
        numel=sum(v.numel() for v in state.values()),
        seconds=time.perf_counter() - start,
        extra=sorted(set(state) - known),
    )
