"""Tiny base weights in the real on-disk formats: a LLaVA-format LLaMA base with its
SentencePiece tokenizer, a CLIP vision tower folder and an OWL-ViT folder, all loaded by the same
code as the real weights: randomly initialised under a fixed seed, or fitted (`_bases`)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionModel,
    OwlViTForObjectDetection,
    OwlViTImageProcessor,
)

from ..data.classes import cocostuff_classes, objects365_classes
from ..fsutil import file_mode, save_safetensors
from ..model.architecture import VSMArch
from ..model.heads import owlvit_config
from ..model.tokenizer import IM_END, IM_PATCH, IM_START, save_tokenizer
from ..model.vsm import clip_config, llama_config

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
VOCAB = 1000  # SentencePiece pieces; the markers <im_patch>, <im_start>, <im_end> follow


def _corpus() -> str:
    lines = [
        "A chat between a curious human and an artificial intelligence assistant. The assistant "
        "gives helpful, detailed, and polite answers to the human's questions.",
        "USER: Please locate the object in this image. ASSISTANT: Sure, it is here.",
        "According to the common sense knowledge and possible visual cues, what is the most "
        "likely location of the target in the image? It is most likely to appear on the table.",
        "What objects can you see in this image? I can see a red cup and an orange box.",
    ]
    lines += list(cocostuff_classes()) + list(objects365_classes())
    lines += [
        "red green blue yellow orange purple white black brown pink left right middle",
        "the one next to that is on of and a an 0123456789 .,:;!?'\"()[]/-_",
    ]
    return "\n".join(lines * 3)


# LLaMA's SentencePiece trainer settings (identity normalisation, whitespace kept, dummy prefix,
# byte fallback, digits split), so every whitespace rule of the original's tokenizer shows
SENTENCEPIECE_SETTINGS = {
    "model_type": "bpe",
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": True,
    "byte_fallback": True,
    "split_digits": True,
    "allow_whitespace_only_pieces": True,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "character_coverage": 1.0,
}


def _declared(token: str, as_added_token: bool, config: bool = False):
    """A special token as LLaMA folders declare it: a string, or an AddedToken record (tagged
    with `__type` in tokenizer_config.json, untagged in special_tokens_map.json)."""
    if not as_added_token:
        return token
    flags = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return ({"__type": "AddedToken"} if config else {}) | {"content": token, **flags}


def write_tokenizer(
    folder: Path, lines: list[str] | None = None, vocab: int = VOCAB, as_added_tokens=False
) -> int:
    """A BPE SentencePiece model with LLaMA's settings, trained offline on `lines` (default:
    the demo corpus) and saved as LLaVA-Lightning ships its tokenizer: tokenizer.model,
    tokenizer_config.json without a `legacy` key (it predates the flag), special_tokens_map.json
    and added_tokens.json with the three image markers. `as_added_tokens` declares the special
    tokens as AddedToken records (as LLaMA conversions do) instead of plain strings. Returns the
    vocabulary size including the markers."""
    folder.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()  # trained from memory: no file paths end up in the model's proto
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines or _corpus().splitlines()),
        model_writer=model,
        vocab_size=vocab,
        num_threads=1,
        minloglevel=2,
        **SENTENCEPIECE_SETTINGS,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    names = (("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>"))
    specials = {key: _declared(token, as_added_tokens) for key, token in names}
    config = {
        "tokenizer_class": "LlamaTokenizer",
        **{key: _declared(token, as_added_tokens, config=True) for key, token in names},
        "model_max_length": 2048,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    markers = {IM_PATCH: vocab, IM_START: vocab + 1, IM_END: vocab + 2}
    (folder / "added_tokens.json").write_text(json.dumps(markers, indent=2))
    return vocab + 3


def _save_model(model, folder: Path) -> None:
    """`save_pretrained` with the usual permissions (safetensors writes its files 0600)."""
    model.save_pretrained(folder)
    for weights in folder.glob("*.safetensors"):
        os.chmod(weights, file_mode())


def write_clip(folder: Path, arch: VSMArch) -> CLIPVisionModel:
    """A random CLIP vision tower (seeded) saved with its processor; returns the model."""
    torch.manual_seed(1)
    model = CLIPVisionModel(clip_config(arch.clip))
    _save_model(model, folder)
    CLIPImageProcessor(
        size={"shortest_edge": arch.clip.image_size},
        crop_size={"height": arch.clip.image_size, "width": arch.clip.image_size},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ).save_pretrained(folder)
    return model


def write_owlvit(folder: Path, arch: VSMArch) -> OwlViTForObjectDetection:
    """A tiny detector that starts where a pretrained one does: box offsets near zero (boxes sit
    on their patches) and class logits near a low prior, instead of the saturated outputs that
    random heads give. Saved with its processor; returns the model."""
    torch.manual_seed(2)
    detector = OwlViTForObjectDetection(owlvit_config(arch.owlvit))
    with torch.no_grad():
        detector.box_head.dense2.weight.normal_(0.0, 1e-3)
        detector.box_head.dense2.bias.zero_()
        for layer in (detector.class_head.logit_shift, detector.class_head.logit_scale):
            layer.weight.normal_(0.0, 1e-3)
            layer.bias.zero_()
        detector.class_head.logit_shift.bias.fill_(-4.0)  # prior probability about 2%
    _save_model(detector, folder)
    s = arch.owlvit.image_size
    OwlViTImageProcessor(
        size={"height": s, "width": s},
        crop_size={"height": s, "width": s},
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    ).save_pretrained(folder)
    return detector


def write_llava_base(folder: Path, arch: VSMArch, clip_name: str, fit=None) -> None:
    """LLaMA + `model.mm_projector`, with a LLaVA v1 `config.json` (model_type "llava");
    `fit(lm, projector, tokenizer)` trains the two before they are saved."""
    from transformers import LlamaForCausalLM

    from ..model.tokenizer import load_tokenizer

    vocab = write_tokenizer(folder)
    torch.manual_seed(3)
    lm = LlamaForCausalLM(llama_config(arch, vocab))
    proj = torch.nn.Linear(arch.clip.hidden_size, arch.llama.hidden_size)
    if fit is not None:
        fit(lm, proj, load_tokenizer(folder)[0])
    state = {k: v.detach().contiguous() for k, v in lm.state_dict().items()}
    state["model.mm_projector.weight"] = proj.weight.detach().contiguous()
    state["model.mm_projector.bias"] = proj.bias.detach().contiguous()
    save_safetensors(state, folder / "model.safetensors")
    config = lm.config.to_dict()
    config.update(
        {
            "model_type": "llava",
            "architectures": ["LlavaLlamaForCausalLM"],
            "mm_hidden_size": arch.clip.hidden_size,
            "mm_vision_select_layer": arch.mm_vision_select_layer,
            "mm_vision_select_feature": "patch",
            "mm_vision_tower": clip_name,
            "mm_use_im_start_end": True,
            "mm_use_im_patch_token": False,
            "tune_mm_mlp_adapter": False,
            "use_mm_proj": True,
            "use_cache": False,
        }
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def write_vsm_original_layout(
    folder: Path, base: Path, clip: Path, owlvit: Path, arch: VSMArch
) -> None:
    """A tiny VSM (random heads) saved as the original merge script wrote the published model:
    prefix-free keys, `rotary_emb.inv_freq` buffers included, two shards with an index, the LLM
    in bf16 and the heads in fp32, the original config fields only (no architecture block, the
    CLIP tower by name), tokenizer with [LOC]. The fixture for loading that layout."""
    from ..model.weights import HEAD_PREFIXES, init_vsm_from_base, original_config

    torch.manual_seed(4)
    model, tokenizer, _ = init_vsm_from_base(base, clip, owlvit, arch)
    state = {
        k: (v if k.startswith(HEAD_PREFIXES) else v.to(torch.bfloat16)).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("model.vision_tower.")
    }
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    for i in range(model.config.num_hidden_layers):
        state[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(state)
    half = len(keys) // 2
    weight_map = {}
    for n, part in enumerate((keys[:half], keys[half:]), 1):
        name = f"model-{n:05d}-of-00002.safetensors"
        save_safetensors({k: state[k] for k in part}, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2)
    )
    config = original_config(model, clip.name, torch.bfloat16)  # found beside it by name
    config.pop("vsm_arch")
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    save_tokenizer(tokenizer, folder)


def write_weights(
    root: Path, arch: VSMArch, bases: str = "random", seed: int = 0, progress: bool = True
) -> None:
    """`root/{llava-tiny, clip-tiny, owlvit-tiny, vsm-tiny}`; `bases`: "random" (seeded
    initialisations, in seconds) or "pretrained" (fitted to the demo's scenes, cached:
    `_bases.pretrained_bases`)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if bases == "pretrained":
        from ._bases import copy_bases, pretrained_bases

        root.mkdir(parents=True, exist_ok=True)
        copy_bases(pretrained_bases(arch, seed, progress=progress), root)
    else:
        write_clip(root / "clip-tiny", arch)
        write_owlvit(root / "owlvit-tiny", arch)
        write_llava_base(root / "llava-tiny", arch, "clip-tiny")
    write_vsm_original_layout(
        root / "vsm-tiny", root / "llava-tiny", root / "clip-tiny", root / "owlvit-tiny", arch
    )
