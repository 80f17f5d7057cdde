"""Training throughput: seconds, samples/s, tokens/s and peak memory per optimizer step.

Runs the training recipe `--recipe` (`vsm_kit/configs/vsm_7b_lora.yaml` or `demo_tiny_cpu.yaml`)
in one process the way `vsm_kit.train.engine` does — the LoRA-wrapped VSM (random weights, the
recipe's precision and gradient checkpointing) under `deepspeed.initialize` with the recipe's
`deepspeed_config` (ZeRO stage, AdamW, WarmupDecayLR, clipping) — over synthetic micro-batches of
`micro_batch` images × `targets_per_sample` queries (`bench_model_gpu.synthetic_batch`), each
optimizer step being `grad_accum` micro-steps. samples/s counts images; tokens/s counts the text
+ image tokens the LLM processes; peak memory is `torch.cuda.max_memory_allocated` (peak RSS on
CPU). The first DeepSpeed use on a machine may JIT-build an op (a minute or two).

GPU machine:  .venv/bin/python benchmarks/bench_train_gpu.py [--recipe 7b] [--steps 5]
CPU check:    .venv/bin/python benchmarks/bench_train_gpu.py --recipe tiny --device cpu
Smoke (tests): .venv/bin/python benchmarks/bench_train_gpu.py --smoke --device cpu
(`--smoke`: the tiny recipe, 32 text tokens, one timed step, no warm-up.)
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model_gpu import (  # noqa: E402
    batch_tokens,
    build_model,
    image_tokens,
    peak_memory,
    sync,
    synthetic_batch,
    table,
)

import vsm_kit  # noqa: E402
from vsm_kit.model.architecture import SIZES  # noqa: E402
from vsm_kit.train.config import RunConfig  # noqa: E402

RECIPES = {"7b": "vsm_7b_lora.yaml", "tiny": "demo_tiny_cpu.yaml"}


def _single_process_env(cpu: bool) -> None:
    """What the deepspeed launcher would set for one rank (kept where already set)."""
    if cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # read when deepspeed is first imported
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="7b")
    parser.add_argument("--device", default="cuda", help="cuda or cpu (DeepSpeed's accelerator)")
    parser.add_argument("--steps", type=int, help="timed optimizer steps (default: 5 CUDA, 2 CPU)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps")
    parser.add_argument("--seq-len", type=int, help="text tokens per conversation (default 512)")
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run, for the tests")
    args = parser.parse_args(argv)
    if args.smoke:
        args.recipe, args.seq_len, args.steps, args.warmup = "tiny", 32, 1, 0
    cpu = args.device == "cpu"
    _single_process_env(cpu)

    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    from vsm_kit.train.engine import DTYPES, deepspeed_config

    cfg = RunConfig.load(Path(vsm_kit.__file__).parent / "configs" / RECIPES[args.recipe])
    accel = get_accelerator()
    deepspeed.init_distributed(dist_backend=accel.communication_backend_name(), verbose=False)
    if accel.device_name() != "cpu":
        accel.set_device(0)
    device = torch.device(accel.device_name(0))
    dtype = DTYPES[cfg.precision]
    arch = SIZES[cfg.weights.arch]()
    seq_len = args.seq_len or cfg.data.model_max_length
    steps = args.steps or (2 if cpu else 5)
    mb, ga, k = cfg.optim.micro_batch, cfg.optim.grad_accum, cfg.data.targets_per_sample

    t0 = time.perf_counter()
    model = build_model(arch, device, dtype, cfg.lora, cfg.gradient_checkpointing)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg),
    )
    sync(device)
    setup_s = time.perf_counter() - t0
    batches = [
        synthetic_batch(arch, device, dtype, mb, k, seq_len, with_masks=mb // 2, seed=s)
        for s in range(2)
    ]
    tokens = batch_tokens(batches[0], arch) * ga

    engine.train()
    times, losses = [], []
    for step in range(args.warmup + steps):
        if step == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t = time.perf_counter()
        for micro in range(ga):
            out = engine(batch=batches[(step * ga + micro) % len(batches)])
            engine.backward(out["loss"])
            engine.step()
        losses.append(out["loss"].item())  # also waits for the step
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    what, peak = peak_memory(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    zero = f"ZeRO-{cfg.zero.stage}"
    print(f"VSM training step — recipe {args.recipe}, {device}, {cfg.precision}, {zero}")
    table(
        [
            ("trainable parameters", f"{trainable / 1e6:.1f} M"),
            ("build + deepspeed.initialize", f"{setup_s:.1f} s"),
            ("optimizer step", f"{ga} × ({mb} images × {k} queries), {seq_len} text tokens/row"),
            ("LLM positions/row", f"{seq_len - 1 + image_tokens(arch)}"),
            ("loss (random weights)", " → ".join(f"{v:.1f}" for v in losses)),
            ("seconds/step", f"{mean:.2f} (mean of {len(times)}; min {min(times):.2f})"),
            ("samples/s (images)", f"{mb * ga / mean:.2f}"),
            ("tokens/s (text+image)", f"{tokens / mean:,.0f}"),
            (what, f"{peak:.2f} GiB"),
        ]
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
