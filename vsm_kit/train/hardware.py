"""What this machine can train: a hardware probe, a per-process memory estimate, and a suggested
precision / micro-batch / ZeRO setting, checked before a run launches.

The memory figures are estimates from exact parameter counts and a few named constants, not
measurements: good for "fits, or not by a wide margin", not for the last GiB.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from ..model.architecture import SIZES, VOCAB_SIZES, SamArch, VSMArch
from .config import (
    FULLY_TRAINED,
    LORA_TARGETS,
    MM_PROJECTOR,
    PRECISIONS,
    ConfigError,
    LoraConfig,
    RunConfig,
)

GiB = 1024**3
VALUE_BYTES = dict(zip(PRECISIONS, (2, 2, 4), strict=True))
# AdamW per trainable parameter: fp32 master copy + two fp32 moments (fp32 runs need no master)
ADAM_BYTES = dict(zip(PRECISIONS, (12, 12, 8), strict=True))
CONVERSATIONS_PER_IMAGE = 3  # LLM sequences per image (data.targets_per_sample)
# bytes kept for backward per token × hidden unit by one 16-bit transformer layer (Korthikanti et
# al. 2022, "Reducing activation recomputation"; no seq² term since attention runs fused)
LLAMA_ACT_BYTES = 34
LOSS_FP32_COPIES = 2  # the cross-entropy's fp32 upcast of the logits and its log-softmax
VISION_ACT_BYTES = 128  # per patch × channel: frozen towers' transient peak + heads on 3 queries
RUNTIME_OVERHEAD = int(1.5 * GiB)  # CUDA context (CPU: the runtime), NCCL, allocator slack
FIT_FRACTION = 0.9  # plan for at most this share of a GPU (on CPU: of host RAM)
LADDER = ((2, False, False), (2, True, False), (3, True, False))  # (stage, offload opt, params)


# ---- the machine ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPU:
    name: str
    memory: int  # bytes
    capability: tuple[int, int]
    bf16: bool


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[GPU, ...]
    cpu_count: int
    ram: int  # bytes of host memory

    @property
    def accelerator(self) -> str:
        """DeepSpeed's accelerator: "cuda", or its CPU accelerator when there is no GPU."""
        return "cuda" if self.gpus else "cpu"

    @property
    def backend(self) -> str:
        return "nccl" if self.gpus else "gloo"

    def describe(self) -> str:
        host = f"{self.cpu_count} cores, {self.ram / GiB:.1f} GiB RAM"
        if not self.gpus:
            return f"CPU only: {host} → DeepSpeed CPU accelerator (gloo)"
        lines = [f"{len(self.gpus)} GPU(s), {host} → DeepSpeed cuda accelerator (nccl)"]
        for i, g in enumerate(self.gpus):
            sm, bf16 = ".".join(map(str, g.capability)), "bf16" if g.bf16 else "no bf16"
            lines.append(f"  cuda:{i} {g.name}: {g.memory / GiB:.1f} GiB, sm {sm}, {bf16}")
        return "\n".join(lines)


def probe() -> Hardware:
    """This machine's GPUs (through torch.cuda, which this initialises), usable cores and RAM."""
    import psutil
    import torch

    gpus = []
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        gpus.append(GPU(p.name, p.total_memory, (p.major, p.minor), bf16=p.major >= 8))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Hardware(tuple(gpus), cores or 1, psutil.virtual_memory().total)


