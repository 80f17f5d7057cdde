"""Weights in and out: our saves and the original merged-VSM layout, LLaVA bases, all offline.

State dicts are read from `model.safetensors`, `pytorch_model.bin` or their sharded forms (the
`.bin` files with `torch.load(weights_only=True)`); saves are safetensors only. Key names are the
original's (the model uses them as module names), so the key table below only says which keys
to drop; every other key must match a parameter or buffer, with its shape."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel, GenerationConfig, OwlViTConfig

from ..errors import MissingDataError, VsmKitError
from ..fsutil import atomic_dir
from .architecture import ClipArch, LlamaArch, OwlViTArch, SamArch, VSMArch, vsm_7b
from .heads import OwlViTParts
from .image_inputs import ImageInputs
from .tokenizer import load_tokenizer, save_tokenizer
from .vsm import VSMForCausalLM, llama_config

# keys a checkpoint may carry that are recomputed or loaded elsewhere, never loaded
IGNORED_KEYS = {
    r"\.rotary_emb\.inv_freq$": "recomputed (transformers 4.31 saved it, bf16-rounded)",
    r"\.position_ids$": "buffer whose presence depends on the transformers version",
    r"^model\.vision_tower\.": "the CLIP tower is loaded from its own folder",
}
SHARD_BYTES = 2 << 30


class WeightsError(VsmKitError):
    """A checkpoint does not fit the model: the message lists the keys."""


class TensorStore:
    """Lazy access to the tensors of a Hugging Face style folder: safetensors or `.bin`, sharded
    or not. Tensors are read one at a time (safetensors) or memory-mapped (`.bin`, loaded with
    `weights_only=True`), so whole models need not sit in memory."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._where: dict[str, str] = {}
        self._open: dict[str, object] = {}
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = self.folder / index_name
            if index.exists():
                self._where = json.loads(index.read_text())["weight_map"]
                return
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (self.folder / name).exists():
                self._where = dict.fromkeys(self._handle(name).keys(), name)
                return
        raise MissingDataError(
            self.folder / "model.safetensors",
            "model weights",
            "point at a folder holding model.safetensors or pytorch_model*.bin",
        )

    def _handle(self, name: str):
        if name not in self._open:
            path = str(self.folder / name)
            self._open[name] = (
                safe_open(path, "pt") if name.endswith(".safetensors") else _load_bin(path)
            )
        return self._open[name]

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        handle = self._handle(self._where[key])
        return handle.get_tensor(key) if hasattr(handle, "get_tensor") else handle[key]


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face style folder (safetensors or .bin, sharded or not)."""
    store = TensorStore(folder)
    return {k: store.get(k) for k in store.keys()}


def _load_bin(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def read_config(folder: Path) -> dict:
    """config.json as a dict. Its `model_type` "llava" names the original LLaVA-LLaMA format, not
    transformers' own LLaVA, so it is never handed to AutoConfig."""
    path = Path(folder) / "config.json"
    if not path.exists():
        raise MissingDataError(path, "model config", "point at a model folder with config.json")
    return json.loads(path.read_text())


def resolve_local(name_or_path: str | None, base: Path, what: str) -> Path:
    """A local folder for a hub name or path: absolute, relative to `base`, or an error that
    says how to give it (nothing is downloaded)."""
    if name_or_path:
        for cand in (Path(name_or_path), base / name_or_path):
            if cand.is_dir():
                return cand.resolve()
    raise MissingDataError(
        Path(str(name_or_path)),
        what,
        f"download it once and pass its local folder (the config names {name_or_path!r})",
    )


