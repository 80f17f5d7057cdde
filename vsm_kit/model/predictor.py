"""Inference in the style of segment-anything's predictor: set an image once, then ask.

`detect(target)` and `segment(target)` supply the answer the model is trained to give
("Sure, [LOC].") instead of generating it: one forward pass, and a [LOC] state always exists.
`answer(question)` generates greedily with a key/value cache. Recent images' encodings are kept,
and `locate_batch` runs several images in one pass. Works on CPU or CUDA, fp32 or bf16.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_convert

from ..errors import VsmKitError
from .conversation import IMAGE, image_prompt, tokenize_with_image
from .image_inputs import ImageInputs
from .vsm import VSMForCausalLM

LOCATE = "Please locate the {} in this image."  # the detection prompt (training uses it too)
LOC_ANSWER = "Sure, [LOC]."  # the answer the model is trained to give to it
MARKERS = (IMAGE, "[LOC]")  # placed by the prompt only: a second one breaks the forward pass


class PredictorError(VsmKitError, RuntimeError):
    """The predictor was asked something it cannot answer: no image set, or a marker in text."""


def _plain_text(text: str, what: str) -> str:
    """`text` (a target or question), refused when it holds one of the prompt's markers."""
    for marker in MARKERS:
        if marker in text:
            raise PredictorError(
                f"the {what} {text[:80]!r} holds {marker!r}, which only the prompt places; "
                f"Fix: remove {marker!r} from the {what}"
            )
    return text


@dataclass
class Detections:
    """Boxes in `xyxy_px` of the image given to `set_image`, best first; scores in [0, 1]."""

    boxes_xyxy: np.ndarray  # float32 [P, 4]
    scores: np.ndarray  # float32 [P]


@dataclass
class Location(Detections):
    """Detections plus the same query's mask logits float32 [H, W] (the target cue), or None
    when not asked for."""

    mask_logits: np.ndarray | None


