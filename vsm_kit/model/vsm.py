"""VSMForCausalLM: LLaVA-LLaMA with OWL-ViT detection and SAM-style mask heads driven by [LOC].

Module names follow the original checkpoints (`model.mm_projector`, `model.owlvit.*`,
`model.visual_projection`, `model.prompt_encoder`, `model.mask_decoder`,
`model.text_hidden_fcs_{seg,det}`), so weights move between the two without renaming. Nothing
here assumes CUDA, a hub, or a fixed number of image tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from .architecture import ClipArch, VSMArch
from .heads import OwlViTParts, VSMMaskDecoder, loc_mlp, prompt_encoder
from .losses import DEFAULT_WEIGHTS, LossWeights, detection_losses, language_loss, mask_losses

IMAGE_TOKEN_INDEX = -200  # the sentinel LLaVA puts where the image features go
IGNORE_INDEX = -100


def clip_config(arch: ClipArch) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        intermediate_size=arch.intermediate_size,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        projection_dim=arch.projection_dim,
    )


def llama_config(arch: VSMArch, vocab_size: int, **extra) -> LlamaConfig:
    a = arch.llama
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=a.hidden_size,
        num_hidden_layers=a.num_hidden_layers,
        num_attention_heads=a.num_attention_heads,
        intermediate_size=a.intermediate_size,
        max_position_embeddings=a.max_position_embeddings,
        rms_norm_eps=a.rms_norm_eps,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        use_cache=False,
        **extra,
    )


class ClipTower(nn.Module):
    """The frozen CLIP vision tower (`model.vision_tower.vision_tower.*`, as LLaVA nests it);
    returns the patch features of layer `select_layer` (CLS dropped)."""

    def __init__(self, model: CLIPVisionModel, select_layer: int = -2):
        super().__init__()
        self.vision_tower = model
        self.select_layer = select_layer
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values=images, output_hidden_states=True)
        return out.hidden_states[self.select_layer][:, 1:]


class VSMForCausalLM(LlamaForCausalLM):
    """The visual search model. Build with `VSMForCausalLM(config, arch)` (random heads) or load
    with `vsm_kit.model.load_vsm`. `loc_token_idx` must be set before the forward pass."""

    def __init__(
        self,
        config: LlamaConfig,
        arch: VSMArch,
        owlvit: OwlViTParts | None = None,
        clip: CLIPVisionModel | None = None,
    ):
        super().__init__(config)
        self.arch = arch
        self.loc_token_idx: int | None = getattr(config, "loc_token_idx", None)
        m, hidden = self.model, config.hidden_size
        m.vision_tower = ClipTower(
            clip or CLIPVisionModel(clip_config(arch.clip)), arch.mm_vision_select_layer
        )
        m.mm_projector = nn.Linear(arch.clip.hidden_size, hidden)
        m.owlvit = owlvit or OwlViTParts.build(arch.owlvit)
        m.visual_projection = nn.Linear(arch.owlvit.hidden_size, arch.sam.embed_dim, bias=False)
        grid = arch.owlvit.image_size // arch.owlvit.patch_size
        m.prompt_encoder = prompt_encoder(arch.sam, grid, arch.owlvit.image_size)
        m.mask_decoder = VSMMaskDecoder(arch.sam)
        m.text_hidden_fcs_seg = loc_mlp(hidden, arch.sam.embed_dim)
        m.text_hidden_fcs_det = loc_mlp(hidden, arch.owlvit.text_hidden_size)
        m.vision_tower.requires_grad_(False)
        m.owlvit.vision_model.requires_grad_(False)
        m.owlvit.box_head.requires_grad_(False)

    # ---- inputs -------------------------------------------------------------------------------
    def encode_images(self, images_clip: torch.Tensor) -> torch.Tensor:
        """[B, 3, 224, 224] → projected CLIP patch features [B, T, hidden]."""
        feats = self.model.vision_tower(images_clip.to(self.model.mm_projector.weight.dtype))
        return self.model.mm_projector(feats)

    def embed_with_image(self, input_ids: torch.Tensor, image_feats: torch.Tensor):
        """Insert each row's image features where its `IMAGE_TOKEN_INDEX` sentinel is.

        input_ids: [N, L] with exactly one sentinel per row; image_feats: [N, T, hidden].
        Returns (embeds [N, L+T-1, hidden], expanded ids [N, L+T-1] with the sentinel at every
        image position, index of each expanded position into the text (-1 at image positions))."""
        n, length = input_ids.shape
        t = image_feats.shape[1]
        is_image = input_ids == IMAGE_TOKEN_INDEX
        if not bool((is_image.sum(1) == 1).all()):
            raise ValueError("every sequence must hold exactly one image token (<image>)")
        pos = is_image.float().argmax(1, keepdim=True)  # [N, 1]
        j = torch.arange(length + t - 1, device=input_ids.device)[None]
        in_image = (j >= pos) & (j < pos + t)
        text_idx = torch.where(j < pos, j, j - t + 1).clamp(0, length - 1)
        text_idx = torch.where(in_image, torch.full_like(text_idx, -1), text_idx)
        embeds = self.model.embed_tokens(input_ids.clamp(min=0))
        text_part = embeds.gather(
            1, text_idx.clamp(min=0)[..., None].expand(-1, -1, embeds.shape[-1])
        )
        img_idx = (j - pos).clamp(0, t - 1)
        image_part = image_feats.to(embeds.dtype).gather(
            1, img_idx[..., None].expand(n, -1, embeds.shape[-1])
        )
        out = torch.where(in_image[..., None], image_part, text_part)
        ids = torch.where(
            in_image,
            torch.full_like(text_idx, IMAGE_TOKEN_INDEX),
            input_ids.gather(1, text_idx.clamp(min=0)),
        )
        return out, ids, text_idx

    def loc_hidden(self, hidden: torch.Tensor, expanded_ids: torch.Tensor) -> torch.Tensor:
        """States that predict each [LOC] (the position just before it), row by row: [Nq, hidden].

        Found in the expanded sequence itself, so any vision tower and image-token count work."""
        if self.loc_token_idx is None:
            raise ValueError("loc_token_idx is not set (the tokenizer's id of [LOC])")
        before_loc = expanded_ids[:, 1:] == self.loc_token_idx
        return hidden[:, :-1][before_loc]

    # ---- heads --------------------------------------------------------------------------------
    def owl_features(self, images: torch.Tensor) -> torch.Tensor:
        """OWL-ViT feature maps [B, g, g, C], all under no_grad as in the original: the final
        `layer_norm` stays trainable by name (so checkpoints hold it) but never gets a gradient."""
        owl = self.model.owlvit
        with torch.no_grad():
            hidden = owl.vision_model(pixel_values=images).last_hidden_state
            hidden = owl.vision_model.post_layernorm(hidden)
            patches = owl.layer_norm(hidden[:, 1:] * hidden[:, :1])
        g = int(patches.shape[1] ** 0.5)
        return patches.reshape(patches.shape[0], g, g, -1)

    def predict_masks(
        self,
        feature_map: torch.Tensor,
        seg_queries: torch.Tensor,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """One image's masks for its queries: [Q, h, w] logits at `size` (default: low-res)."""
        m = self.model
        image_embedding = m.visual_projection(feature_map).permute(0, 3, 1, 2)
        g, g_dev = image_embedding.shape[-1], image_embedding.device
        # through the module, not `.weight`: ZeRO-3 gathers a parameter only inside its forward
        no_mask = m.prompt_encoder.no_mask_embed(torch.zeros(1, dtype=torch.long, device=g_dev))
        dense = no_mask.reshape(1, -1, 1, 1).expand(seg_queries.shape[0], -1, g, g)
        low_res, _ = m.mask_decoder(
            image_embeddings=image_embedding,
            image_pe=m.prompt_encoder.get_dense_pe().to(image_embedding.dtype),
            sparse_prompt_embeddings=seg_queries[:, None, :],
            dense_prompt_embeddings=dense.to(image_embedding.dtype),
            multimask_output=False,
        )
        if size is not None:
            low_res = F.interpolate(
                low_res.float(), size=size, mode="bilinear", align_corners=False
            )
        return low_res[:, 0]

    # ---- training forward ---------------------------------------------------------------------
    def forward(self, *args, batch: dict | None = None, giou: str = "original", **kwargs):
        """The causal-LM forward, or the training losses of a collated `batch` (so a DeepSpeed
        engine over the PEFT-wrapped model trains with `engine(batch=batch, giou=...)`)."""
        if batch is not None:
            return self.forward_train(batch, giou=giou)
        return super().forward(*args, **kwargs)

    def predict(self, batch: dict, masks_for=None) -> dict:
        """Heads' outputs for a collated batch: `logits` [N, L', V] and `labels` [N, L'] of the
        expanded sequences, `det_logits` [Nq, P, 1], `det_boxes` [Nq, P, 4] (cxcywh_norm),
        `masks`: per image [n_i, H_i, W_i] logits at its GT masks' size, or None where
        `masks_for[i]` is False (default: images with mask supervision)."""
        offset = batch["offset"]
        conv_image = torch.repeat_interleave(
            torch.arange(len(offset) - 1, device=offset.device), offset.diff()
        )
        image_feats = self.encode_images(batch["images_clip"])[conv_image]
        embeds, ids, text_idx = self.embed_with_image(batch["input_ids"], image_feats)
        in_image = text_idx < 0
        labels = torch.where(
            in_image,
            torch.full_like(ids, IGNORE_INDEX),
            batch["labels"].gather(1, text_idx.clamp(min=0)),
        )
        attention = torch.where(
            in_image,
            torch.ones_like(in_image),
            batch["attention_masks"].gather(1, text_idx.clamp(min=0)),
        )
        positions = torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids)
        hidden = self.model(
            inputs_embeds=embeds, attention_mask=attention.long(), position_ids=positions
        ).last_hidden_state
        logits = self.lm_head(hidden)

        loc = self.loc_hidden(hidden, ids)
        n_queries = len(batch["bboxes_labels_list"])
        if loc.shape[0] != n_queries:
            raise ValueError(f"found {loc.shape[0]} [LOC] tokens for {n_queries} box targets")
        query_image = conv_image.repeat_interleave((ids[:, 1:] == self.loc_token_idx).sum(1))
        seg_q = self.model.text_hidden_fcs_seg[0](loc)
        det_q = self.model.text_hidden_fcs_det[0](loc)
        fmaps = self.owl_features(batch["images"].to(seg_q.dtype))
        if masks_for is None:  # no full-size masks for images without mask supervision
            masks_for = [bool(v.any()) for v in batch["masks_valid_list"]]
        det_logits, det_boxes, masks, unsupervised = [], [], [], []
        for i in range(fmaps.shape[0]):
            sel = query_image == i
            logits_i, boxes_i = self.model.owlvit.detect(fmaps[i : i + 1], det_q[sel])
            det_logits.append(logits_i)
            det_boxes.append(boxes_i)
            if masks_for[i]:
                size = tuple(batch["masks_list"][i].shape[-2:])
                masks.append(self.predict_masks(fmaps[i : i + 1], seg_q[sel], size))
            else:
                masks.append(None)
                if self.training:
                    # low-res masks nobody supervises: every rank runs the same modules in the
                    # same order whatever its batch holds (ZeRO-2 reduces the same gradients,
                    # ZeRO-3 gathers the same parameters) at a small cost
                    low_res = self.predict_masks(fmaps[i : i + 1], seg_q[sel])
                    unsupervised.append(low_res.sum() * 0)
        anchor = torch.stack(unsupervised).sum() if unsupervised else None
        return {
            "logits": logits,
            "labels": labels,
            "det_logits": torch.cat(det_logits),
            "det_boxes": torch.cat(det_boxes),
            "masks": masks,
            "unsupervised": anchor,
        }

    def forward_train(
        self,
        batch: dict,
        weights: LossWeights = DEFAULT_WEIGHTS,
        giou: str = "original",
    ) -> dict[str, torch.Tensor]:
        """Losses for a collated batch (keys as the original collate: `images`, `images_clip`,
        `input_ids`, `labels`, `attention_masks`, `offset`, `bboxes_labels_list`,
        `bboxes_valid_list`, `masks_list`, `masks_valid_list`); `giou`: see
        `losses.detection_losses` ("original" or "normalized")."""
        p = self.predict(batch)
        out = {"ce_loss": weights.ce * language_loss(p["logits"], p["labels"])}
        preds, gts, valids = [], [], []
        for pred, gt, valid in zip(
            p["masks"], batch["masks_list"], batch["masks_valid_list"], strict=True
        ):
            if pred is not None:
                preds.append(pred)
                gts.append(gt)
                valids.append(valid.to(pred.device))
        bce, dice = mask_losses(preds, gts, valids, weights)
        if p["unsupervised"] is not None:
            bce = bce + p["unsupervised"]
        out["mask_bce_loss"], out["mask_dice_loss"] = bce, dice
        out["mask_loss"] = bce + dice
        out.update(
            detection_losses(
                p["det_logits"],
                p["det_boxes"],
                batch["bboxes_labels_list"],
                batch["bboxes_valid_list"],
                weights,
                giou,
            )
        )
        out["loss"] = out["ce_loss"] + out["mask_loss"] + out["detection_loss"]
        return out
