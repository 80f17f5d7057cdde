"""Learning on one fixed demo batch: every loss component falls by at least half in 50 steps."""

import torch

from vsm_kit.model.architecture import vsm_tiny
from vsm_kit.model.weights import load_vsm

from .batch import demo_batch

LLM = ("model.layers", "model.embed_tokens", "lm_head", "model.norm", "model.mm_projector")
CLASS = ("model.owlvit.class_head", "model.text_hidden_fcs_det")
BOX = ("model.owlvit.box_head",)
# learning rates per part: language model, class path, box head, mask path
LRS = {"llm": 1e-3, "class": 3e-2, "box": 2e-3, "mask": 5e-3}


def _part(name: str) -> str:
    if name.startswith(LLM):
        return "llm"
    return "class" if name.startswith(CLASS) else "box" if name.startswith(BOX) else "mask"


def test_fifty_steps_halve_every_loss_component(demo_world):
    torch.manual_seed(0)
    w = demo_world.weights
    model, tok, _ = load_vsm(w / "vsm-tiny", arch=vsm_tiny())
    model.train()
    # the recipe freezes OWL-ViT's box head (pretrained in the real model); the tiny one is
    # random, so here it learns too, or no box could move towards its target
    model.model.owlvit.box_head.requires_grad_(True)
    groups = {part: [] for part in LRS}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[_part(name)].append(p)
    opt = torch.optim.Adam([{"params": groups[k], "lr": lr} for k, lr in LRS.items()])
    # one query per image: two images, one with mask supervision and one without
    batch = demo_batch(demo_world.dataset, tok, n_per_image=(1, 1))
    keys = (
        "ce_loss",
        "mask_bce_loss",
        "mask_dice_loss",
        "detection_loss_ce",
        "detection_loss_bbox",
        "detection_loss_giou",
    )
    first = None
    for _ in range(50):
        out = model.forward_train(batch)
        first = first or {k: out[k].item() for k in keys}
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    with torch.no_grad():
        last = model.forward_train(batch)
    for k in keys:
        assert last[k].item() <= 0.5 * first[k], (k, first[k], last[k].item())
