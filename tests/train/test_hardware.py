"""The hardware probe, the memory estimate and the suggested run settings (no GPU needed)."""

import pytest
import torch

from vsm_kit.model.architecture import VOCAB_SIZES, vsm_7b, vsm_tiny
from vsm_kit.model.vsm import VSMForCausalLM, llama_config
from vsm_kit.train.config import ConfigError, LoraConfig, RunConfig
from vsm_kit.train.hardware import (
    FIT_FRACTION,
    GPU,
    GiB,
    Hardware,
    count_parameters,
    estimate_for,
    estimate_memory,
    probe,
    suggest,
)
from vsm_kit.train.lora import wrap_lora

H100 = GPU("NVIDIA H100 80GB HBM3", 80 * GiB, (9, 0), bf16=True)
T4 = GPU("Tesla T4", 16 * GiB, (7, 5), bf16=False)
RTX = GPU("NVIDIA GeForce RTX 4090", 24 * GiB, (8, 9), bf16=True)
# the 7B VSM's parameters without LoRA, counted once from a meta-device VSMForCausalLM
VSM_7B_PARAMS = 7_175_888_438


def recipe(**changes) -> RunConfig:
    return RunConfig().replace(**changes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a CPU-only machine")
def test_probe_on_this_machine_is_cpu_with_gloo():
    hw = probe()
    assert hw.gpus == () and hw.accelerator == "cpu" and hw.backend == "gloo"
    assert hw.ram > GiB and hw.cpu_count >= 1
    assert hw.describe().startswith(f"CPU only: {hw.cpu_count} cores")
    assert "DeepSpeed CPU accelerator (gloo)" in hw.describe()


def test_describe_lists_each_gpu():
    hw = Hardware((H100, T4), 16, 128 * GiB)
    assert hw.accelerator == "cuda" and hw.backend == "nccl"
    lines = hw.describe().splitlines()
    assert lines[0] == "2 GPU(s), 16 cores, 128.0 GiB RAM → DeepSpeed cuda accelerator (nccl)"
    assert lines[1] == "  cuda:0 NVIDIA H100 80GB HBM3: 80.0 GiB, sm 9.0, bf16"
    assert lines[2] == "  cuda:1 Tesla T4: 16.0 GiB, sm 7.5, no bf16"


def test_counts_match_every_module_of_a_built_model():
    arch, vocab = vsm_tiny(), VOCAB_SIZES["tiny"]
    with torch.device("meta"):
        model = VSMForCausalLM(llama_config(arch, vocab, loc_token_idx=vocab - 1), arch)
    counts = count_parameters(arch, vocab)
    real = {k: 0 for k in counts}
    for name, p in model.named_parameters():
        (module,) = [k for k in counts if name == k or name.startswith(k + ".")]
        real[module] += p.numel()
    assert real.pop("lora") == 0  # the bare model has no adapters
    assert {k: v for k, v in counts.items() if k != "lora"} == real


@pytest.mark.parametrize("projector", [False, True])
def test_estimate_trains_what_the_lora_wrapping_trains(projector):
    """The estimate's trainable count is the wrapped tiny model's: both read one module list."""
    arch, vocab = vsm_tiny(), VOCAB_SIZES["tiny"]
    lora = LoraConfig(targets=["q_proj", "v_proj", "down_proj"], train_mm_projector=projector)
    model = VSMForCausalLM(llama_config(arch, vocab, loc_token_idx=vocab - 1), arch)
    wrapped = wrap_lora(model, lora)
    real = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert estimate_memory(arch, vocab_size=vocab, lora=lora).trainable_params == real


def test_7b_counts():
    counts = count_parameters(vsm_7b())
    assert counts["lora"] == 4_194_304  # 32 layers × (q, v) × r 8 × (4096 in + 4096 out)
    assert sum(counts.values()) - counts["lora"] == VSM_7B_PARAMS
    assert counts["model.mask_decoder"] == 4_150_500
    assert counts["model.vision_tower"] == 303_179_776  # CLIP ViT-L/14
    assert counts["model.owlvit.vision_model"] == 87_418_368  # OWL-ViT B/16 at 768 px
    with pytest.raises(ConfigError, match="lora.targets: .*not LLaMA projections; Fix: use"):
        count_parameters(vsm_7b(), lora=LoraConfig(targets=["qkv"]))


def test_7b_recipe_on_one_gpu():
    e = estimate_memory(vsm_7b(), precision="bf16", micro_batch=4, zero_stage=2, world_size=1)
    # embed_tokens + lm_head (32004 × 4096 each) + the [LOC] MLPs + LoRA + the mask decoder and
    # the small heads: 307.8M trainable; the rest of LLaMA, CLIP and OWL-ViT's towers frozen
    assert e.trainable_params == 307_830_322
    assert e.frozen_params + e.trainable_params == VSM_7B_PARAMS + 4_194_304
    assert e.frozen_weights == 2 * e.frozen_params
    assert e.trainable_weights == e.gradients == 2 * e.trainable_params
    assert e.optimizer == 12 * e.trainable_params  # fp32 master + two moments
    assert 20 * GiB < e.device < 32 * GiB  # with gradient checkpointing (the default)
    full = estimate_memory(vsm_7b(), gradient_checkpointing=False)
    assert full.device > 40 * GiB
    assert full.activations > 4 * e.activations
    assert e.device == sum(e.parts().values()) and e.host == 0


def test_zero_sharding_and_offload():
    one = estimate_memory(vsm_7b(), world_size=1)
    eight = estimate_memory(vsm_7b(), world_size=8)
    assert one.optimizer == pytest.approx(8 * eight.optimizer, rel=1e-8)
    assert one.gradients == pytest.approx(8 * eight.gradients, rel=1e-8)
    assert eight.frozen_weights == one.frozen_weights  # ZeRO-2 keeps every weight on each rank
    zero3 = estimate_memory(vsm_7b(), zero_stage=3, world_size=8)
    assert zero3.frozen_weights == pytest.approx(one.frozen_weights / 8, rel=1e-8)
    assert zero3.gathered > 0

    off = estimate_memory(vsm_7b(), offload_optimizer=True)
    assert off.optimizer == 0 and off.host >= one.optimizer
    assert off.device == one.device - one.optimizer
    params = estimate_memory(vsm_7b(), zero_stage=3, offload_optimizer=True, offload_params=True)
    assert params.frozen_weights == params.trainable_weights == 0
    assert params.host > one.frozen_weights


def test_fp32_counts_four_bytes_and_no_master_copy():
    e = estimate_memory(vsm_tiny(), precision="fp32", vocab_size=VOCAB_SIZES["tiny"])
    assert e.frozen_weights == 4 * e.frozen_params
    assert e.optimizer == 8 * e.trainable_params


def test_80gb_gpu_fits_the_7b_recipe():
    config = recipe()
    s = suggest(Hardware((H100,), 16, 256 * GiB), config)
    assert s.fits and s.message.startswith("fits")
    assert s.fields["precision"] == "bf16"
    assert s.estimate.device <= FIT_FRACTION * H100.memory
    assert s.estimate == estimate_for(s.apply(config))


def test_smaller_gpu_lowers_the_micro_batch_keeping_images_per_step():
    config = recipe()
    s = suggest(Hardware((RTX,), 16, 64 * GiB), config)
    assert s.fits
    assert s.fields["optim.micro_batch"] < config.optim.micro_batch
    mb, accum = s.fields["optim.micro_batch"], s.fields["optim.grad_accum"]
    assert mb * accum == config.optim.micro_batch * config.optim.grad_accum
    assert "optim.micro_batch 4 → " in s.message
    applied = s.apply(config).validate(check_paths=False)
    assert (applied.optim.micro_batch, applied.optim.grad_accum) == (mb, accum)
    assert applied.precision == "bf16" and applied.zero.stage == s.fields["zero.stage"]


def test_16gb_gpu_does_not_fit_and_says_what_to_try():
    s = suggest(Hardware((T4,), 8, 64 * GiB), recipe())
    assert not s.fits
    assert "will not fit" in s.message and "largest GPU has 16 GiB" in s.message
    assert "GPUs of this size with ZeRO-3" in s.message and "tiny" in s.message
    assert s.fields["precision"] == "fp16"  # no bf16 on a T4
    assert s.estimate.device > FIT_FRACTION * T4.memory


def test_too_little_host_ram_for_offload_is_named():
    gpu = GPU("20 GiB card", 20 * GiB, (8, 6), bf16=True)
    s = suggest(Hardware((gpu,), 8, 4 * GiB), recipe())
    assert not s.fits and "offload needs" in s.message and "host RAM" in s.message
    assert suggest(Hardware((gpu,), 8, 64 * GiB), recipe()).fields["zero.offload_optimizer"]


def test_tiny_fits_on_a_cpu_machine_in_fp32():
    config = recipe(**{"weights.arch": "tiny"})
    this_machine = [] if torch.cuda.is_available() else [probe()]
    for hw in [Hardware((), 2, 8 * GiB), *this_machine]:
        s = suggest(hw, config)
        assert s.fits and s.fields["precision"] == "fp32"
        assert s.apply(config).precision == "fp32"
    s = suggest(Hardware((), 2, 8 * GiB), recipe())
    assert not s.fits and "of RAM" in s.message and "a GPU with" in s.message
