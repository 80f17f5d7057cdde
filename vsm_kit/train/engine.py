"""The training engine: one process per rank under the `deepspeed` launcher.

`python -m vsm_kit.train.engine --run-dir DIR` trains the `DIR/config.yaml` run: the VSM built
from the LLaVA base with LoRA (peft), DeepSpeed ZeRO with AdamW + WarmupDecayLR, the hybrid data
stream, validation, best/last checkpoints and exact auto-resume from `DIR/checkpoints`.

Exact resume: every checkpoint holds, per rank, the python/numpy/torch (and CUDA) RNG states and
the sampler position, restored just before the first resumed step, so a run stopped and
relaunched computes the same dropout masks, batches and losses as an uninterrupted one. A
checkpoint resumes only with the world size, micro-batch and gradient accumulation it was
written with (they fix which samples each rank has seen and the schedule's step count); any
other launch is refused, naming both values: relaunch with the recorded ones, or start a fresh
run in another output_dir.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import time
from pathlib import Path

import deepspeed
import numpy as np
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from torch.utils.data import DataLoader

from ..model.architecture import SIZES
from ..model.image_inputs import ImageInputs
from ..model.weights import init_vsm_from_base
from .checkpoints import CheckpointError, Checkpoints
from .collate import Collator
from .config import PRECISIONS, RunConfig
from .hybrid import HybridDataset, StepSampler
from .lora import trainable_summary, wrap_lora
from .runlog import RunLog
from .shm import release_rank_buffer
from .validate import ValidationSet, evaluate

LOSS_KEYS = (
    "loss",
    "ce_loss",
    "mask_bce_loss",
    "mask_dice_loss",
    "mask_loss",
    "detection_loss",
    "detection_loss_ce",
    "detection_loss_bbox",
    "detection_loss_giou",
)
DTYPES = dict(zip(PRECISIONS, (torch.bfloat16, torch.float16, torch.float32), strict=True))


def deepspeed_config(cfg: RunConfig) -> dict:
    """The DeepSpeed config the original builds in code (§7.2), from the run config."""
    o, z = cfg.optim, cfg.zero
    zero = {
        "stage": z.stage,
        "contiguous_gradients": True,
        "overlap_comm": True,
        "reduce_scatter": True,
        "reduce_bucket_size": 5e8,
        "allgather_bucket_size": 5e8,
    }
    if z.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if z.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": o.micro_batch,
        "gradient_accumulation_steps": o.grad_accum,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": o.lr, "weight_decay": o.weight_decay, "betas": list(o.betas)},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                # the schedule of the full run, so --max-steps only stops early
                "total_num_steps": o.epochs * o.steps_per_epoch,
                "warmup_min_lr": 0,
                "warmup_max_lr": o.lr,
                "warmup_num_steps": o.warmup_steps,
                "warmup_type": "linear",
            },
        },
        "fp16": {"enabled": cfg.precision == "fp16"},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "gradient_clipping": o.grad_clip,
        "zero_optimization": zero,
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }


def build_model(cfg: RunConfig):
    """(PEFT-wrapped VSM, tokenizer, special ids) ready for `deepspeed.initialize`."""
    model, tokenizer, ids = init_vsm_from_base(
        cfg.weight_path("base"),
        cfg.weight_path("clip"),
        cfg.weight_path("owlvit"),
        SIZES[cfg.weights.arch](),
    )
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
    return wrap_lora(model, cfg.lora), tokenizer, ids


class _ToDevice:
    """Moves a collated batch to the device; the uint8 image inputs are normalised there and
    take the training dtype."""

    def __init__(self, device: torch.device, dtype: torch.dtype, inputs: ImageInputs):
        self.device, self.dtype, self.inputs = device, dtype, inputs

    def __call__(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, non_blocking=True)
                if k in ("images", "images_clip"):
                    v = self.inputs.normalise(v).to(self.dtype)
                out[k] = v
            elif isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
                out[k] = [t.to(self.device, non_blocking=True) for t in v]
            else:
                out[k] = v
        return out


def train(run_dir: Path) -> None:
    cfg = RunConfig.load(run_dir / "config.yaml").validate()
    accel = get_accelerator()
    deepspeed.init_distributed(dist_backend=accel.communication_backend_name())
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if accel.device_name() != "cpu":
        accel.set_device(local_rank)
    device = torch.device(accel.device_name(local_rank))
    # every rank has now mapped every rank's shared-memory buffer (CPU runs): drop the names so
    # that the memory goes back when the ranks exit, however they exit
    dist.barrier()
    released = _gather([str(p)] if (p := release_rank_buffer(rank)) else [], world)
    ckpt = Checkpoints(run_dir / "checkpoints", rank)
    ga = cfg.optim.grad_accum
    shape = {"world_size": world, "micro_batch": cfg.optim.micro_batch, "grad_accum": ga}
    tag = ckpt.last
    if tag:  # refused before the minutes of building the model
        _check_shape(tag, ckpt.rank_state(tag, rank=0)["shape"], shape)
    # identical initial weights on every rank and launch; a resume then restores the RNG states
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    log = RunLog(run_dir, rank, cfg.total_steps)
    if released:
        log.event("shared_memory", released=released)
    model, tokenizer, ids = build_model(cfg)
    log.event("model", trainable=trainable_summary(model))
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(cfg),
    )
    vsm = engine.module.get_base_model()

    start, best, resume = 0, None, None
    if tag:
        pruned = ckpt.prune() if rank == 0 else []
        _, client = engine.load_checkpoint(str(ckpt.dir), tag=tag)
        resume = ckpt.rank_state(tag)
        start, best = client["step"], client.get("best")
        log.event("resumed", step=start, tag=tag, lr=engine.get_lr()[0], pruned=pruned)

    arch = vsm.arch
    inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
    dataset = HybridDataset(
        cfg.data.data_dir, cfg.data.mix, cfg.seed, cfg.data.targets_per_sample, inputs
    )
    to_device = _ToDevice(device, DTYPES[cfg.precision], dataset.inputs)
    image_tokens = (arch.clip.image_size // arch.clip.patch_size) ** 2
    collator = Collator(tokenizer, ids, cfg.data.model_max_length, image_tokens, truncate=True)
    micro_step = resume["sampler"]["micro_step"] if resume else 0
    sampler = StepSampler(cfg.optim.micro_batch, rank, world, start=micro_step)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.data.workers,
        collate_fn=collator,
        persistent_workers=cfg.data.workers > 0,
    )
    validation = (
        ValidationSet(cfg.data.data_dir, cfg.data.val_dataset, cfg.data.val_limit)
        if cfg.cadence.validate
        else []
    )
    val_collator = Collator(tokenizer, ids, cfg.data.model_max_length, image_tokens, truncate=False)

    if validation and cfg.cadence.validate_first and start == 0:  # the baseline of the curve
        first = evaluate(vsm, validation, val_collator, dataset.inputs, to_device, rank, world)
        log.validation(0, first)
    batches = iter(loader)  # draws from torch's RNG: restore after it, as the first launch
    if resume:
        _set_rng_state(resume["rng"])
    engine.train()
    for step in range(start, cfg.total_steps):
        t0 = time.perf_counter()
        data_secs, digest, skipped = 0.0, None, []
        # the losses' sums, then the count of unreadable images skipped: one all-reduce
        sums = torch.zeros(len(LOSS_KEYS) + 1, dtype=torch.float64)
        for _ in range(ga):
            t = time.perf_counter()
            batch = to_device(next(batches))
            data_secs += time.perf_counter() - t
            digest = digest or _digest(batch["input_ids"])
            skipped += batch["skipped_images"]
            out = engine(batch=batch, giou=cfg.loss.giou)
            engine.backward(out["loss"])
            engine.step()
            sums[:-1] += torch.tensor([out[k].item() for k in LOSS_KEYS], dtype=torch.float64)
        sums[-1] = len(skipped)
        done = step + 1
        if world > 1:
            dist.all_reduce(sums)
        losses = dict(zip(LOSS_KEYS, (sums[:-1] / (ga * world)).tolist(), strict=True))
        if sums[-1] > 0:  # every rank knows, so every rank joins the gather
            log.event("skipped_images", step=done, paths=_gather(skipped, world))
        if done % cfg.cadence.log_every == 0 or done == cfg.total_steps:
            log.step(
                done,
                losses,
                lr=scheduler.get_last_lr()[0],
                secs=time.perf_counter() - t0,
                data_secs=data_secs,
                batch=digest,
                skipped_images=int(sums[-1]),
            )
        last = done == cfg.total_steps
        metrics = None
        if validation and (done % cfg.validate_every == 0 or last):
            metrics = evaluate(
                vsm, validation, val_collator, dataset.inputs, to_device, rank, world
            )
            log.validation(done, metrics)
        improved = metrics is not None and (best is None or metrics["det_acc"] > best)
        if improved or done % cfg.checkpoint_every == 0 or last:
            if improved:
                best = metrics["det_acc"]
            tag = f"global_step{done}"
            rng = _rng_state()
            engine.save_checkpoint(
                str(ckpt.dir),
                tag=tag,
                client_state={"step": done, "best": best},
                save_latest=False,  # Checkpoints.commit moves the pointer once all is written
            )
            # the loader may have prefetched further: the position is what the steps consumed
            position = {"micro_step": done * ga}
            ckpt.save_rank_state(tag, {"rng": rng, "sampler": position, "shape": shape})
            # without validation (--no_eval) the last checkpoint is the best one
            ckpt.commit(tag, best=improved or not validation, metrics=metrics)
            log.event("checkpoint", step=done, tag=tag, best=bool(improved))
    log.finish()
    dist.barrier()


def _check_shape(tag: str, saved: dict, now: dict) -> None:
    """Refuse a resume whose ranks, micro-batch or accumulation differ from the checkpoint's."""
    diff = [f"{k} {saved[k]} (now {now[k]})" for k in now if saved[k] != now[k]]
    if diff:
        raise CheckpointError(
            f"checkpoint {tag} was written with {', '.join(diff)}; an exact resume needs the "
            "same values (they fix the samples each rank has seen): relaunch with them "
            "(--num-gpus / optim.micro_batch / optim.grad_accum), or start a fresh run in "
            "another output_dir"
        )


def _rng_state() -> dict:
    """This rank's RNG states: python `random`, numpy's global, torch CPU and CUDA, in types
    `torch.load(weights_only=True)` reads (numpy's key array as a tensor)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    numpy = (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss)
    state = {"python": random.getstate(), "numpy": numpy}
    state["torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather(items: list, world: int) -> list:
    """Every rank's `items`, concatenated in rank order."""
    if world == 1:
        return items
    parts = [None] * world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def _digest(input_ids: torch.Tensor) -> str:
    """A short fingerprint of a micro-batch (resume tests compare the next batch)."""
    return hashlib.sha1(input_ids.cpu().numpy().tobytes()).hexdigest()[:12]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--local_rank", type=int, default=None)  # set by the deepspeed launcher
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    try:
        train(run_dir)
    except BaseException as err:
        RunLog.fail(run_dir, err)
        raise


if __name__ == "__main__":
    main()
