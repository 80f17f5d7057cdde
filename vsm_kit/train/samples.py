"""From a source `Record` to a training `Sample`: targets, prompts, boxes, masks, validity.

One sample is one image with up to `k` conversations, each asking for one target and answered
with "Sure, [LOC]." (VQA samples: one multi-turn conversation with a hidden [LOC] after the
image). Randomness comes only from the `rng` passed in, so a sample is a pure function of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.boxes import training_targets, xyxy_to_xywh
from ..data.masks import SummedParts
from ..data.records import Record, Target
from ..data.sources import Source, parse_paco_name
from ..model.predictor import LOC_ANSWER, LOCATE

IMAGE = "<image>"
QUESTION = f"{IMAGE}\n{LOCATE}"
VAL_QUESTION = f"{IMAGE}\n {LOCATE}"  # the original's val prompt
ANSWER = LOC_ANSWER
MAX_BOXES = 100  # the first boxes kept per target of the CAPPED sources
CAPPED = ("objects365", "cocostuff")  # as the original: PACO keeps every instance
DUMMY_BOX = ((0.5, 0.5, 1.0, 1.0),)  # VQA rows: matched, never supervised
ROLES = ("human", "gpt")


@dataclass
class Sample:
    """One image and its conversations (tensors in the formats the collate expects).

    `messages`: per conversation, alternating user/assistant texts starting with the user's
    (exactly one holds `<image>`); `boxes`: per conversation float32 [k, 4] `cxcywh_norm`;
    `masks`: uint8 [n, H, W] BCE/DICE targets for sources with masks (refer: the sum of
    segmentation parts, > 1 where they overlap, as the original trains), else None (no dummy
    full-size masks are made)."""

    source: str
    image_path: Path
    size: tuple[int, int]  # (H, W) of the stored image
    messages: list[list[str]]
    texts: list[str]
    boxes: list[torch.Tensor]
    bboxes_valid: list[int]
    masks: torch.Tensor | None
    images: torch.Tensor | None = (
        None  # uint8 [3, S, S] OWL-ViT input (S = 768 for the real model), not normalised
    )
    images_clip: torch.Tensor | None = None  # uint8 [3, 224, 224] CLIP input, not normalised
    skipped_images: list[str] = field(default_factory=list)  # unreadable files re-drawn over

    @property
    def masks_valid(self) -> list[int]:
        return [int(self.masks is not None)] * len(self.messages)


def build_sample(
    record: Record,
    source: Source,
    rng: np.random.Generator,
    k: int = 3,
    question=QUESTION,
    drop_empty_targets: bool = False,
) -> Sample | None:
    """The sample for `record`, or None when it has nothing usable (the caller re-draws).

    As the original, a chosen target whose boxes all fall outside the image re-draws the whole
    sample; `drop_empty_targets` drops that target and keeps the others (validation, where the
    original would substitute its first image)."""
    if record.conversations:
        return _vqa_sample(record)
    chosen = _choose(record.targets, rng, k)
    if any(len(t.boxes_xyxy) == 0 for t in chosen):
        return None  # a COCO-Stuff class without any box: the original asserts, we re-draw
    cap = MAX_BOXES if source.name in CAPPED else None
    texts, boxes, keep = [], [], []
    for t in chosen:
        b = training_targets(xyxy_to_xywh(t.boxes_xyxy[:cap]), record.width, record.height)
        if not len(b) and not drop_empty_targets:
            return None
        if len(b):
            texts.append(_text(t, source, rng))
            boxes.append(torch.from_numpy(b))
            keep.append(t)
    if not keep:
        return None
    masks = None
    if all(t.has_mask for t in keep):
        masks = torch.from_numpy(np.stack([_training_mask(t) for t in keep]))
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


def _training_mask(target: Target) -> np.ndarray:
    """uint8 [H, W]: the refer sum of parts where the source composes one, else the 0/1 mask."""
    if isinstance(target.mask_fn, SummedParts):
        return target.mask_fn.summed()
    return target.mask().astype(np.uint8)


def _choose(targets: tuple[Target, ...], rng: np.random.Generator, k: int) -> list[Target]:
    """Up to k distinct targets; all of them, in order, when there are at most k."""
    if len(targets) <= k:
        return list(targets)
    return [targets[i] for i in rng.choice(len(targets), size=k, replace=False)]


def _text(target: Target, source: Source, rng: np.random.Generator) -> str:
    if source.name == "objects365":
        # one alternative of an "a/b" name, spaces kept: "Tape Measur/ Ruler" → " Ruler"
        return str(rng.choice(target.text.split("/"))) if "/" in target.text else target.text
    if source.name == "paco_lvis":
        obj, part = parse_paco_name(source.category_name(target.category_id))
        if part is not None:
            return f"{obj} {part}" if rng.random() < 0.5 else f"the {part} of the {obj}"
        return obj
    return target.text.strip()


def _vqa_sample(record: Record) -> Sample | None:
    """One multi-turn conversation formatted as the original does (§3.5): every message holding
    `<image>` becomes `"<image>[LOC]\\n" + its text` (so a hidden [LOC] follows the image), a
    first turn not from the human is dropped, and the turns must alternate human/gpt.

    None (re-draw) where the original asserts — turns that do not alternate, or a last turn
    without its answer (its collate asserts every round has one) — and where not exactly one
    message holds the image (a row carries one image and one [LOC] target)."""
    messages = [_with_loc(t["value"]) for t in record.conversations]
    roles = [t["from"] for t in record.conversations]
    if roles and roles[0] != "human":
        messages, roles = messages[1:], roles[1:]
    if len(roles) % 2 or roles != [ROLES[j % 2] for j in range(len(roles))]:
        return None
    if sum(IMAGE in m for m in messages) != 1:
        return None
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


def _with_loc(message: str) -> str:
    if IMAGE not in message:
        return message
    return (IMAGE + "[LOC]\n" + message.replace(IMAGE, "").strip()).strip()
