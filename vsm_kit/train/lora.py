"""LoRA on the LLM's attention projections (peft) and the VSM's fully trained parts (§5.6)."""

from __future__ import annotations

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from .config import FULLY_TRAINED, MM_PROJECTOR, LoraConfig

# same-named projections inside these parts are not the LLM's and get no LoRA
EXCLUDED = (
    "owlvit",
    "visual_projection",
    "prompt_encoder",
    "mask_decoder",
    "vision_tower",
    "mm_projector",
    "text_hidden_fcs_seg",
    "text_hidden_fcs_det",
)


def lora_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Full names of the `nn.Linear` modules LoRA adapts: name contains a target (one of
    `config.LORA_TARGETS`, checked by `RunConfig.validate`), no exclusion."""
    return sorted(
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and any(t in name for t in targets)
        and not any(x in name for x in EXCLUDED)
    )


def wrap_lora(model: nn.Module, cfg: LoraConfig) -> PeftModel:
    """The PEFT-wrapped model (parameter names `base_model.model.…`, as the original's
    checkpoints have them) with LoRA, the fully trained parts and, when asked, mm_projector
    trainable."""
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=lora_targets(model, cfg.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    wrapped = get_peft_model(model, peft_cfg)
    trained = FULLY_TRAINED + ((MM_PROJECTOR,) if cfg.train_mm_projector else ())
    for name, p in wrapped.named_parameters():
        if any(t in name for t in trained):
            p.requires_grad_(True)
    return wrapped


def trainable_summary(model: nn.Module) -> dict[str, int]:
    """Trainable parameter counts by part (for the run log)."""
    parts: dict[str, int] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            module = next((t for t in (*FULLY_TRAINED, MM_PROJECTOR) if t in name), "other")
            part = "lora" if "lora_" in name else module.removeprefix("model.")
            parts[part] = parts.get(part, 0) + p.numel()
    return parts
