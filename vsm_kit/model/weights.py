"""Weights in and out: our saves and the original merged-VSM layout, LLaVA bases, all offline.

State dicts are read from `model.safetensors`, `pytorch_model.bin` or their sharded forms (the
`.bin` files with `torch.load(weights_only=True)`); saves are safetensors only. Key names are the
original's (the model uses them as module names), so the key table below only says which keys
to drop; every other key must match a parameter or buffer, with its shape.

A saved config names the CLIP tower as the original's does (see `clip_tower`). Sizes a config
does not give are read from the tensors' shapes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from pathlib import Path
from pickle import UnpicklingError

import torch
from safetensors import SafetensorError, safe_open
from transformers import CLIPVisionConfig, CLIPVisionModel, GenerationConfig, OwlViTConfig

from ..errors import MalformedJsonError, MissingDataError, VsmKitError
from ..fsutil import atomic_dir, save_safetensors
from .architecture import (
    ArchitectureError,
    ClipArch,
    LlamaArch,
    OwlViTArch,
    SamArch,
    VSMArch,
    llama_from_shapes,
    owlvit_from_shapes,
)
from .clip_tower import CLIP_HINT_KEY, find_clip, tower_name
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
# the VSM's own heads (the original merge keeps them in fp32); the rest is the LLaVA LLM
HEAD_PREFIXES = (
    "model.owlvit.",
    "model.visual_projection.",
    "model.prompt_encoder.",
    "model.mask_decoder.",
    "model.text_hidden_fcs_",
)
SHARD_BYTES = 2 << 30  # the default shard size of every folder we write
SHARD_FIX = (
    "re-run the merge that wrote the folder (`vsm-kit merge`), or download or copy the model again"
)


# what reading a truncated or damaged safetensors / .bin file raises
_UNREADABLE = (SafetensorError, OSError, RuntimeError, EOFError, UnpicklingError)


class WeightsError(VsmKitError):
    """A checkpoint does not fit the model: the message lists the keys."""


class TensorStore:
    """Lazy access to the tensors of a Hugging Face style folder: safetensors or `.bin`, sharded
    or not. Tensors are read one at a time (safetensors) or memory-mapped (`.bin`, loaded with
    `weights_only=True`), so whole models need not sit in memory. A missing, truncated or
    damaged file is a `WeightsError` naming it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._where: dict[str, str] = {}
        self._open: dict[str, object] = {}
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = self.folder / index_name
            if index.exists():
                self._where = _weight_map(index)
                missing = sorted(
                    {n for n in self._where.values() if not (self.folder / n).is_file()}
                )
                if missing:
                    raise WeightsError(
                        f"weights shard {self.folder / missing[0]} is missing"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                        + f", though {index.name} names it: {SHARD_FIX}"
                    )
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
            path = self.folder / name
            try:
                self._open[name] = (
                    safe_open(str(path), "pt")
                    if name.endswith(".safetensors")
                    else _load_bin(str(path))
                )
            except FileNotFoundError:
                raise WeightsError(f"weights file {path} is missing: {SHARD_FIX}") from None
            except _UNREADABLE as err:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                raise WeightsError(
                    f"weights file {path} is truncated or damaged ({reason}): {SHARD_FIX}"
                ) from None
        return self._open[name]

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def get(self, key: str) -> torch.Tensor:
        with self._reading(key) as handle:
            return handle.get_tensor(key) if hasattr(handle, "get_tensor") else handle[key]

    def shape(self, key: str) -> tuple[int, ...]:
        """A tensor's shape without reading its values."""
        with self._reading(key) as handle:
            if hasattr(handle, "get_slice"):
                return tuple(handle.get_slice(key).get_shape())
            return tuple(handle[key].shape)

    @contextlib.contextmanager
    def _reading(self, key: str):
        """The open file holding `key`; a file that lacks it (the index names another shard's
        tensor) is a `WeightsError` naming both."""
        name = self._where[key]
        try:
            yield self._handle(name)
        except (SafetensorError, KeyError):
            raise WeightsError(
                f"weights file {self.folder / name} has no tensor {key}, though the folder's "
                f"index names it there: {SHARD_FIX}"
            ) from None

    def count(self, prefix: str) -> int:
        """How many numbered blocks `prefix{i}.` the keys hold (e.g. transformer layers)."""
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        return len({m[1] for k in self._where if (m := pattern.match(k))})


