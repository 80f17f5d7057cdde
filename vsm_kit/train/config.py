"""`RunConfig`: everything one training run needs, as typed dataclasses that save to YAML.

The config flows one way: widget or YAML file → launcher (writes it beside the run) → engine.
`validate()` checks it before anything launches and names the offending field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from ..data.sources import GROUPS, SOURCES
from ..errors import VsmKitError
from ..model.architecture import SIZES
from ..model.losses import GIOU_MODES

PRECISIONS = ("bf16", "fp16", "fp32")  # the one list of precision names (engine.DTYPES maps them)
ARCHS = tuple(SIZES)
# the `nn.Linear` names of a LLaMA decoder layer in transformers: what `lora.targets` may name
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# `VSMForCausalLM` modules trained in full besides LoRA (and model.mm_projector when
# lora.train_mm_projector): what `lora.wrap_lora` unfreezes and `hardware` counts as trainable
FULLY_TRAINED = (
    "lm_head",
    "model.embed_tokens",
    "model.visual_projection",
    "model.prompt_encoder",
    "model.mask_decoder",
    "model.text_hidden_fcs_seg",
    "model.text_hidden_fcs_det",
    "model.owlvit.class_head",
    # trainable by name as in the original, so checkpoints hold it; it runs under no_grad
    # (`VSMForCausalLM.owl_features`), so it never gets a gradient and never changes
    "model.owlvit.layer_norm",
)
MM_PROJECTOR = "model.mm_projector"


class ConfigError(VsmKitError):
    """A field of a run configuration is wrong; `field` is its dotted name."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


def _default_mix() -> dict[str, GroupMix]:
    # train.py: --sample_rates 15,4,4,15; per-group rates 2,1,1 / uniform / (merged file) / 2,1
    return {
        "general_segdet": GroupMix(15, {"objects365": 2, "cocostuff": 1, "paco_lvis": 1}),
        "refer_seg": GroupMix(4, {"refclef": 1, "refcoco": 1, "refcoco+": 1, "refcocog": 1}),
        # the original samples one image of the merged GoldG file: sources weighted by size
        "mixed_grounding": GroupMix(4, {"goldg_mixed": 1, "flickr": 1}, by_size=True),
        "vqa": GroupMix(15, {"possible_locations_conv_86k": 2, "llava_instruct_80k": 1}),
    }


@dataclass
class GroupMix:
    """One `--dataset` group: its rate among groups and the rates of its sources inside it
    (`by_size`: ignore the source rates, draw an image uniformly over all of the group's)."""

    rate: float
    sources: dict[str, float]
    by_size: bool = False


@dataclass
class DataConfig:
    data_dir: str = "data"
    mix: dict[str, GroupMix] = field(default_factory=_default_mix)
    targets_per_sample: int = 3  # --num_classes_per_sample
    model_max_length: int = 512
    val_dataset: str = "refcoco|unc|val"
    val_limit: int | None = None  # validate on the first N val images (None: all)
    workers: int = 2


@dataclass
class WeightsConfig:
    """Local folders (or hub names on a machine that has them cached); relative folders are
    taken inside `dir` when it is set."""

    dir: str = ""
    base: str = "LLaVA-7B-v1.1"
    clip: str = "openai/clip-vit-large-patch14"
    owlvit: str = "google/owlvit-base-patch16"
    arch: str = "7b"  # the heads' sizes: "7b" (the published model) or "tiny" (demo weights)


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    # the original sets mm_projector trainable and PEFT then freezes it again; say which you want
    train_mm_projector: bool = False


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    epochs: int = 40
    steps_per_epoch: int = 2500
    grad_clip: float = 1.0
    micro_batch: int = 4  # images per GPU per forward
    grad_accum: int = 2


@dataclass
class LossConfig:
    """Loss variants. `giou`: "original" is the original's observed GIoU term (a broadcasting
    slip makes it a k-weighted sum over every matched pair, VQA dummies included, §6.3) —
    what the published checkpoint was trained with; "normalized" is the intended mean over
    the valid pairs."""

    giou: str = "original"


@dataclass
class ZeroConfig:
    stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False  # ZeRO-3 only


@dataclass
class CadenceConfig:
    """Every N optimizer steps (0: at the end of every epoch for validate/checkpoint)."""

    log_every: int = 1
    validate_every: int = 0
    checkpoint_every: int = 0
    validate: bool = True  # False = --no_eval: keep the last checkpoint as the best
    validate_first: bool = False  # also validate before the first step (not the original's)


