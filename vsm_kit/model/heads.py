"""The VSM's heads on top of the LLM: OWL-ViT detection parts, the SAM-style mask decoder with
the VSM's own upscaling path, and the [LOC] projection MLPs."""

from __future__ import annotations

import functools

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

    @classmethod
    def build(cls, arch: OwlViTArch) -> OwlViTParts:
        return cls(OwlViTForObjectDetection(owlvit_config(arch)))

    @classmethod
    def from_pretrained(cls, path: str) -> OwlViTParts:
        """Pretrained detector weights from a local OWL-ViT folder (training initialisation)."""
        return cls(OwlViTForObjectDetection.from_pretrained(path))

    def detect(self, feature_map: torch.Tensor, queries: torch.Tensor):
        """One image's feature map [1, g, g, C] against Q queries [Q, D] →
        (logits [Q, g·g, 1], boxes [Q, g·g, 4] in cxcywh_norm, fp32).

        The box logits and the fixed fp32 bias are summed in fp32 before the sigmoid whatever
        the model's dtype, as the original does (a bf16 sum keeps ~3 significant digits)."""
        q, g = queries.shape[0], feature_map.shape[1]
        feats = feature_map.reshape(1, -1, feature_map.shape[-1]).expand(q, -1, -1)
        logits = self.class_head(feats, queries[:, None, :], None)[0]
        boxes = torch.sigmoid(self.box_head(feats).float() + box_bias(g, feats.device))
        return logits, boxes


@functools.lru_cache(maxsize=8)
def box_bias(grid: int, device: torch.device | None = None) -> torch.Tensor:
    """OWL-ViT's fixed box-logit bias, fp32 [grid², 4] over row-major patches: the inverse
    sigmoid (eps 1e-4) of each patch's bottom-right corner ((col+1)/g, (row+1)/g) and of the
    patch size 1/g. Computed here, not kept as a buffer, so casting the model to bf16 cannot
    round it."""
    steps = torch.arange(1, grid + 1, dtype=torch.float32) / grid
    rows, cols = torch.meshgrid(steps, steps, indexing="ij")
    corner = torch.stack([cols, rows], -1).reshape(-1, 2).clip(0.0, 1.0)
    size = torch.full_like(corner, 1.0 / grid)
    coords = torch.cat([corner, size], -1)
    return (torch.log(coords + 1e-4) - torch.log1p(-coords + 1e-4)).to(device)


class _InputDtypeConv2d(nn.Conv2d):
    """A Conv2d computing in its input's dtype (its weights cast to it on the fly), so an fp32
    input runs in fp32 beside bf16 weights. The cast happens inside the module's own forward,
    where ZeRO-3 has gathered its parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


class UpsampleConv(nn.Module):
    """Bilinear ×2 then a 3×3 convolution (the VSM's replacement for SAM's ConvTranspose), in
    the input's dtype."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _InputDtypeConv2d(cin, cout, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)


class Fp32Upscaling(nn.Sequential):
    """The mask decoder's upscaling path, run in fp32 whatever the model's dtype (autocast off,
    input cast up; the convolutions and LayerNorm2d follow their fp32 input), as the original
    does under bf16. Returns fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class VSMMaskDecoder(MaskDecoder):
    """SAM's MaskDecoder with the VSM's upscaling: two (bilinear ×2, conv 3×3) blocks, LN2d+GELU
    after the first and GELU after the second — the keys `output_upscaling.{0,3}.conv` and `.1`.

    The upscaling runs in fp32 (`Fp32Upscaling`); so does the product with the mask tokens'
    hypernetwork outputs that turns its result into mask logits (fp32 [Q, 4, 4g, 4g])."""

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
        self.output_upscaling = Fp32Upscaling(
            UpsampleConv(dim, dim // 4),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            UpsampleConv(dim // 4, dim // 8),
            nn.GELU(),
        )

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's mask prediction with an fp32 upscaling: (mask logits [Q, 4, 4g, 4g] fp32,
        IoU predictions [Q, 4]). image_embeddings, image_pe: [1, D, g, g]; sparse prompts
        [Q, t, D]; dense prompts [Q, D, g, g]."""
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([output_tokens[None].expand(n, -1, -1), sparse_prompt_embeddings], 1)
        src = image_embeddings.repeat_interleave(n, 0) + dense_prompt_embeddings
        pos = image_pe.repeat_interleave(n, 0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1
        )
        with torch.autocast(upscaled.device.type, enabled=False):
            masks = hyper_in.float() @ upscaled.flatten(2)
        masks = masks.reshape(b, -1, *upscaled.shape[-2:])
        return masks, self.iou_prediction_head(hs[:, 0])


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
