"""VSM forward + backward: time and peak memory of one training micro-batch, random weights.

Builds the VSM of `--arch` (default: the 7B shape) with random weights directly on the device
(bf16 on CUDA, fp32 on CPU), gradient checkpointing on, LoRA r=8 / alpha 16 on q_proj and v_proj
(`vsm_kit.train.lora.wrap_lora`), and times `model(batch=batch)` + `loss.backward()` over a
synthetic batch of 4 images × 3 queries (12 conversations) of `--seq-len` text tokens each (the
image sentinel expands to the CLIP patch tokens, so the LLM sees seq_len − 1 + 256 positions per
row), boxes for every query and masks on 2 of the 4 images. Prints mean/min step time, tokens/s
(text + image tokens) and peak memory (`torch.cuda.max_memory_allocated`; peak RSS on CPU).

GPU machine:  .venv/bin/python benchmarks/bench_model_gpu.py [--iters 10] [--seq-len 512]
CPU check:    .venv/bin/python benchmarks/bench_model_gpu.py --arch tiny --device cpu --seq-len 128
Smoke (tests): .venv/bin/python benchmarks/bench_model_gpu.py --smoke --device cpu
(`--smoke`: the tiny arch, 32 text tokens, one timed iteration, no warm-up.)
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import torch

from vsm_kit.model.architecture import SIZES, VSMArch
from vsm_kit.model.vsm import IGNORE_INDEX, IMAGE_TOKEN_INDEX, VSMForCausalLM, llama_config
from vsm_kit.train.config import LoraConfig
from vsm_kit.train.lora import wrap_lora

VOCAB, LOC = 32004, 32003  # LLaMA's 32000 + pad, <im_start>, <im_end>, [LOC]
LORA = LoraConfig(r=8, alpha=16, dropout=0.05, targets=["q_proj", "v_proj"])
MASK_HW = (480, 640)  # the GT masks' size (a typical COCO image)
GiB = 2**30
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)


def build_model(arch: VSMArch, device, dtype, lora: LoraConfig = LORA, checkpointing=True):
    """The LoRA-wrapped VSM with random weights, created and initialised on `device` in `dtype`."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = VSMForCausalLM(llama_config(arch, VOCAB, loc_token_idx=LOC), arch)
    finally:
        torch.set_default_dtype(previous)
    model.loc_token_idx = LOC
    if checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    model = wrap_lora(model, lora)
    # as DeepSpeed's bf16 mode: every parameter (LoRA's too) in `dtype`, float buffers in fp32
    for t in model.parameters():
        t.data = t.data.to(device, dtype)
    for t in model.buffers():
        t.data = t.data.to(device, torch.float32 if t.is_floating_point() else t.dtype)
    model.train()
    return model