# ---- parameters ----------------------------------------------------------------------------------
def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _vit(d: int, layers: int, inter: int, image: int, patch: int) -> int:
    """A CLIP-style vision tower: patch conv, class + position embeddings, pre/post LayerNorm."""
    layer = 4 * _linear(d, d) + _linear(d, inter) + _linear(inter, d) + 2 * 2 * d
    return layers * layer + 3 * patch * patch * d + d + ((image // patch) ** 2 + 1) * d + 4 * d


def _mask_decoder(s: SamArch) -> int:
    """SAM's MaskDecoder (two-way transformer, tokens, hypernetwork MLPs, IoU head) with the
    VSM's upscaling path (two 3×3 convolutions and a LayerNorm2d)."""
    d, m, masks = s.embed_dim, s.mlp_dim, s.num_multimask_outputs + 1

    def attention(downsample: int) -> int:
        return 3 * _linear(d, d // downsample) + _linear(d // downsample, d)

    block = attention(1) + 2 * attention(s.attention_downsample_rate) + 4 * 2 * d
    transformer = s.depth * (block + _linear(d, m) + _linear(m, d))
    transformer += attention(s.attention_downsample_rate) + 2 * d  # final attention and norm
    upscaling = 9 * d * (d // 4) + 3 * (d // 4) + 9 * (d // 4) * (d // 8) + d // 8
    hypernetworks = masks * (2 * _linear(d, d) + _linear(d, d // 8))
    iou_head = (s.iou_head_depth - 1) * _linear(d, d) + _linear(d, masks)
    return transformer + (1 + masks) * d + upscaling + hypernetworks + iou_head


def _prompt_encoder(s: SamArch) -> int:
    """Point, not-a-point and no-mask embeddings, then the mask-downscaling convs and norms."""
    d, c = s.embed_dim, s.mask_in_chans
    return 6 * d + 7 * (c // 4) + 4 * (c // 4) * c + 3 * c + _linear(c, d)


def count_parameters(
    arch: VSMArch, vocab_size: int = VOCAB_SIZES["7b"], lora: LoraConfig | None = None
) -> dict[str, int]:
    """Parameters per module of `VSMForCausalLM` (by its names) and "lora", counted from `arch`
    alone, without building anything (`lora`: default r=8 on q_proj, v_proj)."""
    lora = lora or LoraConfig()
    lm, cl, ow, d = arch.llama, arch.clip, arch.owlvit, arch.sam.embed_dim
    h, i = lm.hidden_size, lm.intermediate_size
    in_out = dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj"), 2 * h)
    in_out |= dict.fromkeys(("gate_proj", "up_proj", "down_proj"), h + i)
    if unknown := set(lora.targets) - set(in_out):
        raise ConfigError(
            "lora.targets",
            f"{sorted(unknown)} are not LLaMA projections; Fix: use names from "
            + ", ".join(LORA_TARGETS),
        )
    return {
        "model.layers": lm.num_hidden_layers * (4 * h * h + 3 * h * i + 2 * h),
        "model.norm": h,
        "model.embed_tokens": vocab_size * h,
        "lm_head": vocab_size * h,
        "lora": lm.num_hidden_layers * lora.r * sum(in_out[t] for t in lora.targets),
        "model.vision_tower": _vit(
            cl.hidden_size, cl.num_hidden_layers, cl.intermediate_size, cl.image_size, cl.patch_size
        ),
        "model.mm_projector": _linear(cl.hidden_size, h),
        "model.owlvit.vision_model": _vit(
            ow.hidden_size, ow.num_hidden_layers, ow.intermediate_size, ow.image_size, ow.patch_size
        ),
        "model.owlvit.class_head": _linear(ow.hidden_size, ow.text_hidden_size)
        + 2 * _linear(ow.hidden_size, 1),
        "model.owlvit.box_head": 2 * _linear(ow.hidden_size, ow.hidden_size)
        + _linear(ow.hidden_size, 4),
        "model.owlvit.layer_norm": 2 * ow.hidden_size,
        "model.visual_projection": _linear(ow.hidden_size, d, bias=False),
        "model.prompt_encoder": _prompt_encoder(arch.sam),
        "model.mask_decoder": _mask_decoder(arch.sam),
        "model.text_hidden_fcs_seg": _linear(h, h) + _linear(h, d),
        "model.text_hidden_fcs_det": _linear(h, h) + _linear(h, ow.text_hidden_size),
    }


# ---- memory --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one training process needs on its device, by part, and in host RAM (`host`: what
    ZeRO offload puts there). An estimate: see the constants at the top of this module."""

    frozen_weights: int
    trainable_weights: int
    gathered: int  # ZeRO-3: whole layers gathered for compute (the current and the prefetched)
    gradients: int
    optimizer: int
    activations: int
    overhead: int
    host: int
    frozen_params: int
    trainable_params: int

    def parts(self) -> dict[str, int]:
        """The device bytes by part."""
        names = "frozen_weights trainable_weights gathered gradients optimizer activations overhead"
        return {name: getattr(self, name) for name in names.split()}

    @property
    def device(self) -> int:
        return sum(self.parts().values())


def estimate_memory(
    arch: VSMArch,
    *,
    precision: str = "bf16",
    micro_batch: int = 4,
    zero_stage: int = 2,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    world_size: int = 1,
    gradient_checkpointing: bool = True,
    seq_len: int = 512,
    vocab_size: int = VOCAB_SIZES["7b"],
    lora: LoraConfig | None = None,
) -> MemoryEstimate:
    """Estimate one process's memory for the VSM recipe with the ZeRO paper's accounting: weights
    and gradients in the compute dtype, AdamW states per trainable parameter; ZeRO stage ≥1
    shards the optimizer states, ≥2 the gradients, 3 the weights across `world_size`; offload
    moves them to host RAM. Gradients stay on the device (DeepSpeed's reduce buckets)."""
    lora = lora or LoraConfig()
    counts = count_parameters(arch, vocab_size, lora)
    trained = (*FULLY_TRAINED, "lora") + ((MM_PROJECTOR,) if lora.train_mm_projector else ())
    n_train = sum(counts[k] for k in trained)
    n_frozen = sum(counts.values()) - n_train
    vb = VALUE_BYTES[precision]

    def shard(n: int, from_stage: int) -> int:
        return math.ceil(n / world_size) if zero_stage >= from_stage else n

    frozen, trainable = shard(n_frozen * vb, 3), shard(n_train * vb, 3)
    optimizer, gathered, host = shard(n_train * ADAM_BYTES[precision], 1), 0, 0
    if zero_stage == 3:
        layer = counts["model.layers"] // arch.llama.num_hidden_layers
        gathered = 2 * max(layer, counts["lm_head"]) * vb
        if offload_params:
            host, frozen, trainable = frozen + trainable, 0, 0
    if offload_optimizer and zero_stage >= 1:  # CPU Adam also keeps fp32 gradients there
        host, optimizer = host + optimizer + shard(n_train * 4, 2), 0
    activations = _activations(arch, vb, micro_batch, gradient_checkpointing, seq_len, vocab_size)
    device = (frozen, trainable, gathered, shard(n_train * vb, 2), optimizer, activations)
    return MemoryEstimate(*device, RUNTIME_OVERHEAD, host, n_frozen, n_train)


def estimate_for(config: RunConfig, world_size: int = 1) -> MemoryEstimate:
    """`estimate_memory` for a run configuration on `world_size` processes."""
    return estimate_memory(
        SIZES[config.weights.arch](),
        precision=config.precision,
        micro_batch=config.optim.micro_batch,
        zero_stage=config.zero.stage,
        offload_optimizer=config.zero.offload_optimizer,
        offload_params=config.zero.offload_params,
        world_size=world_size,
        gradient_checkpointing=config.gradient_checkpointing,
        seq_len=config.data.model_max_length,
        vocab_size=VOCAB_SIZES[config.weights.arch],
        lora=config.lora,
    )


def _activations(arch: VSMArch, vb: int, mb: int, ckpt: bool, seq_len: int, vocab: int) -> int:
    """LLaMA: mb × 3 conversations × (text + image tokens) × hidden × LLAMA_ACT_BYTES per layer;
    with checkpointing only each layer's input is kept, plus one layer being recomputed. Then the
    logits with the loss's fp32 copies, and the vision side per image patch."""
    lm, cl, ow = arch.llama, arch.clip, arch.owlvit
    clip_patches = (cl.image_size // cl.patch_size) ** 2
    tokens = mb * CONVERSATIONS_PER_IMAGE * (seq_len + clip_patches - 1)
    layer, n = LLAMA_ACT_BYTES * vb // 2 * tokens * lm.hidden_size, lm.num_hidden_layers
    llama = n * tokens * lm.hidden_size * vb + layer if ckpt else n * layer
    logits = tokens * vocab * (vb + 4 * LOSS_FP32_COPIES)
    patches = (ow.image_size // ow.patch_size) ** 2 * ow.hidden_size + clip_patches * cl.hidden_size
    return llama + logits + mb * patches * VISION_ACT_BYTES * vb // 2


# ---- suggestion ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Suggestion:
    fits: bool
    fields: dict[str, Any]  # dotted RunConfig paths → values (if nothing fits: the closest try)
    estimate: MemoryEstimate
    message: str

    def apply(self, config: RunConfig) -> RunConfig:
        return config.replace(**self.fields)


def suggest(hardware: Hardware, config: RunConfig) -> Suggestion:
    """Precision (bf16 where every GPU has it, else fp16; fp32 on CPU), micro-batch and ZeRO
    setting for `config.weights.arch` on `hardware`. Tries the config's ZeRO setting, then ZeRO-2,
    ZeRO-2 + optimizer offload, ZeRO-3 + optimizer offload, each with micro-batches halving to 1
    (grad_accum raised to keep the images per step); the first that fits FIT_FRACTION of the
    smallest GPU (on CPU: of RAM) wins. Parameter offload, which streams every weight over PCIe
    in each pass, is only proposed in the message."""
    gpus, o, z = hardware.gpus, config.optim, config.zero
    precision = ("bf16" if all(g.bf16 for g in gpus) else "fp16") if gpus else "fp32"
    own = (z.stage, z.offload_optimizer, z.offload_params)
    rungs = [own, *(r for r in LADDER if r != own)] if gpus else [(z.stage, False, False)]
    closest = None
    for stage, offload_optimizer, offload_params in rungs:
        for mb in (o.micro_batch >> k for k in range(o.micro_batch.bit_length())):
            fields = {
                "precision": precision,
                "optim.micro_batch": mb,
                "optim.grad_accum": math.ceil(o.micro_batch * o.grad_accum / mb),
                "zero.stage": stage,
                "zero.offload_optimizer": offload_optimizer,
                "zero.offload_params": offload_params,
            }
            e, device, host = _need(hardware, config.replace(**fields))
            if device <= _budget(hardware) and host <= FIT_FRACTION * hardware.ram:
                old = {k: config.get(k) for k in fields}
                changes = "".join(f"; {k} {old[k]} → {v}" for k, v in fields.items() if old[k] != v)
                memory = f"{_budget(hardware) / FIT_FRACTION / GiB:.1f} GiB"
                where = "per GPU" if gpus else "of RAM"
                return Suggestion(
                    True, fields, e, f"fits: ~{device / GiB:.1f} of {memory} {where}{changes}"
                )
            if closest is None or device < closest[2]:
                closest = (fields, e, device, host)
    fields, e, device, host = closest
    return Suggestion(False, fields, e, _no_fit(hardware, config.replace(**fields), device, host))


def _budget(hardware: Hardware) -> float:
    gpus = hardware.gpus
    return FIT_FRACTION * (min(g.memory for g in gpus) if gpus else hardware.ram)


def _need(hardware: Hardware, config: RunConfig, world: int = 0) -> tuple[MemoryEstimate, int, int]:
    """The estimate on `world` GPUs (default: this machine's), its bytes per device and its host
    bytes summed over the local ranks (on CPU, where the host is the device: all in device)."""
    world = world or max(1, len(hardware.gpus))
    e = estimate_for(config, world)
    return (e, e.device, e.host * world) if hardware.gpus else (e, e.device + e.host, 0)


def _no_fit(hardware: Hardware, closest: RunConfig, device: int, host: int) -> str:
    """Why the closest try fails, and concrete ways out."""
    gpus, budget, ram, tries = hardware.gpus, _budget(hardware), hardware.ram / GiB, []
    if not gpus:
        why = f"needs ~{device / GiB:.0f} GiB of RAM, it has {ram:.0f} GiB"
        tries.append(f"a GPU with {device / FIT_FRACTION / GiB:.0f} GiB or more")
    elif device > budget:  # the smallest GPU sets the budget; "largest" when all are alike
        which = "largest" if len({g.memory for g in gpus}) == 1 else "smallest"
        has = f"{which} GPU has {budget / FIT_FRACTION / GiB:.0f} GiB"
        why = f"needs ~{device / GiB:.1f} GiB per GPU, {has}, {FIT_FRACTION:.0%} of it usable"
    else:
        why = f"offload needs ~{host / GiB:.0f} GiB of host RAM, it has {ram:.0f} GiB"
    if gpus:
        zero3 = closest.replace(**{"zero.stage": 3, "zero.offload_optimizer": False})
        for n in (2, 4, 8, 16, 32, 64):
            if n > len(gpus) and _need(hardware, zero3, n)[1] <= budget:
                tries.append(f"{n} GPUs of this size with ZeRO-3")
                break
        offload = {"zero.stage": 3, "zero.offload_optimizer": True, "zero.offload_params": True}
        _, p_device, p_host = _need(hardware, closest.replace(**offload))
        if p_device <= budget:
            tries.append(
                f"ZeRO-3 with parameter offload (zero.offload_params; slow: ~{p_device / GiB:.0f} "
                f"GiB per GPU, ~{p_host / GiB:.0f} GiB host RAM)"
            )
    if not closest.gradient_checkpointing:
        tries.append("gradient_checkpointing: true")
    tries.append(f"data.model_max_length below {closest.data.model_max_length}")
    if closest.weights.arch != "tiny":
        tries.append('weights.arch "tiny" (the demo model)')
    return f"will not fit on this machine ({why}); try {', '.join(tries)}"