def _weight_map(index: Path) -> dict[str, str]:
    """The key → shard file table of a `*.index.json`."""
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise WeightsError(f"{index} has no weight_map (key → shard file table): {SHARD_FIX}")
    return weight_map


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        offset = len(err.doc[: err.pos].encode("utf-8"))
        raise MalformedJsonError(path, offset, err.lineno, err.colno, err.msg) from None


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
    return _read_json(path)


def _sam_arch(store: TensorStore) -> SamArch:
    """The mask head's sizes from the checkpoint's shapes (the original config has none)."""
    dim = store.shape("model.mask_decoder.iou_token.weight")[1]
    return SamArch(
        embed_dim=dim,
        depth=store.count("model.mask_decoder.transformer.layers."),
        num_heads=max(1, dim // 32),
        mlp_dim=store.shape("model.mask_decoder.transformer.layers.0.mlp.lin1.weight")[0],
        num_multimask_outputs=store.shape("model.mask_decoder.mask_tokens.weight")[0] - 1,
        iou_head_depth=store.count("model.mask_decoder.iou_prediction_head.layers."),
        mask_in_chans=store.shape("model.prompt_encoder.mask_downscaling.3.weight")[0],
    )


def _clip_arch(clip: Path) -> ClipArch:
    c = CLIPVisionConfig.from_pretrained(str(clip))
    return ClipArch(
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        image_size=c.image_size,
        patch_size=c.patch_size,
        projection_dim=c.projection_dim,
    )


def _owlvit_arch(owlvit: Path) -> OwlViTArch:
    """The sizes in an OWL-ViT folder's config.json (a folder only: nothing is looked up)."""
    if not (Path(owlvit) / "config.json").is_file():
        raise MissingDataError(
            Path(owlvit) / "config.json",
            "OWL-ViT config given as --owlvit (owlvit=)",
            "give the OWL-ViT folder the model was trained with (it holds config.json), or "
            "leave --owlvit out to read the sizes from the checkpoint",
        )
    o = OwlViTConfig.from_pretrained(str(owlvit))
    v, t = o.vision_config, o.text_config
    return OwlViTArch(
        hidden_size=v.hidden_size,
        num_hidden_layers=v.num_hidden_layers,
        num_attention_heads=v.num_attention_heads,
        intermediate_size=v.intermediate_size,
        image_size=v.image_size,
        patch_size=v.patch_size,
        text_hidden_size=t.hidden_size,
        text_layers=t.num_hidden_layers,
        text_heads=t.num_attention_heads,
        text_intermediate=t.intermediate_size,
        projection_dim=o.projection_dim,
    )


def _owlvit_from_tensors(store: TensorStore) -> OwlViTArch:
    """The OWL-ViT part's sizes from the checkpoint's shapes: width and patch size from the patch
    embedding, image size from the position table (grid² + CLS), layers, MLP width from `fc1`,
    the class head's (= the det [LOC] projection's) width from `class_head.dense0`; heads as
    `owlvit_from_shapes` says."""
    vision = "model.owlvit.vision_model."
    keys = {
        "patch": vision + "embeddings.patch_embedding.weight",
        "positions": vision + "embeddings.position_embedding.weight",
        "fc1": vision + "encoder.layers.0.mlp.fc1.weight",
        "class": "model.owlvit.class_head.dense0.weight",
    }
    absent = [k for k in keys.values() if k not in store]
    if absent:
        raise WeightsError(
            f"the checkpoint has no {absent[0]} to read the OWL-ViT architecture from: pass an "
            "OWL-ViT folder with --owlvit (Python: owlvit=...)"
        )
    hidden, _, patch, _ = store.shape(keys["patch"])
    grid = math.isqrt(store.shape(keys["positions"])[0] - 1)
    try:
        return owlvit_from_shapes(
            hidden_size=hidden,
            num_hidden_layers=store.count(vision + "encoder.layers."),
            intermediate_size=store.shape(keys["fc1"])[0],
            image_size=grid * patch,
            patch_size=patch,
            text_hidden_size=store.shape(keys["class"])[0],
        )
    except ArchitectureError as err:
        raise WeightsError(
            f"{err.problem}: pass an OWL-ViT folder with --owlvit (Python: owlvit=...)"
        ) from None


def _llama_arch(config: dict, store: TensorStore) -> LlamaArch:
    """LLaMA sizes from the config, the tensors' shapes filling what it leaves out (the head
    count from a saved `rotary_emb.inv_freq`, which is head_dim / 2 long)."""
    fields = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    known = {
        k: config[k] for k in (*fields, "max_position_embeddings", "rms_norm_eps") if k in config
    }
    if all(k in known for k in fields):
        return LlamaArch(**known)
    try:
        hidden = known.pop("hidden_size", None) or store.shape("model.embed_tokens.weight")[1]
        layers = known.pop("num_hidden_layers", None) or store.count("model.layers.")
        mlp = (
            known.pop("intermediate_size", None)
            or store.shape("model.layers.0.mlp.gate_proj.weight")[0]
        )
    except KeyError as err:
        raise WeightsError(
            f"config.json gives no LLaMA sizes and the checkpoint lacks {err}"
        ) from None
    inv_freq = "model.layers.0.self_attn.rotary_emb.inv_freq"
    if "num_attention_heads" not in known and inv_freq in store:
        known["num_attention_heads"] = hidden // (2 * store.shape(inv_freq)[0])
    try:
        return llama_from_shapes(hidden, layers, mlp, **known)
    except ArchitectureError as err:
        raise WeightsError(f"{err.problem}: add num_attention_heads to config.json") from None


def _arch_from(config: dict, clip: Path, owlvit: Path | None, store: TensorStore) -> VSMArch:
    """The architecture of a checkpoint: our config block when present; else the CLIP folder's
    config, the OWL-ViT folder's (or the tensors'), the config's LLaMA fields (or the tensors')
    and the mask head's tensors."""
    if "vsm_arch" in config:
        return VSMArch.from_dict(config["vsm_arch"])
    if owlvit is not None:
        owl_arch, source = _owlvit_arch(owlvit), f"the OWL-ViT folder {owlvit} (--owlvit)"
    else:
        owl_arch, source = _owlvit_from_tensors(store), "the checkpoint's class head"
    out_dim = config.get("out_dim", owl_arch.text_hidden_size)
    if out_dim != owl_arch.text_hidden_size:
        raise WeightsError(
            f"config out_dim {out_dim} does not match the text width "
            f"{owl_arch.text_hidden_size} of {source}"
        )
    sam = _sam_arch(store) if "model.mask_decoder.iou_token.weight" in store else SamArch()
    return VSMArch(
        _llama_arch(config, store),
        _clip_arch(clip),
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

    `clip`: the CLIP vision tower (default: found from the config, see `find_clip`); `owlvit`:
    an OWL-ViT folder giving the detector's architecture (default: read from the checkpoint's
    tensors); `arch`: the full architecture, for checkpoints whose sizes neither says. Every
    tensor is cast to `dtype`, whatever dtype it was saved in (the original's folder mixes bf16
    and fp32), so the model runs in one dtype. Nothing is downloaded and no pretrained weight is
    loaded only to be overwritten."""
    folder = Path(folder)
    config = read_config(folder)
    clip_dir = find_clip(folder, config, clip)
    store = TensorStore(folder)
    arch = arch or _arch_from(config, clip_dir, Path(owlvit) if owlvit else None, store)
    tokenizer, ids = load_tokenizer(folder, config.get("model_max_length", 512))
    vocab = config.get("vocab_size") or store.shape("model.embed_tokens.weight")[0]
    cfg = llama_config(arch, vocab, loc_token_idx=ids.loc)
    model = VSMForCausalLM(cfg, arch, clip=CLIPVisionModel.from_pretrained(str(clip_dir)))
    check_and_load(
        model, {k: store.get(k) for k in store.keys()}, allow_missing=("model.vision_tower.",)
    )
    model.loc_token_idx = ids.loc
    return model.to(device=device, dtype=dtype).eval(), tokenizer, ids


def original_config(
    model: VSMForCausalLM, clip_name: str, dtype: torch.dtype | None = None
) -> dict:
    """config.json in the original merged model's form (the tower named by `clip_name`, the
    LLM's `dtype` as `torch_dtype`), plus our architecture block."""
    cfg = model.config.to_dict()
    cfg.pop("dtype", None)  # transformers 5's name for what the original calls torch_dtype
    cfg.update(
        {
            "model_type": "llava",
            "architectures": ["VSMForCausalLM"],
            "torch_dtype": str(dtype or model.lm_head.weight.dtype).removeprefix("torch."),
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
    clip: str | Path,
    dtype: torch.dtype | None = None,
    head_dtype: torch.dtype | None = None,
) -> Path:
    """Save weights (safetensors, without the CLIP tower), config, generation config, tokenizer
    and both image-processor configs into `out`, written in a temporary folder beside it and
    renamed into place at the end.

    `clip`: the CLIP tower the model runs with (a folder or a hub name); the config names it by
    `tower_name` and, for a folder, records where it lies relative to `out`. `dtype`: the LLM's
    tensors (default: as they are); `head_dtype`: the VSM heads' (`HEAD_PREFIXES`; default:
    `dtype`). The original's merge saves bf16 and fp32."""
    out = Path(out)
    head_dtype = head_dtype or dtype
    config = original_config(model, tower_name(clip), dtype)
    if Path(clip).expanduser().is_dir():
        try:
            config[CLIP_HINT_KEY] = os.path.relpath(
                Path(clip).expanduser().resolve(), out.resolve()
            )
        except ValueError:  # on another drive (Windows): no relative path exists
            pass
    state = {}
    for k, v in model.state_dict().items():
        if any(re.search(p, k) for p in IGNORED_KEYS):
            continue
        to = head_dtype if k.startswith(HEAD_PREFIXES) else dtype
        state[k] = (v.to(to) if to and v.is_floating_point() else v).contiguous()
    size = sum(v.numel() * v.element_size() for v in state.values())
    with atomic_dir(out, size=size) as tmp:
        _save_sharded(state, tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).save_pretrained(str(tmp))
        save_tokenizer(tokenizer, tmp)
        ImageInputs(model.arch.owlvit.image_size, model.arch.clip.image_size).save_pretrained(tmp)
    return out


class ShardWriter:
    """Writes tensors added one at a time as safetensors shards of at most `shard_bytes` (a
    tensor larger than that gets a shard of its own): `model.safetensors` when one shard
    suffices, else `model-i-of-n.safetensors` and their index. Holds one shard at a time."""

    def __init__(self, folder: Path, shard_bytes: int = SHARD_BYTES):
        self.folder, self.shard_bytes = Path(folder), shard_bytes
        self.shard: dict[str, torch.Tensor] = {}
        self.size, self.names, self.weight_map = 0, [], {}

    def add(self, key: str, tensor: torch.Tensor) -> None:
        n = tensor.numel() * tensor.element_size()
        if self.shard and self.size + n > self.shard_bytes:
            self._flush()
        self.shard[key] = tensor
        self.size += n

    def _flush(self) -> None:
        name = f"model-{len(self.names) + 1:05d}.safetensors"  # renamed once the count is known
        save_safetensors(self.shard, self.folder / name)
        self.names.append(name)
        self.weight_map.update(dict.fromkeys(self.shard, name))
        self.shard, self.size = {}, 0

    def close(self) -> None:
        """Write the last shard, then name the shards and write the index."""
        if not self.names:
            save_safetensors(self.shard, self.folder / "model.safetensors")
            return
        if self.shard:
            self._flush()
        total, final = len(self.names), {}
        for i, name in enumerate(self.names, 1):
            final[name] = f"model-{i:05d}-of-{total:05d}.safetensors"
            (self.folder / name).rename(self.folder / final[name])
        weight_map = {k: final[v] for k, v in self.weight_map.items()}
        (self.folder / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2)
        )


def _save_sharded(state: dict[str, torch.Tensor], folder: Path) -> None:
    writer = ShardWriter(folder)
    for k, v in state.items():
        writer.add(k, v)
    writer.close()


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
    check_and_load(
        model, read_state_dict(base), allow_missing=(*HEAD_PREFIXES, "model.vision_tower.")
    )
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    model.config.loc_token_idx = ids.loc
    model.loc_token_idx = ids.loc
    return model, tokenizer, ids
