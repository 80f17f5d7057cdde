"""The VSM's heads on top of the LLM: OWL-ViT detection parts, the SAM-style mask decoder with
the VSM's own upscaling path, and the [LOC] projection MLPs."""

from __future__ import annotations

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn
from transformers import OwlViTConfig, OwlViTForObjectDetection

from .architecture import OwlViTArch, SamArch


def owlvit_config(arch: OwlViTArch) -> OwlViTConfig:
    return OwlViTConfig(
        text_config={
            "hidden_size": arch.text_hidden_size,
            "num_hidden_layers": arch.text_layers,
            "num_attention_heads": arch.text_heads,
            "intermediate_size": arch.text_intermediate,
        },
        vision_config={
            "hidden_size": arch.hidden_size,
            "num_hidden_layers": arch.num_hidden_layers,
            "num_attention_heads": arch.num_attention_heads,
            "intermediate_size": arch.intermediate_size,
            "image_size": arch.image_size,
            "patch_size": arch.patch_size,
        },
        projection_dim=arch.projection_dim,
    )


class OwlViTParts(nn.Module):
    """The parts of `OwlViTForObjectDetection` the VSM keeps (its text tower is dropped):
    `vision_model`, `class_head`, `box_head`, `layer_norm` — the original checkpoint's names."""

    def __init__(self, detector: OwlViTForObjectDetection):
        super().__init__()
        self.vision_model = detector.owlvit.vision_model
        self.class_head = detector.class_head
        self.box_head = detector.box_head
        self.layer_norm = detector.layer_norm
        self.register_buffer("box_bias", detector.box_bias.detach().clone(), persistent=False)

    @classmethod
    def build(cls, arch: OwlViTArch) -> OwlViTParts:
        return cls(OwlViTForObjectDetection(owlvit_config(arch)))

    @classmethod
    def from_pretrained(cls, path: str) -> OwlViTParts:
        """Pretrained detector weights from a local OWL-ViT folder (training initialisation)."""
        return cls(OwlViTForObjectDetection.from_pretrained(path))

    def detect(self, feature_map: torch.Tensor, queries: torch.Tensor):
        """One image's feature map [1, g, g, C] against Q queries [Q, D] →
        (logits [Q, g·g, 1], boxes [Q, g·g, 4] in cxcywh_norm)."""
        q = queries.shape[0]
        feats = feature_map.reshape(1, -1, feature_map.shape[-1]).expand(q, -1, -1)
        logits = self.class_head(feats, queries[:, None, :], None)[0]
        boxes = torch.sigmoid(self.box_head(feats) + self.box_bias.to(feats.dtype))
        return logits, boxes


class UpsampleConv(nn.Module):
    """Bilinear ×2 then a 3×3 convolution (the VSM's replacement for SAM's ConvTranspose)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)


class VSMMaskDecoder(MaskDecoder):
    """SAM's MaskDecoder with the VSM's upscaling: two (bilinear ×2, conv 3×3) blocks, LN2d+GELU
    after the first and GELU after the second — the keys `output_upscaling.{0,3}.conv` and `.1`."""

    def __init__(self, arch: SamArch):
        dim = arch.embed_dim
        super().__init__(
            transformer_dim=dim,
            transformer=TwoWayTransformer(
                depth=arch.depth,
                embedding_dim=dim,
                mlp_dim=arch.mlp_dim,
                num_heads=arch.num_heads,
                attention_downsample_rate=arch.attention_downsample_rate,
            ),
            num_multimask_outputs=arch.num_multimask_outputs,
            iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=dim,
        )
        self.output_upscaling = nn.Sequential(
            UpsampleConv(dim, dim // 4),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            UpsampleConv(dim // 4, dim // 8),
            nn.GELU(),
        )


class _PositionEmbedding(PositionEmbeddingRandom):
    """SAM's random Fourier position embedding, usable in bf16/fp16 (SAM builds its coordinate
    grid in fp32, which does not multiply with a bf16 buffer)."""

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        return super()._pe_encoding(coords.to(self.positional_encoding_gaussian_matrix.dtype))


def prompt_encoder(arch: SamArch, grid: int, image_size: int) -> PromptEncoder:
    encoder = PromptEncoder(
        embed_dim=arch.embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=arch.mask_in_chans,
    )
    encoder.pe_layer.__class__ = _PositionEmbedding  # same buffer, no second random draw
    return encoder


def loc_mlp(hidden: int, out: int) -> nn.ModuleList:
    """`text_hidden_fcs_*`: Linear → ReLU → Linear → Dropout(0), in a one-element ModuleList."""
    return nn.ModuleList(
        [
            nn.Sequential(
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, out),
                nn.Dropout(0.0),
            )
        ]
    )
