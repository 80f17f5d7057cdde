"""Pretrained tiny bases: the tiny OWL-ViT, CLIP and LLaVA-LLaMA fitted, once per world, to
scenes drawn by the demo world's own painter (its names, silhouettes, textures and colours), with
stand-ins for their real objectives:

- OWL-ViT: the patches at and around an object's centre predict its box (L1 + GIoU), and every
  patch on it scores its name and colour against learned class embeddings, the stand-in for the
  text tower (sigmoid focal loss, plus a softmax over patches per present class so that a name's
  best patch lies at its centre);
- CLIP: the vision tower and a one-layer text tower aligned contrastively on scene captions;
- LLaVA: LLaMA and `mm_projector` trained on the replies of demo conversations about a scene,
  after its CLIP features (LLaVA's two stages in one).

The fit is deterministic for a seed (fixed thread count) and cached by a content hash of what
decides it (`bases_key`) under `$VSM_KIT_CACHE` (default `~/.cache/vsm_kit`), so a world costs
the fit once per machine. The folders are saved in the real formats by `_weights`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss
from tqdm.auto import tqdm

from ..fsutil import atomic_dir
from ..model.architecture import VSMArch
from ..model.image_inputs import ImageInputs
from . import _draw
from ._draw import (
    COLORS,
    THING_SHAPES,
    Canvas,
    Thing,
    background,
    cells,
    make_thing,
    with_article,
)

BASES_VERSION = 1  # bump when the fit changes in a way the hashed sources do not show
NAMES = tuple(n for n in THING_SHAPES if n != "person")  # person appears only as a crowd
REPORT = "fit_report.json"  # what the fit reached, on held-out scenes and on its pool
SCENE_SIZES = ((240, 320), (360, 480), (300, 400), (480, 360), (384, 512), (512, 384))
# (cells' grid, things per scene [low, high)) of the fit's two kinds of scene
LAYOUT, SMALL_LAYOUT = ((3, 2), (2, 7)), ((5, 4), (4, 13))


@dataclass(frozen=True)
class FitSteps:
    """Optimizer steps per base (the defaults fit all three in under 3 minutes on 2 cores)."""

    owlvit: int = 4000
    clip: int = 150
    llava: int = 200
    scenes: int = 1024  # the pool the steps draw batches from


def cache_root() -> Path:
    return Path(os.environ.get("VSM_KIT_CACHE", Path.home() / ".cache" / "vsm_kit"))


def bases_key(arch: VSMArch, seed: int, steps: FitSteps) -> str:
    """What decides the fitted weights: the painter's and the fit's sources, the sizes, the
    seed and the step counts."""
    h = hashlib.sha256()
    for source in (Path(_draw.__file__), Path(__file__)):
        h.update(source.read_bytes())
    h.update(json.dumps([BASES_VERSION, arch.to_dict(), seed, steps.__dict__]).encode())
    return h.hexdigest()[:16]


def pretrained_bases(
    arch: VSMArch, seed: int = 0, steps: FitSteps | None = None, progress: bool = True
) -> Path:
    """The cached folder with `clip-tiny`, `owlvit-tiny` and `llava-tiny` fitted for `seed`,
    fitted first when absent (one process at a time; another waits for it)."""
    from ._weights import _save_model, write_clip, write_llava_base, write_owlvit

    steps = steps or FitSteps()
    folder = cache_root() / f"demo-bases-{bases_key(arch, seed, steps)}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        if folder.is_dir():
            return folder
        with _threads(2), atomic_dir(folder) as tmp:
            g = arch.owlvit.image_size // arch.owlvit.patch_size
            pool = draw_pool(seed, steps.scenes, g, progress)
            report: dict = {"steps": steps.__dict__, "seconds": {}}
            t0 = time.perf_counter()
            clip = write_clip(tmp / "clip-tiny", arch)
            report["clip_last_loss"] = fit_clip(clip, pool, arch, seed, steps.clip, progress)
            _save_model(clip, tmp / "clip-tiny")
            report["seconds"]["clip"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            detector = write_owlvit(tmp / "owlvit-tiny", arch)
            classes = fit_owlvit(detector, pool, arch, seed, steps.owlvit, progress)
            _save_model(detector, tmp / "owlvit-tiny")
            report["seconds"]["owlvit"] = round(time.perf_counter() - t0, 1)
            held_out = [draw_scene(np.random.default_rng([seed, 18, k]), g) for k in range(48)]
            report["owlvit_held_out"] = evaluate_owlvit(detector, classes, held_out, arch)
            report["owlvit_train"] = evaluate_owlvit(detector, classes, pool[:48], arch)
            t0 = time.perf_counter()
            last = {}
            write_llava_base(
                tmp / "llava-tiny",
                arch,
                "clip-tiny",
                fit=lambda lm, proj, tok: last.update(
                    loss=fit_llava(lm, proj, tok, clip, pool, arch, seed, steps.llava, progress)
                ),
            )
            report["llava_last_loss"] = last["loss"]
            report["seconds"]["llava"] = round(time.perf_counter() - t0, 1)
            (tmp / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    return folder


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _threads(n: int):
    """A fixed thread count, so float sums run in the same order on every machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- scenes -------------------------------------------------------------------------------


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    things: list[Thing]
    names: np.ndarray  # int64 [g, g]: index into NAMES of the object at each patch, or -1
    colors: np.ndarray  # int64 [g, g]: index into COLORS, or -1
    boxes: np.ndarray  # float32 [g, g, 4]: the object's cxcywh, normalised, where `has_box`
    has_box: np.ndarray  # bool [g, g]

    def caption(self) -> str:
        """'a red cup, a blue book and a green kite', left to right."""
        things = sorted(self.things, key=lambda t: t.center_x)
        parts = [with_article(f"{t.color} {t.name}") for t in things]
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def draw_scene(rng: np.random.Generator, grid: int) -> Scene:
    """Named things laid out as the demo's datasets lay them (`cells`): half the scenes hold 2
    to 6 on a plain or cluttered background, half 4 to 12 small ones (V*Bench's zoomed patches,
    and Objects365's scenes) on clutter."""
    h, w = SCENE_SIZES[int(rng.integers(len(SCENE_SIZES)))]
    canvas = Canvas(h, w, rng, base=tuple(int(v) for v in rng.uniform(90, 190, 3)))
    small = rng.random() < 0.5
    if small or rng.random() < 0.5:
        canvas.rgb[:] = np.asarray(background(rng, w, h), dtype=np.float32)
    layout = SMALL_LAYOUT if small else LAYOUT
    things: list[Thing] = []
    for box in cells(rng, h, w, int(rng.integers(*layout[1])), grid=layout[0]):
        name = NAMES[int(rng.integers(len(NAMES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        thing = make_thing(name, color, THING_SHAPES[name], box, h, w)
        canvas.paint_thing(thing)
        things.append(thing)
    return _label(np.asarray(canvas.image()), things, grid)


def _label(image: np.ndarray, things: list[Thing], g: int) -> Scene:
    """Per-patch targets on the g×g grid of the resized image: names and colours of the object
    under each patch's centre; boxes at the patch holding the object's centre and its
    neighbours under the object (where a detector's best box for it will be)."""
    h, w = image.shape[:2]
    names, colors = np.full((g, g), -1), np.full((g, g), -1)
    boxes = np.zeros((g, g, 4), np.float32)
    has_box = np.zeros((g, g), bool)
    ys = ((np.arange(g) + 0.5) / g * h).astype(int)
    xs = ((np.arange(g) + 0.5) / g * w).astype(int)
    for t in things:
        x, y, bw, bh = t.bbox
        under = t.mask[np.ix_(ys, xs)]
        r = min(int((y + bh / 2) / h * g), g - 1)
        c = min(int((x + bw / 2) / w * g), g - 1)
        near = np.zeros((g, g), bool)
        near[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2] = True
        near &= under
        near[r, c] = under[r, c] = True
        names[under] = NAMES.index(t.name)
        colors[under] = list(COLORS).index(t.color)
        boxes[near] = ((x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h)
        has_box |= near
    return Scene(image, things, names, colors, boxes, has_box)


def draw_pool(seed: int, n: int, grid: int, progress: bool = False) -> list[Scene]:
    keys = tqdm(range(n), desc="draw fit scenes", disable=not progress, unit="scene", leave=False)
    return [draw_scene(np.random.default_rng([seed, 17, k]), grid) for k in keys]


def _batches(n: int, seed: int, tag: int, steps: int, size: int, desc: str, progress):
    """Per step, the indices of a batch drawn from a pool of `n`."""
    rng = np.random.default_rng([seed, tag])
    for _ in tqdm(range(steps), desc=desc, disable=not progress, unit="step", leave=False):
        yield rng.integers(n, size=size)


def _optimizer(params, lr: float, steps: int):
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(steps, 1), pct_start=0.1)
    return opt, sched


# ---- OWL-ViT ------------------------------------------------------------------------------


def fit_owlvit(detector, pool, arch: VSMArch, seed: int, steps: int, progress=True):
    """Boxes and open-vocabulary classes (names and colours) on the pool; returns the learned
    class embeddings [names + colours, text width] (the stand-in text side, for evaluation)."""
    torch.manual_seed(seed)
    inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
    g = arch.owlvit.image_size // arch.owlvit.patch_size
    n_classes = len(NAMES) + len(COLORS)
    classes = torch.nn.Parameter(torch.randn(n_classes, arch.owlvit.text_hidden_size) * 0.5)
    params = [p for n, p in detector.named_parameters() if not n.startswith("owlvit.text_model")]
    opt, sched = _optimizer([*params, classes], 3e-3, steps)
    # the pool's detector inputs, made once (half precision: 0.9 MB a scene)
    pixels = torch.stack([inputs.owl(s.image).half() for s in pool])
    detector.train()
    for picks in _batches(len(pool), seed, 1, steps, 8, "fit OWL-ViT", progress):
        batch = [pool[i] for i in picks]
        logits, boxes = _detect(detector, pixels[picks].float(), classes, g)
        names = torch.from_numpy(np.stack([s.names for s in batch])).reshape(len(batch), -1)
        colors = torch.from_numpy(np.stack([s.colors for s in batch])).reshape(len(batch), -1)
        target = torch.cat(
            [
                F.one_hot(names + 1, len(NAMES) + 1)[..., 1:],
                F.one_hot(colors + 1, len(COLORS) + 1)[..., 1:],
            ],
            -1,
        ).float()
        fg = torch.from_numpy(np.stack([s.has_box for s in batch])).reshape(len(batch), -1)
        gt = torch.from_numpy(np.stack([s.boxes for s in batch])).reshape(len(batch), -1, 4)
        at_box = target * fg[..., None]
        present = at_box.sum(1) > 0
        share = at_box / at_box.sum(1, keepdim=True).clamp(min=1)
        losses = {
            "where": -(share * logits.log_softmax(1)).sum(1)[present].mean(),
            "focal": sigmoid_focal_loss(logits, target, reduction="sum")
            / (names >= 0).sum().clamp(min=1),
            "l1": F.l1_loss(boxes[fg], gt[fg]),
            "giou": generalized_box_iou_loss(
                box_convert(boxes[fg], "cxcywh", "xyxy"),
                box_convert(gt[fg], "cxcywh", "xyxy"),
                reduction="mean",
            ),
        }
        loss = losses["where"] + losses["focal"] + 5 * losses["l1"] + 2 * losses["giou"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    detector.eval()
    return classes.detach()


def _detect(detector, pixels: torch.Tensor, classes, g: int):
    """(class logits [B, g·g, C], boxes [B, g·g, 4] cxcywh) as the VSM computes them."""
    from ..model.heads import box_bias

    feats = detector.image_embedder(pixel_values=pixels)[0].reshape(len(pixels), g * g, -1)
    logits = detector.class_head(feats, classes[None].expand(len(pixels), -1, -1), None)[0]
    return logits, torch.sigmoid(detector.box_head(feats) + box_bias(g))


@torch.no_grad()
def evaluate_owlvit(detector, classes, scenes: list[Scene], arch: VSMArch) -> dict:
    """Over every (scene, object): `name_hit`, the share whose name's best patch lies on the
    object, and `box_hit`, the share where that patch's box also has IoU > 0.5 with it."""
    from torchvision.ops import box_iou

    g = arch.owlvit.image_size // arch.owlvit.patch_size
    inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
    pixels = torch.stack([inputs.owl(s.image) for s in scenes])
    logits, boxes = _detect(detector, pixels, classes, g)
    names = hits = boxed = 0
    for k, scene in enumerate(scenes):
        for t in scene.things:
            j = NAMES.index(t.name)
            best = int(logits[k, :, j].argmax())
            names += 1
            if scene.names.reshape(-1)[best] != j:
                continue
            hits += 1
            x, y, w, h = t.bbox
            height, width = scene.image.shape[:2]
            gt = torch.tensor([[x / width, y / height, (x + w) / width, (y + h) / height]])
            box = box_convert(boxes[k, best : best + 1], "cxcywh", "xyxy")
            boxed += int(box_iou(box, gt)[0, 0] > 0.5)
    return {"name_hit": hits / max(names, 1), "box_hit": boxed / max(names, 1)}


# ---- CLIP ---------------------------------------------------------------------------------


def fit_clip(vision, pool, arch: VSMArch, seed: int, steps: int, progress=True) -> float:
    """Contrastive image–caption alignment (a one-layer text tower over caption bytes, dropped
    after); returns the last loss."""
    torch.manual_seed(seed + 1)
    inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
    width = arch.clip.projection_dim
    text = torch.nn.Sequential(
        torch.nn.EmbeddingBag(4096, width, mode="mean"), torch.nn.Linear(width, width)
    )
    image_proj = torch.nn.Linear(arch.clip.hidden_size, width, bias=False)
    params = [*vision.parameters(), *text.parameters(), *image_proj.parameters()]
    opt, sched = _optimizer(params, 2e-3, steps)
    vision.train()
    loss = torch.zeros(())
    for picks in _batches(len(pool), seed, 2, steps, 16, "fit CLIP", progress):
        batch = [pool[i] for i in picks]
        pixels = torch.stack([inputs.clip(s.image) for s in batch])
        image = F.normalize(image_proj(vision(pixel_values=pixels).pooler_output), dim=-1)
        words = [_caption_features(s.caption()) for s in batch]
        offsets = torch.tensor([0] + [len(w) for w in words[:-1]]).cumsum(0)
        caption = F.normalize(text[1](text[0](torch.cat(words), offsets)), dim=-1)
        sims = image @ caption.T * 20.0
        labels = torch.arange(len(batch))
        loss = (F.cross_entropy(sims, labels) + F.cross_entropy(sims.T, labels)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    vision.eval()
    return float(loss.detach())


def _caption_features(text: str) -> torch.Tensor:
    """A caption as hashed features: its words and its word pairs (so "red cup" is one)."""
    words = text.replace(",", "").split()
    feats = words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    return torch.tensor([int(hashlib.md5(f.encode()).hexdigest()[:3], 16) for f in feats])


# ---- LLaVA-LLaMA --------------------------------------------------------------------------


def conversations(scene: Scene, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(question, reply) pairs about a scene in the demo's conversation styles."""
    out = [("What objects can you see in this image?", f"I can see {scene.caption()}.")]
    for t in scene.things[:2]:
        out.append((f"What is the color of the {t.name}?", f"The {t.name} is {t.color}."))
    absent = [n for n in NAMES if n not in {t.name for t in scene.things}]
    if absent:
        name = absent[int(rng.integers(len(absent)))]
        out.append((f"Is there a {name} in this image?", f"No, there is no {name}."))
    return out


def fit_llava(lm, projector, tokenizer, clip, pool, arch, seed, steps, progress=True) -> float:
    """Next-token loss on the replies of `conversations`, after the scene's projected CLIP
    features (the select layer the VSM reads); trains LLaMA and the projector, CLIP frozen."""
    from ..model.conversation import render, tokenize_with_image
    from ..model.vsm import IGNORE_INDEX, IMAGE_TOKEN_INDEX

    torch.manual_seed(seed + 2)
    inputs = ImageInputs(arch.owlvit.image_size, arch.clip.image_size)
    rng = np.random.default_rng([seed, 3])
    opt, sched = _optimizer([*lm.parameters(), *projector.parameters()], 3e-3, steps)
    lm.train()
    loss = torch.zeros(())
    for picks in _batches(len(pool), seed, 4, steps, 8, "fit LLaVA-LLaMA", progress):
        batch = [pool[i] for i in picks]
        with torch.no_grad():
            pixels = torch.stack([inputs.clip(s.image) for s in batch])
            states = clip(pixel_values=pixels, output_hidden_states=True).hidden_states
            feats = states[arch.mm_vision_select_layer][:, 1:]
        rows, labels = [], []
        for k, scene in enumerate(batch):
            pairs = conversations(scene, rng)
            question, reply = pairs[int(rng.integers(len(pairs)))]
            prompt = tokenize_with_image(render(["<image>\n" + question, None]), tokenizer)
            full = tokenize_with_image(render(["<image>\n" + question, reply]), tokenizer)
            cut = prompt.index(IMAGE_TOKEN_INDEX)
            ids = torch.tensor(full)
            text = lm.get_input_embeddings()(ids.clamp(min=0))
            image = projector(feats[k])
            rows.append(torch.cat([text[:cut], image, text[cut + 1 :]]))
            label = torch.full((len(rows[-1]),), IGNORE_INDEX)
            start = len(prompt) - 1 + len(image)  # replies are scored, not prompts
            label[start:] = ids[len(prompt) :]
            labels.append(label)
        n = max(len(r) for r in rows)
        embeds = torch.stack([F.pad(r, (0, 0, 0, n - len(r))) for r in rows])
        target = torch.stack([F.pad(lab, (0, n - len(lab)), value=IGNORE_INDEX) for lab in labels])
        mask = torch.stack([torch.arange(n) < len(r) for r in rows]).long()
        loss = lm(inputs_embeds=embeds, attention_mask=mask, labels=target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    lm.eval()
    return float(loss.detach())


def copy_bases(folder: Path, root: Path) -> None:
    """The cached base folders into a world's weights folder."""
    for name in ("clip-tiny", "owlvit-tiny", "llava-tiny"):
        shutil.copytree(folder / name, root / name)
    shutil.copy2(folder / REPORT, root / "bases_fit_report.json")
