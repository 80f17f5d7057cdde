"""From a source `Record` to a training `Sample`: targets, prompts, boxes, masks, validity.

One sample is one image with up to `k` conversations, each asking for one target and answered
with "Sure, [LOC]." (VQA samples: one multi-turn conversation with a hidden [LOC] after the
image). Randomness comes only from the `rng` passed in, so a sample is a pure function of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.boxes import training_targets, xyxy_to_xywh
from ..data.records import Record, Target
from ..data.sources import Source, parse_paco_name

QUESTION = "<image>\nPlease locate the {} in this image."
VAL_QUESTION = "<image>\n Please locate the {} in this image."  # the original's val prompt
ANSWER = "Sure, [LOC]."
MAX_BOXES = 100  # boxes kept per target (Objects365, COCO-Stuff)
DUMMY_BOX = ((0.5, 0.5, 1.0, 1.0),)  # VQA rows: matched, never supervised


@dataclass
class Sample:
    """One image and its conversations (tensors in the formats the collate expects).

    `messages`: per conversation, alternating user/assistant texts (the user's first holds
    `<image>`); `boxes`: per conversation float32 [k, 4] `cxcywh_norm`; `masks`: bool
    [n, H, W] for sources with masks, else None (no dummy full-size masks are made)."""

    source: str
    image_path: Path
    size: tuple[int, int]  # (H, W) of the stored image
    messages: list[list[str]]
    texts: list[str]
    boxes: list[torch.Tensor]
    bboxes_valid: list[int]
    masks: torch.Tensor | None
    images: torch.Tensor | None = None  # uint8 [3, 768, 768] OWL-ViT input, not normalised
    images_clip: torch.Tensor | None = None  # uint8 [3, 224, 224] CLIP input, not normalised

    @property
    def masks_valid(self) -> list[int]:
        return [int(self.masks is not None)] * len(self.messages)


def build_sample(
    record: Record, source: Source, rng: np.random.Generator, k: int = 3, question=QUESTION
) -> Sample | None:
    """The sample for `record`, or None when it has nothing usable (the caller re-draws)."""
    if record.conversations:
        return _vqa_sample(record)
    chosen = _choose(record.targets, rng, k)
    texts, boxes, keep = [], [], []
    for t in chosen:
        b = training_targets(xyxy_to_xywh(t.boxes_xyxy[:MAX_BOXES]), record.width, record.height)
        if len(b):  # a target whose boxes all fall outside the image is dropped, not the sample
            texts.append(_text(t, source, rng))
            boxes.append(torch.from_numpy(b))
            keep.append(t)
    if not keep:
        return None
    masks = None
    if all(t.has_mask for t in keep):
        masks = torch.from_numpy(np.stack([t.mask().astype(bool) for t in keep]))
    return Sample(
        source=record.source,
        image_path=record.image_path,
        size=(record.height, record.width),
        messages=[[question.format(t.lower()), ANSWER] for t in texts],
        texts=texts,
        boxes=boxes,
        bboxes_valid=[1] * len(keep),
        masks=masks,
    )


def _choose(targets: tuple[Target, ...], rng: np.random.Generator, k: int) -> list[Target]:
    """Up to k distinct targets; all of them, in order, when there are at most k."""
    if len(targets) <= k:
        return list(targets)
    return [targets[i] for i in rng.choice(len(targets), size=k, replace=False)]


def _text(target: Target, source: Source, rng: np.random.Generator) -> str:
    if source.name == "objects365" and "/" in target.text:  # "Tape Measur/ Ruler"
        return str(rng.choice([p.strip() for p in target.text.split("/")]))
    if source.name == "paco_lvis":
        obj, part = parse_paco_name(source.category_name(target.category_id))
        if part is not None:
            return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"
        return obj
    return target.text.strip()


def _vqa_sample(record: Record) -> Sample | None:
    """One multi-turn conversation; `[LOC]` right after the image in the first user turn."""
    turns = list(record.conversations)
    if turns and turns[0]["from"] != "human":
        turns = turns[1:]
    roles = [t["from"] for t in turns]
    if not turns or roles[::2] != ["human"] * len(roles[::2]) or "human" in roles[1::2]:
        return None  # turns must alternate human/gpt
    messages = [t["value"] for t in turns[: len(turns) // 2 * 2]]  # end on an answer
    if not messages:
        return None
    first = next((i for i, m in enumerate(messages[::2]) if "<image>" in m), 0) * 2
    text = messages[first].replace("<image>", "").strip()
    messages[first] = ("<image>[LOC]\n" + text).strip()
    return Sample(
        source=record.source,
        image_path=record.image_path,
        size=(record.height, record.width),
        messages=[messages],
        texts=[""],
        boxes=[torch.tensor(DUMMY_BOX, dtype=torch.float32)],
        bboxes_valid=[0],
        masks=None,
    )
