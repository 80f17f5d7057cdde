"""Model sizes: every architecture constant of the VSM in one place, and the named sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import VsmKitError

# attention heads are the one size a checkpoint's tensors do not show: the widths of the families
OWLVIT_HEAD_DIM = 64  # every published OWL-ViT tower (B/32, B/16, L/14)
LLAMA_HEAD_DIM = 128  # LLaMA-1 7B to 65B


@dataclass(frozen=True)
class LlamaArch:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6


class ArchitectureError(VsmKitError, ValueError):
    """A checkpoint's tensor shapes do not tell an architecture; `problem` without the fix."""

    def __init__(self, problem: str, fix: str):
        self.problem = problem
        super().__init__(f"{problem}. Fix: {fix}")


@dataclass(frozen=True, kw_only=True)
class ClipArch:
    """The frozen CLIP vision tower whose patch features LLaVA projects into the LLM."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    image_size: int = 224
    patch_size: int = 14
    projection_dim: int = 768


@dataclass(frozen=True, kw_only=True)
class OwlViTArch:
    """OWL-ViT's vision tower (detection features) and the text width its class head matches."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    image_size: int = 768
    patch_size: int = 16
    text_hidden_size: int = 512  # = the det [LOC] projection's output width ("out_dim")
    text_layers: int = 12
    text_heads: int = 8
    text_intermediate: int = 2048
    projection_dim: int = 512


@dataclass(frozen=True)
class SamArch:
    """SAM-style prompt encoder and mask decoder (randomly initialised in the VSM). Heads are
    32 wide in every size, so a checkpoint's head count follows from its width."""

    embed_dim: int = 256
    depth: int = 2
    num_heads: int = 8
    mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    mask_in_chans: int = 16


@dataclass(frozen=True)
class VSMArch:
    llama: LlamaArch
    clip: ClipArch
    owlvit: OwlViTArch
    sam: SamArch = field(default_factory=SamArch)
    mm_vision_select_layer: int = -2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VSMArch:
        return cls(
            llama=LlamaArch(**d["llama"]),
            clip=ClipArch(**d["clip"]),
            owlvit=OwlViTArch(**d["owlvit"]),
            sam=SamArch(**d["sam"]),
            mm_vision_select_layer=d.get("mm_vision_select_layer", -2),
        )


def vsm_7b() -> VSMArch:
    """The published VSM: LLaVA-Lightning-7B (LLaMA-7B), CLIP ViT-L/14 224, OWL-ViT B/16."""
    return VSMArch(
        llama=LlamaArch(
            hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008
        ),
        clip=ClipArch(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
        owlvit=OwlViTArch(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
        ),
    )


def vsm_tiny() -> VSMArch:
    """A few-layer model with the same structure, for tests and the CPU demo: small widths, and
    OWL-ViT at 384 px in 32 px patches (12×12, against the real 48×48; CLIP keeps 224), so its
    detector fits and trains on a CPU in minutes. Every size downstream is read from here or
    from a checkpoint."""
    return VSMArch(
        llama=LlamaArch(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=1024,
        ),
        clip=ClipArch(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            projection_dim=32,
        ),
        owlvit=OwlViTArch(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            image_size=384,
            patch_size=32,
            text_hidden_size=24,
            text_layers=1,
            text_heads=2,
            text_intermediate=48,
            projection_dim=24,
        ),
        sam=SamArch(embed_dim=32, depth=2, num_heads=1, mlp_dim=64, mask_in_chans=4),
    )


SIZES = {"7b": vsm_7b, "tiny": vsm_tiny}  # `weights.arch` names these
VOCAB_SIZES = {"7b": 32004, "tiny": 1004}  # SentencePiece pieces + 3 image markers + [LOC]


def owlvit_from_shapes(
    *,
    hidden_size: int,
    num_hidden_layers: int,
    intermediate_size: int,
    image_size: int,
    patch_size: int,
    text_hidden_size: int,
) -> OwlViTArch:
    """The OWL-ViT part of a checkpoint from its tensor shapes. The head count is not in the
    tensors: a tower of one of the named sizes keeps that size's count, any other gets
    `OWLVIT_HEAD_DIM`-wide heads. The text tower is dropped in the VSM, so it only has to fit the
    class head's width (`text_hidden_size`). Raises ArchitectureError when the heads cannot be
    told."""
    vision = (hidden_size, num_hidden_layers, intermediate_size, image_size, patch_size)
    for size in SIZES.values():
        o = size().owlvit
        if vision + (text_hidden_size,) == (
            o.hidden_size,
            o.num_hidden_layers,
            o.intermediate_size,
            o.image_size,
            o.patch_size,
            o.text_hidden_size,
        ):
            return o
    if hidden_size % OWLVIT_HEAD_DIM:
        raise ArchitectureError(
            f"an OWL-ViT tower {hidden_size} wide is no named size and no multiple of "
            f"{OWLVIT_HEAD_DIM}: its head count cannot be told from the tensors",
            "pass the OWL-ViT folder the model was trained with (its config.json has the sizes)",
        )
    return OwlViTArch(
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=hidden_size // OWLVIT_HEAD_DIM,
        intermediate_size=intermediate_size,
        image_size=image_size,
        patch_size=patch_size,
        text_hidden_size=text_hidden_size,
        text_layers=1,
        text_heads=1,
        text_intermediate=text_hidden_size,
        projection_dim=text_hidden_size,
    )


def llama_from_shapes(
    hidden_size: int, num_hidden_layers: int, intermediate_size: int, **known
) -> LlamaArch:
    """LLaMA sizes from tensor shapes, `known` (e.g. a head count) taking precedence; heads as
    for OWL-ViT: a named size's count, else `LLAMA_HEAD_DIM`-wide heads. Raises ArchitectureError
    when the heads cannot be told."""
    shapes = (hidden_size, num_hidden_layers, intermediate_size)
    for size in SIZES.values():
        a = size().llama
        if shapes == (a.hidden_size, a.num_hidden_layers, a.intermediate_size):
            return replace(a, **known)
    if "num_attention_heads" not in known:
        if hidden_size % LLAMA_HEAD_DIM:
            raise ArchitectureError(
                f"a LLaMA {hidden_size} wide is no named size and no multiple of "
                f"{LLAMA_HEAD_DIM}: its head count cannot be told from the tensors",
                "add num_attention_heads to the checkpoint's config.json",
            )
        known["num_attention_heads"] = hidden_size // LLAMA_HEAD_DIM
    return LlamaArch(hidden_size, num_hidden_layers, intermediate_size=intermediate_size, **known)