class VSMPredictor:
    CACHE_SIZE = 16  # encoded images kept, so returning to a patch costs no vision pass

    def __init__(self, model: VSMForCausalLM, tokenizer, ids):
        self.model, self.tokenizer, self.ids = model.eval(), tokenizer, ids
        arch = model.arch
        self.inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
        self._image = None
        self._cache: OrderedDict[tuple, dict] = OrderedDict()
        self.encodes = 0  # images through the vision towers so far

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

    def set_image(self, image: np.ndarray) -> None:
        """uint8 [H, W, 3]. Encodes the image (OWL-ViT feature map and CLIP features) unless one
        of the last `CACHE_SIZE` images had the same pixels."""
        self._image = self._encoded([image])[0]

    def clear_cache(self) -> None:
        self._cache.clear()

    @torch.no_grad()
    def _encoded(self, images: list[np.ndarray]) -> list[dict]:
        keys = [_key(image) for image in images]
        todo = [k for k, key in enumerate(keys) if key not in self._cache]
        if todo:
            owl, clip = zip(*(self.inputs.both(images[k]) for k in todo), strict=True)
            fmap = self.model.owl_features(torch.stack(owl).to(self.device, self.dtype))
            feats = self.model.encode_images(torch.stack(clip).to(self.device, self.dtype))
            self.encodes += len(todo)
            for j, k in enumerate(todo):
                entry = {"size": images[k].shape[:2], "fmap": fmap[j : j + 1]}
                self._cache[keys[k]] = entry | {"clip": feats[j : j + 1]}
        out = []
        for key in keys:
            self._cache.move_to_end(key)
            out.append(self._cache[key])
        while len(self._cache) > max(self.CACHE_SIZE, len(keys)):
            self._cache.popitem(last=False)
        return out

    def _require_image(self):
        if self._image is None:
            raise PredictorError("no image is set; Fix: call set_image(image) first")
        return self._image

    @torch.no_grad()
    def _loc_states(self, target: str, clip: torch.Tensor) -> torch.Tensor:
        """The state before [LOC] of "Sure, [LOC]." for each image's CLIP features: [B, D]."""
        prompt = image_prompt(LOCATE.format(_plain_text(target, "target")), LOC_ANSWER)
        ids = torch.tensor([tokenize_with_image(prompt, self.tokenizer)], device=self.device)
        embeds, expanded, _ = self.model.embed_with_image(ids.expand(len(clip), -1), clip)
        hidden = self.model.model(inputs_embeds=embeds).last_hidden_state
        return self.model.loc_hidden(hidden, expanded)

    @torch.no_grad()
    def detect(self, target: str) -> Detections:
        image = self._require_image()
        return self._detect(image, self._loc_states(target, image["clip"]))

    def _detect(self, image: dict, state: torch.Tensor) -> Detections:
        det_q = self.model.model.text_hidden_fcs_det[0](state)
        logits, boxes = self.model.model.owlvit.detect(image["fmap"], det_q)
        h, w = image["size"]
        scores = logits[0, :, 0].float().sigmoid()
        xyxy = box_convert(boxes[0].float(), "cxcywh", "xyxy") * torch.tensor(
            [w, h, w, h], device=scores.device
        )
        order = scores.argsort(descending=True)
        return Detections(xyxy[order].cpu().numpy(), scores[order].cpu().numpy())

    @torch.no_grad()
    def segment(self, target: str) -> np.ndarray:
        """Mask logits float32 [H, W] at the image's size."""
        image = self._require_image()
        return self._segment(image, self._loc_states(target, image["clip"]))

    def _segment(self, image: dict, state: torch.Tensor) -> np.ndarray:
        seg_q = self.model.model.text_hidden_fcs_seg[0](state)
        masks = self.model.predict_masks(image["fmap"], seg_q, tuple(image["size"]))
        return masks[0].float().cpu().numpy()

    @torch.no_grad()
    def locate(self, target: str, cue: bool = True) -> Location:
        """`detect` and (with `cue`) `segment` from one language-model pass: the search's
        detection call, which skips the mask where it would not be used."""
        return self._locate([self._require_image()], target, cue)[0]

    @torch.no_grad()
    def locate_batch(
        self, images: list[np.ndarray], target: str, cue: bool = True
    ) -> list[Location]:
        """`locate` on several images in one batched pass (vision towers and language model);
        a later `set_image` with one of them reuses its encoding."""
        return self._locate(self._encoded(images), target, cue)

    def _locate(self, images: list[dict], target: str, cue: bool) -> list[Location]:
        states = self._loc_states(target, torch.cat([image["clip"] for image in images]))
        out = []
        for image, state in zip(images, states, strict=True):
            det = self._detect(image, state[None])
            mask = self._segment(image, state[None]) if cue else None
            out.append(Location(det.boxes_xyxy, det.scores, mask))
        return out

    @torch.no_grad()
    def answer(self, question: str, max_new_tokens: int = 100, use_cache: bool = True) -> str:
        """Greedy answer about the current image, stopping after EOS or `max_new_tokens`.
        `use_cache=False` runs one full forward over the whole growing sequence per token, as the
        original does (kept for comparisons only; transformers 5's `generate(use_cache=False)`
        still keeps a key/value cache, so it is not used for this). The text is cleaned as the
        original does: newlines removed (not made spaces), each pair of spaces made one in a
        single pass (four stay two), ends stripped (§10.6). Unlike the original, the prompt's
        markers are dropped from it first: a model that answers "Sure, [LOC]." would put a second
        `[LOC]` into the search's segmentation prompt, which breaks its forward pass."""
        image = self._require_image()
        prompt = image_prompt(_plain_text(question, "question"))
        ids = torch.tensor([tokenize_with_image(prompt, self.tokenizer)], device=self.device)
        if use_cache:
            embeds, _, _ = self.model.embed_with_image(ids, image["clip"])
            generated = self.model.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], device=self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                eos_token_id=self.ids.eos,
                pad_token_id=self.ids.pad,
            )[0].tolist()
        else:
            generated = self._greedy_uncached(ids, image["clip"], max_new_tokens)
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        for marker in MARKERS:
            text = text.replace(marker, "")
        return text.replace("\n", "").replace("  ", " ").strip()

    def _greedy_uncached(self, ids: torch.Tensor, clip: torch.Tensor, max_new: int) -> list[int]:
        """Greedy tokens after `ids` [1, L], each from a fresh forward (image features inserted
        again, no key/value cache) over the prompt and every token so far; EOS is kept, as
        `generate` keeps it."""
        out: list[int] = []
        for _ in range(max_new):
            embeds, _, _ = self.model.embed_with_image(ids, clip)
            logits = self.model(inputs_embeds=embeds, use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            if token == self.ids.eos:
                break
            ids = torch.cat([ids, ids.new_tensor([[token]])], 1)
        return out


def _key(image: np.ndarray) -> tuple:
    digest = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest()
    return (image.shape, digest)
