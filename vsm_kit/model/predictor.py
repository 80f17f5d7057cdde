"""Inference in the style of segment-anything's predictor: set an image once, then ask.

`detect(target)` and `segment(target)` supply the answer the model is trained to give
("Sure, [LOC].") instead of generating it: one forward pass, and a [LOC] state always exists.
`answer(question)` generates greedily with a key/value cache. Works on CPU or CUDA, fp32 or bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from .conversation import render, tokenize_with_image
from .image_inputs import ImageInputs
from .vsm import VSMForCausalLM

LOCATE = "Please locate the {} in this image."


@dataclass
class Detections:
    """Boxes in `xyxy_px` of the image given to `set_image`, best first; scores in [0, 1]."""

    boxes_xyxy: np.ndarray  # float32 [P, 4]
    scores: np.ndarray  # float32 [P]


@dataclass
class Location(Detections):
    """Detections plus the same query's mask logits float32 [H, W] (the target cue)."""

    mask_logits: np.ndarray


class VSMPredictor:
    def __init__(self, model: VSMForCausalLM, tokenizer, ids):
        self.model, self.tokenizer, self.ids = model.eval(), tokenizer, ids
        arch = model.arch
        self.inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
        self._image = None

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        clip: str | Path | None = None,
        owlvit: str | Path | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> VSMPredictor:
        from .weights import load_vsm

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
        return cls(*load_vsm(folder, clip=clip, owlvit=owlvit, dtype=dtype, device=device))

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """uint8 [H, W, 3]. Computes and caches the OWL-ViT feature map and CLIP features."""
        owl, clip = (x[None].to(self.device, self.dtype) for x in self.inputs.both(image))
        self._image = {
            "size": image.shape[:2],
            "fmap": self.model.owl_features(owl),
            "clip": self.model.encode_images(clip),
        }

    def _require_image(self):
        if self._image is None:
            raise RuntimeError("call set_image(image) first")
        return self._image

    @torch.no_grad()
    def _loc_state(self, target: str) -> torch.Tensor:
        cache = self._require_image()
        prompt = render([f"<image>\n{LOCATE.format(target)}", "Sure, [LOC]."])
        ids = torch.tensor([tokenize_with_image(prompt, self.tokenizer)], device=self.device)
        embeds, expanded, _ = self.model.embed_with_image(ids, cache["clip"])
        hidden = self.model.model(inputs_embeds=embeds).last_hidden_state
        return self.model.loc_hidden(hidden, expanded)[:1]

    @torch.no_grad()
    def detect(self, target: str) -> Detections:
        return self._detect(self._loc_state(target))

    def _detect(self, state: torch.Tensor) -> Detections:
        cache = self._require_image()
        det_q = self.model.model.text_hidden_fcs_det[0](state)
        logits, boxes = self.model.model.owlvit.detect(cache["fmap"], det_q)
        h, w = cache["size"]
        scores = logits[0, :, 0].float().sigmoid()
        xyxy = box_convert(boxes[0].float(), "cxcywh", "xyxy") * torch.tensor(
            [w, h, w, h], device=scores.device
        )
        order = scores.argsort(descending=True)
        return Detections(xyxy[order].cpu().numpy(), scores[order].cpu().numpy())

    @torch.no_grad()
    def segment(self, target: str) -> np.ndarray:
        """Mask logits float32 [H, W] at the image's size."""
        return self._segment(self._loc_state(target))

    def _segment(self, state: torch.Tensor) -> np.ndarray:
        cache = self._require_image()
        seg_q = self.model.model.text_hidden_fcs_seg[0](state)
        masks = self.model.predict_masks(cache["fmap"], seg_q, tuple(cache["size"]))
        return masks[0].float().cpu().numpy()

    @torch.no_grad()
    def locate(self, target: str) -> Location:
        """`detect` and `segment` from one language-model pass (the search's detection call)."""
        state = self._loc_state(target)
        det = self._detect(state)
        return Location(det.boxes_xyxy, det.scores, self._segment(state))

    @torch.no_grad()
    def answer(self, question: str, max_new_tokens: int = 100) -> str:
        cache = self._require_image()
        prompt = render([f"<image>\n{question}", None])
        ids = torch.tensor([tokenize_with_image(prompt, self.tokenizer)], device=self.device)
        embeds, _, _ = self.model.embed_with_image(ids, cache["clip"])
        generated = self.model.generate(
            inputs_embeds=embeds,
            attention_mask=torch.ones(embeds.shape[:2], device=self.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            eos_token_id=self.ids.eos,
            pad_token_id=self.ids.pad,
        )[0].tolist()
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        return " ".join(text.replace("\n", " ").split())