def image_tokens(arch: VSMArch) -> int:
    return (arch.clip.image_size // arch.clip.patch_size) ** 2


def synthetic_batch(arch, device, dtype, images=4, queries=3, seq_len=512, with_masks=2, seed=0):
    """A collated batch (the keys `forward_train` reads, as `Collator` makes them): `images` ×
    `queries` conversations of `seq_len` text tokens — BOS, the image sentinel, a prompt, then a
    supervised reply holding one [LOC] — 1–3 cxcywh_norm boxes per query, masks for the first
    `with_masks` images."""
    if seq_len < 16:
        raise ValueError("--seq-len must be at least 16")
    g = torch.Generator().manual_seed(seed)
    n = images * queries
    ids = torch.randint(3, 32000, (n, seq_len), generator=g)
    ids[:, 0], ids[:, 1], ids[:, -1] = 1, IMAGE_TOKEN_INDEX, 2
    reply = seq_len - max(8, seq_len // 4)
    ids[:, seq_len - 4] = LOC
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, reply:] = ids[:, reply:]
    boxes = []
    for _ in range(n):
        k = int(torch.randint(1, 4, (1,), generator=g))
        centre = 0.2 + 0.6 * torch.rand(k, 2, generator=g)
        size = 0.05 + 0.25 * torch.rand(k, 2, generator=g)
        boxes.append(torch.cat([centre, size], 1).to(device))
    masks, masks_valid = [], []
    for i in range(images):
        has = i < with_masks
        m = (torch.rand(queries, *MASK_HW, generator=g) > 0.5).float() if has else torch.zeros(0)
        masks.append(m.to(device))
        masks_valid.append(torch.full((queries,), int(has), device=device))
    owl, clip = arch.owlvit.image_size, arch.clip.image_size
    return {
        "images": torch.randn(images, 3, owl, owl, generator=g).to(device, dtype),
        "images_clip": torch.randn(images, 3, clip, clip, generator=g).to(device, dtype),
        "input_ids": ids.to(device),
        "labels": labels.to(device),
        "attention_masks": torch.ones_like(ids, dtype=torch.bool).to(device),
        "offset": torch.arange(0, n + 1, queries, device=device),
        "bboxes_labels_list": boxes,
        "bboxes_valid_list": torch.ones(n, dtype=torch.long, device=device),
        "masks_list": masks,
        "masks_valid_list": masks_valid,
    }


def batch_tokens(batch: dict, arch: VSMArch) -> int:
    """Text tokens (sentinel excluded) + image tokens the LLM processes for this batch."""
    n, length = batch["input_ids"].shape
    return n * (length - 1 + image_tokens(arch))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device: torch.device) -> tuple[str, float]:
    """(what, GiB): CUDA peak allocated, or this process's peak RSS on CPU."""
    if device.type == "cuda":
        return "peak CUDA allocated", torch.cuda.max_memory_allocated(device) / GiB
    return "peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB


def table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(SIZES), default="7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iters", type=int, help="timed iterations (default: 10 CUDA, 1 CPU)")
    parser.add_argument("--warmup", type=int, help="untimed first iterations (default: 2 / 1)")
    parser.add_argument("--seq-len", type=int, default=512, help="text tokens per conversation")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run, for the tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.arch, args.seq_len, args.iters, args.warmup = "tiny", 32, 1, 0
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    iters = args.iters or (10 if cuda else 1)
    warmup = args.warmup if args.warmup is not None else (2 if cuda else 1)
    arch = SIZES[args.arch]()

    t0 = time.perf_counter()
    model = build_model(arch, device, dtype)
    sync(device)
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    built = f"{build_s:.1f} s" + (f", {torch.cuda.memory_allocated(device) / GiB:.2f} GiB" * cuda)
    batch = synthetic_batch(arch, device, dtype, seq_len=args.seq_len)
    tokens = batch_tokens(batch, arch)

    times = []
    for i in range(warmup + iters):
        if i == warmup and cuda:
            torch.cuda.reset_peak_memory_stats(device)
        model.zero_grad(set_to_none=True)
        sync(device)
        t = time.perf_counter()
        out = model(batch=batch)
        out["loss"].backward()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    what, peak = peak_memory(device)
    rows = batch["input_ids"].shape[0]
    print(f"VSM forward+backward — arch {args.arch}, {device}, {str(dtype).split('.')[-1]}")
    table(
        [
            ("parameters (trainable)", f"{params / 1e9:.3f} B ({trainable / 1e6:.1f} M)"),
            ("build on device", built),
            ("batch", f"4 images × 3 queries, {args.seq_len} text tokens/row"),
            ("LLM positions/row", f"{args.seq_len - 1 + image_tokens(arch)} ({rows} rows)"),
            ("loss (random weights)", f"{out['loss'].item():.4f}"),
            ("fwd+bwd", f"{mean * 1e3:.1f} ms (mean of {len(times)}; min {min(times) * 1e3:.1f})"),
            ("tokens/s (text+image)", f"{tokens / mean:,.0f}"),
            (what, f"{peak:.2f} GiB"),
        ]
    )


if __name__ == "__main__":
    main()