def _sam_arch(store: TensorStore) -> SamArch:
    """The mask head's sizes from the checkpoint's shapes (the original config has none)."""
    dim = store.get("model.mask_decoder.iou_token.weight").shape[1]
    layers = {
        k.split(".")[4]
        for k in store.keys()
        if k.startswith("model.mask_decoder.transformer.layers.")
    }
    iou_layers = {
        k.split(".")[4]
        for k in store.keys()
        if k.startswith("model.mask_decoder.iou_prediction_head.layers.")
    }
    return SamArch(
        embed_dim=dim,
        depth=len(layers),
        num_heads=max(1, dim // 32),
        mlp_dim=store.get("model.mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0],
        num_multimask_outputs=store.get("model.mask_decoder.mask_tokens.weight").shape[0] - 1,
        iou_head_depth=len(iou_layers),
        mask_in_chans=store.get("model.prompt_encoder.mask_downscaling.3.weight").shape[0],
    )


def _arch_from(config: dict, clip: Path, owlvit: Path | None, store: TensorStore) -> VSMArch:
    if "vsm_arch" in config:
        return VSMArch.from_dict(config["vsm_arch"])
    c = CLIPVisionConfig.from_pretrained(str(clip))
    clip_arch = ClipArch(
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.image_size,
        c.patch_size,
        c.projection_dim,
    )
    if owlvit is not None:
        o = OwlViTConfig.from_pretrained(str(owlvit))
        v, t = o.vision_config, o.text_config
        owl_arch = OwlViTArch(
            v.hidden_size,
            v.num_hidden_layers,
            v.num_attention_heads,
            v.intermediate_size,
            v.image_size,
            v.patch_size,
            t.hidden_size,
            t.num_hidden_layers,
            t.num_attention_heads,
            t.intermediate_size,
            o.projection_dim,
        )
    else:  # the original hard-codes google/owlvit-base-patch16
        owl_arch = vsm_7b().owlvit
    llama = LlamaArch(
        config["hidden_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["intermediate_size"],
        config.get("max_position_embeddings", 2048),
        config.get("rms_norm_eps", 1e-6),
    )
    out_dim = config.get("out_dim", owl_arch.text_hidden_size)
    if out_dim != owl_arch.text_hidden_size:
        raise WeightsError(
            f"config out_dim {out_dim} does not match OWL-ViT's text width "
            f"{owl_arch.text_hidden_size}"
        )
    sam = _sam_arch(store) if "model.mask_decoder.iou_token.weight" in store else SamArch()
    return VSMArch(
        llama,
        clip_arch,
        owl_arch,
        sam,
        mm_vision_select_layer=config.get("mm_vision_select_layer", -2),
    )


def check_and_load(
    model: torch.nn.Module, state: dict[str, torch.Tensor], allow_missing: tuple[str, ...] = ()
) -> list[str]:
    """Load `state` strictly after dropping `IGNORED_KEYS`; a readable error names every missing,
    unexpected and mis-shaped key. Returns the ignored keys."""
    ignored = [k for k in state if any(re.search(p, k) for p in IGNORED_KEYS)]
    state = {k: v for k, v in state.items() if k not in set(ignored)}
    own = {
        k: v
        for k, v in model.state_dict().items()
        if not any(re.search(p, k) for p in IGNORED_KEYS)
    }
    missing = [k for k in own if k not in state and not k.startswith(allow_missing)]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        lines = ["checkpoint does not fit the model:"]
        for title, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", shapes),
        ):
            if keys:
                lines.append(
                    f"  {title} ({len(keys)}): "
                    + ", ".join(keys[:12])
                    + (" …" if len(keys) > 12 else "")
                )
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=False)
    return ignored


def load_vsm(
    folder: str | Path,
    clip: str | Path | None = None,
    owlvit: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    arch: VSMArch | None = None,
):
    """(model, tokenizer, special ids) from our save or an original merged VSM folder.

    `clip`: the CLIP vision tower folder (default: the config's `vision_tower`, resolved
    locally); `owlvit`: an OWL-ViT folder for the architecture of an original checkpoint
    (default: B/16 constants); `arch`: the full architecture, for checkpoints whose heads differ
    from the published sizes. Nothing is downloaded and no pretrained weight is loaded only to
    be overwritten."""
    folder = Path(folder)
    config = read_config(folder)
    clip_dir = resolve_local(
        str(clip) if clip else config.get("vision_tower") or config.get("mm_vision_tower"),
        folder,
        "CLIP vision tower",
    )
    store = TensorStore(folder)
    arch = arch or _arch_from(config, clip_dir, Path(owlvit) if owlvit else None, store)
    tokenizer, ids = load_tokenizer(folder, config.get("model_max_length", 512))
    cfg = llama_config(arch, config["vocab_size"], loc_token_idx=ids.loc)
    model = VSMForCausalLM(cfg, arch, clip=CLIPVisionModel.from_pretrained(str(clip_dir)))
    check_and_load(
        model, {k: store.get(k) for k in store.keys()}, allow_missing=("model.vision_tower.",)
    )
    model.loc_token_idx = ids.loc
    return model.to(device=device, dtype=dtype).eval(), tokenizer, ids


def original_config(model: VSMForCausalLM, clip_name: str) -> dict:
    """config.json in the original merged model's form, plus our architecture block."""
    cfg = model.config.to_dict()
    cfg.update(
        {
            "model_type": "llava",
            "architectures": ["VSMForCausalLM"],
            "train_mask_decoder": True,
            "out_dim": model.arch.owlvit.text_hidden_size,
            "vision_tower": clip_name,
            "mm_vision_tower": clip_name,
            "mm_hidden_size": model.arch.clip.hidden_size,
            "mm_vision_select_layer": model.arch.mm_vision_select_layer,
            "mm_vision_select_feature": "patch",
            "mm_use_im_start_end": True,
            "mm_use_im_patch_token": False,
            "use_cache": False,
            "vsm_arch": model.arch.to_dict(),
        }
    )
    cfg.pop("loc_token_idx", None)
    return cfg


def save_vsm(
    model: VSMForCausalLM,
    tokenizer,
    out: str | Path,
    clip_name: str,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save weights (safetensors, without the CLIP tower), config, generation config, tokenizer
    and both image-processor configs into `out`, written in a temporary folder beside it and
    renamed into place at the end."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        state = {
            k: (v.to(dtype) if dtype and v.is_floating_point() else v).contiguous()
            for k, v in model.state_dict().items()
            if not any(re.search(p, k) for p in IGNORED_KEYS)
        }
        _save_sharded(state, tmp)
        (tmp / "config.json").write_text(json.dumps(original_config(model, clip_name), indent=2))
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)
        ImageInputs(model.arch.owlvit.image_size, model.arch.clip.image_size).save_pretrained(tmp)
    return out


