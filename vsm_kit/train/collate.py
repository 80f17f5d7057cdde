"""Samples → the batch dict `VSMForCausalLM.forward_train` takes (the original collate's keys).

Only assistant replies (with their `</s>`) are supervised, by the original's labelling rule.
Training truncation keeps `max_length − image_tokens + 1` text columns (the image expands to
`image_tokens` positions), and a conversation whose [LOC] would be cut is dropped together with
its boxes and mask, so queries and targets stay aligned (the original cut blindly, §11.17).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.conversation import ROUND_SEP, SEP2, render, tokenize_with_image
from ..model.tokenizer import SpecialIds
from ..model.vsm import IGNORE_INDEX
from .config import ConfigError
from .samples import Sample


class Collator:
    """`collator(samples) -> batch`. `image_tokens`: positions one image takes in the LLM
    (CLIP patches: 256 for ViT-L/14 at 224); `truncate`: training (True) or validation."""

    def __init__(
        self,
        tokenizer,
        ids: SpecialIds,
        max_length: int = 512,
        image_tokens: int = 256,
        *,
        truncate: bool = True,
    ):
        self.tokenizer = tokenizer
        self.ids = ids
        self.max_length = max_length
        self.text_budget = max_length - image_tokens + 1
        self.truncate = truncate

    def encode(self, messages: list[str]) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one conversation, labelled by the original's rule: split the
        text on `</s>` into rounds and each round on " ASSISTANT: "; a round's tokens (its BOS
        standing in for the `</s>` split off) advance the cursor, and its instruction's tokens
        less two (the BOS and, with LLaMA's tokenizer, the trailing space's `▁`) are masked."""
        text = render(messages)
        ids = tokenize_with_image(text, self.tokenizer)
        labels = list(ids)
        labels[0] = IGNORE_INDEX  # the BOS
        cur = 1
        for round_text in text.split(SEP2):
            if not round_text:
                break
            parts = round_text.split(ROUND_SEP)
            if len(parts) != 2:
                raise ValueError(
                    f"a round must hold {ROUND_SEP!r} exactly once (the original asserts): "
                    f"{round_text[:200]!r}"
                )
            instruction = len(tokenize_with_image(parts[0] + ROUND_SEP, self.tokenizer)) - 2
            labels[cur : cur + instruction] = [IGNORE_INDEX] * len(labels[cur : cur + instruction])
            cur += len(tokenize_with_image(round_text, self.tokenizer))
        labels[cur:] = [IGNORE_INDEX] * len(labels[cur:])
        if cur < self.max_length and cur != len(ids):
            raise ValueError(
                f"labels cover {cur} of {len(ids)} tokens (the original asserts they match): "
                f"{text[:200]!r}"
            )
        return ids, labels

    def __call__(self, samples: Sequence[Sample]) -> dict:
        rows, kept_samples = [], []
        for sample in samples:
            keep = []
            for j, messages in enumerate(sample.messages):
                ids, labels = self.encode(messages)
                if self.truncate and len(ids) > self.text_budget:
                    loc_total = ids.count(self.ids.loc)
                    ids, labels = ids[: self.text_budget], labels[: self.text_budget]
                    if ids.count(self.ids.loc) < loc_total:
                        continue  # its [LOC] would be cut: drop the query with its target
                keep.append((j, ids, labels))
            if keep:
                kept_samples.append((sample, keep))
                rows.extend((sample, *row) for row in keep)
        if not rows:
            raise ConfigError(
                "data.model_max_length",
                f"{self.max_length} tokens cut the [LOC] of every conversation of a batch "
                f"(images: {', '.join(str(s.image_path) for s in samples)}); Fix: raise "
                "data.model_max_length (the original's is 512)",
            )
        width = max(len(ids) for _, _, ids, _ in rows)
        pad = self.ids.pad
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, (sample, j, ids, lab) in enumerate(rows):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            labels[r, : len(lab)] = torch.tensor(lab)
            attention[r, : len(ids)] = True
            if not sample.bboxes_valid[j]:  # VQA: the [LOC] is there but hidden as a key
                attention[r, : len(ids)] &= input_ids[r, : len(ids)] != self.ids.loc
        counts = [len(keep) for _, keep in kept_samples]
        masks, masks_valid = [], []
        for sample, keep in kept_samples:
            sel = [j for j, _, _ in keep]
            masks_valid.append(torch.tensor([sample.masks_valid[j] for j in sel]))
            masks.append(sample.masks[sel].float() if sample.masks is not None else torch.zeros(0))
        return {
            "image_paths": [str(s.image_path) for s, _ in kept_samples],
            "images": torch.stack([s.images for s, _ in kept_samples]),
            "images_clip": torch.stack([s.images_clip for s, _ in kept_samples]),
            "input_ids": input_ids,
            "labels": labels,
            "attention_masks": attention,
            "offset": torch.tensor([0, *torch.tensor(counts).cumsum(0).tolist()]),
            "bboxes_labels_list": [sample.boxes[j] for sample, j, _, _ in rows],
            "bboxes_valid_list": torch.tensor([sample.bboxes_valid[j] for sample, j, _, _ in rows]),
            "masks_list": masks,
            "masks_valid_list": masks_valid,
            "texts": [sample.texts[j] for sample, j, _, _ in rows],
            "skipped_images": [path for sample in samples for path in sample.skipped_images],
        }
