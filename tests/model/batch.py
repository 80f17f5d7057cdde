"""A small training batch built from demo-world records (a stand-in until the data pipeline's
collate exists): two images, three [LOC] queries, masks on the first image only."""

import numpy as np
import torch

from vsm_kit.data import open_source
from vsm_kit.data.boxes import training_targets, xyxy_to_xywh
from vsm_kit.model.architecture import vsm_tiny
from vsm_kit.model.conversation import render, tokenize_with_image
from vsm_kit.model.image_inputs import ImageInputs


def demo_batch(dataset, tokenizer, n_per_image=(2, 1)) -> dict:
    records = [open_source("cocostuff", dataset)[0], open_source("objects365", dataset)[0]]
    ids, labels, boxes, valid, masks, masks_valid, offset = [], [], [], [], [], [], [0]
    for rec, n, with_masks in zip(records, n_per_image, (True, False), strict=True):
        targets = rec.targets[:n]
        for t in targets:
            q = f"<image>\nPlease locate the {t.text.lower()} in this image."
            full = tokenize_with_image(render([q, "Sure, [LOC]."]), tokenizer)
            prefix = len(tokenize_with_image(render([q, None]), tokenizer))
            ids.append(full)
            labels.append([-100] * prefix + full[prefix:])
            xywh = xyxy_to_xywh(t.boxes_xyxy)
            boxes.append(torch.from_numpy(training_targets(xywh, rec.width, rec.height)))
            valid.append(1)
        masks.append(
            torch.from_numpy(np.stack([t.mask() for t in targets])).float()
            if with_masks
            else torch.zeros(0, rec.height, rec.width)
        )
        masks_valid.append(torch.full((len(targets),), int(with_masks)))
        offset.append(offset[-1] + len(targets))
    width = max(map(len, ids))
    input_ids = torch.tensor([r + [0] * (width - len(r)) for r in ids])
    label_t = torch.tensor([r + [-100] * (width - len(r)) for r in labels])
    images = [rec.load_image() for rec in records]
    arch = vsm_tiny()
    inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
    owl, clip = zip(*map(inputs.both, images), strict=True)
    return {
        "images": torch.stack(owl),
        "images_clip": torch.stack(clip),
        "input_ids": input_ids,
        "labels": label_t,
        "attention_masks": input_ids != 0,
        "offset": torch.tensor(offset),
        "bboxes_labels_list": boxes,
        "bboxes_valid_list": torch.tensor(valid),
        "masks_list": masks,
        "masks_valid_list": masks_valid,
    }