def _save_sharded(state: dict[str, torch.Tensor], folder: Path) -> None:
    shards, current, size = [], {}, 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if current and size + n > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += n
    shards.append(current)
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2)
    )


def init_vsm_from_base(
    base: str | Path, clip: str | Path, owlvit: str | Path, arch: VSMArch | None = None
):
    """A fresh VSM for training: a LLaVA base (LLaMA + mm_projector, LLaVA v1 folder), the CLIP
    tower, pretrained OWL-ViT parts, random heads; embeddings resized for [LOC].
    Returns (model, tokenizer, special ids)."""
    base = Path(base)
    config = read_config(base)
    arch = arch or _arch_from(config, Path(clip), Path(owlvit), TensorStore(base))
    tokenizer, ids = load_tokenizer(base, config.get("model_max_length", 512))
    cfg = llama_config(arch, config["vocab_size"], loc_token_idx=ids.loc)
    model = VSMForCausalLM(
        cfg,
        arch,
        owlvit=OwlViTParts.from_pretrained(str(owlvit)),
        clip=CLIPVisionModel.from_pretrained(str(clip)),
    )
    heads = (
        "model.owlvit.",
        "model.visual_projection.",
        "model.prompt_encoder.",
        "model.mask_decoder.",
        "model.text_hidden_fcs_",
        "model.vision_tower.",
    )
    check_and_load(model, read_state_dict(base), allow_missing=heads)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.loc_token_idx = ids.loc
    model.loc_token_idx = ids.loc
    return model, tokenizer, ids
