"""Samples → the batch dict `VSMForCausalLM.forward_train` takes (the original collate's keys).

Only assistant replies (with their `</s>`) are supervised. Training truncation keeps
`max_length − image_tokens + 1` text columns (the image expands to `image_tokens` positions), and
a conversation whose [LOC] would be cut is dropped together with its boxes and mask, so queries
and targets stay aligned (the original cut blindly, §11.17).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..model.conversation import render, tokenize_with_image
from ..model.tokenizer import SpecialIds
from ..model.vsm import IGNORE_INDEX
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
        truncate: bool = True,
    ):
        self.tokenizer = tokenizer
        self.ids = ids
        self.text_budget = max_length - image_tokens + 1
        self.truncate = truncate

    def encode(self, messages: list[str]) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one conversation; labels are IGNORE_INDEX outside replies."""
        ids = tokenize_with_image(render(messages), self.tokenizer)
        labels = [IGNORE_INDEX] * len(ids)
        for k in range(1, len(messages), 2):
            start = len(tokenize_with_image(render([*messages[:k], None]), self.tokenizer))
            last = k + 1 == len(messages)  # then the reply ends the text already tokenized
            end = (
                len(ids)
                if last
                else len(tokenize_with_image(render(messages[: k + 1]), self.tokenizer))
            )
            labels[start:end] = ids[start:end]
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
            raise ValueError("every conversation of the batch lost its [LOC] to truncation")
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
        }