@dataclass
class RunConfig:
    output_dir: str = "runs/vsm"
    seed: int = 0
    precision: str = "bf16"
    max_steps: int | None = None  # stop early (tests, smoke runs); None: epochs × steps_per_epoch
    gradient_checkpointing: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    zero: ZeroConfig = field(default_factory=ZeroConfig)
    cadence: CadenceConfig = field(default_factory=CadenceConfig)

    # ---- derived -----------------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        full = self.optim.epochs * self.optim.steps_per_epoch
        return full if self.max_steps is None else min(full, self.max_steps)

    @property
    def validate_every(self) -> int:
        return self.cadence.validate_every or self.optim.steps_per_epoch

    @property
    def checkpoint_every(self) -> int:
        return self.cadence.checkpoint_every or self.optim.steps_per_epoch

    def weight_path(self, name: str) -> str:
        """`weights.<name>` joined to `weights.dir` when that is set and the name is relative."""
        w = self.weights
        value = getattr(w, name)
        if value and w.dir and not Path(value).is_absolute():
            return str(Path(w.dir).expanduser() / value)
        return value

    def resolved(self) -> RunConfig:
        """Folders made absolute (weights joined to `weights.dir`): the config a run records.
        A `weights.dir` that is not a folder is refused here, before it is dropped."""
        self._check_weights_dir()
        changes = {
            "data.data_dir": _absolute(self.data.data_dir),
            "output_dir": _absolute(self.output_dir),
            "weights.dir": "",
        }
        for name in ("base", "clip", "owlvit"):
            path = self.weight_path(name)
            if path and Path(path).expanduser().exists():
                changes[f"weights.{name}"] = _absolute(path)
        return self.replace(**changes)

    # ---- YAML --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _plain(asdict(self))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        from ..fsutil import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            tmp.write(self.to_yaml().encode())
        return path

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return _build(cls, d or {}, "")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError("config", f"{path} does not exist") from None
        except yaml.YAMLError as err:
            raise ConfigError("config", f"{path} is not valid YAML: {err}") from None
        if d is not None and not isinstance(d, dict):
            raise ConfigError("config", f"{path} must hold a mapping of fields")
        return cls.from_dict(d)

    def get(self, dotted: str) -> Any:
        """The value at a dotted path: `cfg.get("optim.lr")`."""
        node = self
        for key in dotted.split("."):
            node = getattr(node, key)
        return node

    def replace(self, **changes) -> RunConfig:
        """A copy with dotted-path overrides: `cfg.replace(**{"optim.lr": 1e-5})`."""
        d = self.to_dict()
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = d
            for p in parents:
                node = node[p]
            node[leaf] = value
        return RunConfig.from_dict(d)

    # ---- validation --------------------------------------------------------------------------
    def validate(self, check_paths: bool = True) -> RunConfig:
        """Raise `ConfigError` naming the first wrong field; returns self when all is well."""
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"{self.precision!r} is not one of {PRECISIONS}")
        if self.weights.arch not in ARCHS:
            raise ConfigError("weights.arch", f"{self.weights.arch!r} is not one of {ARCHS}")
        if self.loss.giou not in GIOU_MODES:
            raise ConfigError("loss.giou", f"{self.loss.giou!r} is not one of {GIOU_MODES}")
        _validate_mix(self.data.mix)
        positive = {
            "data.targets_per_sample": self.data.targets_per_sample,
            "data.model_max_length": self.data.model_max_length,
            "lora.r": self.lora.r,
            "lora.alpha": self.lora.alpha,
            "optim.epochs": self.optim.epochs,
            "optim.steps_per_epoch": self.optim.steps_per_epoch,
            "optim.micro_batch": self.optim.micro_batch,
            "optim.grad_accum": self.optim.grad_accum,
            "cadence.log_every": self.cadence.log_every,
        }
        if self.max_steps is not None:
            positive["max_steps"] = self.max_steps
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(name, f"must be positive, got {value}")
        non_negative = {
            "data.workers": self.data.workers,
            "optim.warmup_steps": self.optim.warmup_steps,
            "optim.weight_decay": self.optim.weight_decay,
            "optim.grad_clip": self.optim.grad_clip,
            "cadence.validate_every": self.cadence.validate_every,
            "cadence.checkpoint_every": self.cadence.checkpoint_every,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ConfigError(name, f"must not be negative, got {value}")
        if not 0 < self.optim.lr < 1:
            raise ConfigError("optim.lr", f"must lie in (0, 1), got {self.optim.lr}")
        if not all(0 <= b < 1 for b in self.optim.betas) or len(self.optim.betas) != 2:
            raise ConfigError("optim.betas", f"two values in [0, 1), got {self.optim.betas}")
        if not 0 <= self.lora.dropout < 1:
            raise ConfigError("lora.dropout", f"must lie in [0, 1), got {self.lora.dropout}")
        _validate_targets(self.lora.targets)
        if self.zero.stage not in (0, 1, 2, 3):
            raise ConfigError("zero.stage", f"must be 0, 1, 2 or 3, got {self.zero.stage}")
        if self.zero.offload_params and self.zero.stage != 3:
            raise ConfigError("zero.offload_params", "parameter offload needs zero.stage 3")
        parts = self.data.val_dataset.split("|")
        if len(parts) != 3 or parts[0] not in ("refclef", "refcoco", "refcoco+", "refcocog"):
            raise ConfigError(
                "data.val_dataset",
                f"expected 'refcoco|unc|val' style, got {self.data.val_dataset!r}",
            )
        if check_paths:
            self._validate_paths()
        return self

    def _validate_paths(self) -> None:
        if not Path(self.data.data_dir).is_dir():
            raise ConfigError(
                "data.data_dir",
                f"{self.data.data_dir} is not a folder (the data tree, or a demo world's dataset/)",
            )
        self._check_weights_dir()
        for name in ("base", "clip", "owlvit"):
            value = self.weight_path(name)
            if not value:
                raise ConfigError(f"weights.{name}", "missing: give a local folder")
            if not Path(value).expanduser().is_dir() and not _looks_like_hub_name(value):
                raise ConfigError(f"weights.{name}", f"{value} is not a folder")

    def _check_weights_dir(self) -> None:
        folder = self.weights.dir
        if folder and not Path(folder).expanduser().is_dir():
            raise ConfigError(
                "weights.dir",
                f"{folder} is not a folder; Fix: point weights.dir (--weights-dir) at the folder "
                "holding the base, clip and owlvit weights (a demo world's weights/), or leave "
                "it empty and give their full paths",
            )


def _validate_targets(targets: list[str]) -> None:
    allowed = ", ".join(LORA_TARGETS)
    if not targets:
        raise ConfigError("lora.targets", f"name at least one of the LLaMA layers {allowed}")
    for target in targets:
        if target not in LORA_TARGETS:
            raise ConfigError(
                "lora.targets",
                f"{target!r} is not a LLaMA linear layer; Fix: use names from {allowed}",
            )


def _absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _looks_like_hub_name(value: str) -> bool:
    # "org/name" with no local folder of that name: resolved later from the local hub cache
    return value.count("/") == 1 and not value.startswith((".", "/", "~"))


def _validate_mix(mix: dict[str, GroupMix]) -> None:
    if not mix:
        raise ConfigError("data.mix", "name at least one dataset group")
    for group, g in mix.items():
        where = f"data.mix.{group}"
        if group not in GROUPS:
            raise ConfigError(where, f"unknown dataset group; choose from {', '.join(GROUPS)}")
        if g.rate < 0:
            raise ConfigError(f"{where}.rate", f"must not be negative, got {g.rate}")
        if not g.sources:
            raise ConfigError(f"{where}.sources", "name at least one source")
        for source, rate in g.sources.items():
            if source not in SOURCES:
                raise ConfigError(
                    f"{where}.sources.{source}",
                    f"unknown source; choose from {', '.join(SOURCES)}",
                )
            if SOURCES[source].group != group:
                raise ConfigError(
                    f"{where}.sources.{source}",
                    f"belongs to group {SOURCES[source].group!r}, not {group!r}",
                )
            if rate < 0:
                raise ConfigError(f"{where}.sources.{source}", f"negative rate {rate}")
        if sum(g.sources.values()) <= 0:
            raise ConfigError(f"{where}.sources", "rates sum to zero")
    if sum(g.rate for g in mix.values()) <= 0:
        raise ConfigError("data.mix", "group rates sum to zero")


# ---- dict ↔ dataclass ----------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _build(cls, d: dict, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}", f"unknown field; {cls.__name__} has {', '.join(sorted(known))}"
        )
    kwargs = {k: _convert(hints[k], v, f"{prefix}{k}") for k, v in d.items()}
    return cls(**kwargs)


def _convert(hint, value, name: str):
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, name + ".")
    if origin is dict:
        _, vtype = get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(name, f"expected a mapping, got {value!r}")
        return {k: _convert(vtype, v, f"{name}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(name, f"expected a list, got {value!r}")
        (item, *_) = get_args(hint)
        items = [_convert(item, v, name) for v in value]
        return tuple(items) if origin is tuple else items
    args = [a for a in get_args(hint) if a is not type(None)]
    if args:  # X | None
        return None if value is None else _convert(args[0], value, name)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(name, f"expected a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected text, got {value!r}")
        return value
    return value
