"""ZeRO checkpoint → one fp32 safetensors file, in-process through DeepSpeed's own API.

Works for any ZeRO stage and world size (DeepSpeed reassembles the shards) and checks the result
against the run: every trainable parameter of the PEFT-wrapped model (LoRA and the heads) must be
there; the frozen ones it also carries are counted (the merge needs them for a strict load).
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


class ConvertError(VsmKitError):
    """A checkpoint cannot be converted, or lacks parameters the run trained."""


@dataclass
class ConvertReport:
    out: Path
    tag: str
    trainable: int  # trainable tensors found (all of the run's)
    frozen: int  # other tensors carried (frozen parameters and buffers)
    numel: int
    seconds: float
    extra: list[str] = field(default_factory=list)  # names the run's model does not have

    def __str__(self) -> str:
        return (
            f"{self.tag} → {self.out}: {self.trainable} trainable + {self.frozen} frozen tensors, "
            f"{self.numel / 1e6:.1f} M values, {self.seconds:.1f} s"
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


def convert(run_dir: str | Path, tag: str | None = None, out: str | Path | None = None):
    """Write `RUN_DIR/weights_fp32.safetensors` (or `out`) from checkpoint `tag` (default: the
    last one). Returns a `ConvertReport`; raises `ConvertError` naming missing parameters."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / "config.yaml")
    ckpts = Checkpoints(run_dir / "checkpoints")
    tag = tag or ckpts.last
    if tag is None or not (ckpts.dir / tag).is_dir():
        raise ConvertError(
            f"no checkpoint {tag or ''} in {ckpts.dir}: train first, or pass --tag "
            f"(available: {', '.join(sorted(p.name for p in ckpts.dir.glob('global_step*')))})"
        )
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
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "tag": tag})
    return ConvertReport(
        out=out,
        tag=tag,
        trainable=len(trainable),
        frozen=len(state) - len(trainable),
        numel=sum(v.numel() for v in state.values()),
        seconds=time.perf_counter() - start,
        extra=sorted(set(state) - known),
    )
