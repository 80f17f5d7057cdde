"""V*'s guided visual search (§10): detect on the patch; when not confident, follow the target
cue (the detection's own mask logits) or, when that is weak, a contextual cue (ask where the
target would be, segment the answer) into four sub-patches, best first across all depths.

The model is anything with the `SearchModel` methods; `VSMPredictor` is one (`set_image` encodes
a patch once; `locate` gives boxes, scores and the target-cue map from one forward pass), and
tests drive the algorithm with a scripted double.

With `batch_siblings=True` and a model that has `locate_batch`, visiting a patch also locates its
still-queued siblings in the same batched call: the visiting order and every result stay the
same, but a sibling visited later costs no call. It pays where a batch of four costs well under
four single calls (a GPU) and the search goes on past the first sibling.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .config import SearchConfig
from .cues import CONTEXT_QUESTION, TARGET_CUE, Cue, context_phrase


class SearchModel(Protocol):
    def set_image(self, image: np.ndarray) -> None:
        """uint8 [h, w, 3]: the patch every following call is about."""

    def locate(self, target: str, cue: bool = True):
        """`.boxes_xyxy` float [P, 4] in patch pixels, `.scores` [P] in [0, 1] and, with `cue`,
        `.mask_logits` float [h, w] for "Please locate the {target} in this image."; the search
        asks for no mask on patches too small to split, where it would go unused."""

    def segment(self, phrase: str) -> np.ndarray:
        """Mask logits float [h, w] for the phrase."""

    def answer(self, question: str) -> str: ...

    # optional: def locate_batch(self, images: list[np.ndarray], target: str, cue: bool = True)
    #   `locate` for each image in one call; a later `set_image` of one of them costs nothing.


@dataclass
class Step:
    """One visited patch. `box_xywh` in image pixels; `detection_xywh` in patch pixels."""

    index: int
    box_xywh: tuple[int, int, int, int]
    level: int
    score: float | None  # the sub-patch score that queued it (None for the whole image)
    parent: int  # index of the parent step (-1 for the whole image)
    top_score: float = 0.0
    detection_xywh: tuple[float, float, float, float] | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)  # float32 [h, w] in [0, 1]
    cue: Cue | None = None  # what led into its sub-patches (None: found, or not split)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "box_xywh": list(self.box_xywh),
            "level": self.level,
            "score": self.score,
            "parent": self.parent,
            "top_score": self.top_score,
            "detection_xywh": None if self.detection_xywh is None else list(self.detection_xywh),
            "cue": None if self.cue is None else str(self.cue),  # the original's packed text
        }


@dataclass
class SearchResult:
    target: str
    found: bool
    box_xywh: tuple[float, float, float, float] | None  # image pixels
    score: float
    steps: list[Step]  # every visited patch, in visiting order
    path_length: int  # steps up to the one that gave the box
    model_calls: int  # locate (single or batched) + segment + answer calls
    encodes: int  # patches through the vision towers (the model's own count, when it keeps one)
    seconds: float
    all_boxes_xywh: list[tuple[float, float, float, float]] = field(default_factory=list)

    def describe(self) -> str:
        """One line: the verdict, the box, the score and what the search cost."""
        text = f"{self.target}: {'found' if self.found else 'not found'}"
        if self.box_xywh is not None:
            box = ", ".join(f"{v:.0f}" for v in self.box_xywh)
            text += f" · {'box' if self.found else 'best tentative box'} xywh ({box}) px"
        return text + (
            f" · score {self.score:.3f} · path length {self.path_length} of "
            f"{len(self.steps)} patches · {self.model_calls} model calls "
            f"({self.encodes} encodes) · {self.seconds:.2f} s"
        )

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("target", "found", "score", "path_length")}
        out |= {"model_calls": self.model_calls, "encodes": self.encodes, "seconds": self.seconds}
        out["box_xywh"] = None if self.box_xywh is None else list(self.box_xywh)
        out["all_boxes_xywh"] = [list(b) for b in self.all_boxes_xywh]
        out["steps"] = [s.to_dict() for s in self.steps]
        return out


def visual_search(
    model: SearchModel,
    image: np.ndarray,
    target: str,
    config: SearchConfig | None = None,
    *,
    batch_siblings: bool = False,
    on_step: Callable[[Step], None] | None = None,
) -> SearchResult:
    """Search `image` (uint8 [H, W, 3]) for `target` (default parameters: the original's).
    `on_step` sees each visited step as soon as it is done (progress displays)."""
    batch = batch_siblings and hasattr(model, "locate_batch")
    return _Search(model, image, target, config or SearchConfig(), batch, on_step).run()


class _Search:
    """The state of one search: visited steps, the best-first queue, call counters."""

    def __init__(self, model, image, target, config: SearchConfig, batch: bool, on_step):
        self.model, self.image, self.target, self.config = model, image, target, config
        self.batch, self.on_step = batch, on_step or (lambda step: None)
        self.prefetched: dict[tuple, object] = {}  # sibling box → its Location
        self.located_in_batch: set[tuple] = set()  # their encodings sit in the model's cache
        height, width = image.shape[:2]
        self.smallest = config.smallest_size(width, height)
        self.steps = [Step(0, (0, 0, width, height), 1, None, -1)]
        self.queue: list[_Queued] = []
        self.calls = self.encodes = 0
        self.all_boxes: list = []
        self.start = time.perf_counter()
        self.model_encodes = getattr(model, "encodes", None)  # VSMPredictor counts real passes

    def run(self) -> SearchResult:
        node = self.steps[0]
        while True:
            found = self.visit(node)
            self.on_step(node)
            if found:
                return self.result(True, node)
            if not self.queue:
                break
            node = heapq.heappop(self.queue).step
            node.index = len(self.steps)
            self.steps.append(node)
        # queue exhausted: the best tentative detection, if it is good enough
        best = max(self.steps, key=lambda s: s.top_score)
        return self.result(best.top_score >= self.config.confidence_low, best)

    def visit(self, node: Step) -> bool:
        """Visit one patch; True when the target is found there (else children are queued)."""
        config = self.config
        loc = self.locate(node)
        scores = np.asarray(loc.scores, dtype=np.float64)
        top = int(np.argmax(scores))
        node.top_score = float(scores[top])
        node.detection_xywh = _xywh(loc.boxes_xyxy[top])
        if node.top_score > config.confidence_high:
            if node.level == 1:  # on the whole image, every confident box is an answer
                keep = np.flatnonzero(scores > config.root_multi_threshold)
                self.all_boxes = [_xywh(loc.boxes_xyxy[k]) for k in keep]
            return True
        if not self.splits(node.box_xywh):
            return False
        cue = np.maximum(np.asarray(loc.mask_logits, dtype=np.float32), 0)
        if cue.max() > config.cue_threshold(node.level):
            node.heatmap, node.cue = _normalise(cue), TARGET_CUE
        else:
            if node.box_xywh in self.located_in_batch:
                self.model.set_image(self.crop(node.box_xywh))  # free while the model keeps it
                self.encodes += 1
            question = CONTEXT_QUESTION.format(self.target)
            answer = self.model.answer(question)
            phrase = context_phrase(answer, self.target)
            seg = np.maximum(np.asarray(self.model.segment(phrase), dtype=np.float32), 0)
            self.calls += 2
            node.heatmap, node.cue = _normalise(seg), Cue("context", question, answer, phrase)
        lineage = [node]
        while lineage[-1].parent >= 0:
            lineage.append(self.steps[lineage[-1].parent])
        for box in split(node.box_xywh):
            score = sum(_mass(a, box) / 4**a.level for a in lineage)
            child = Step(-1, box, node.level + 1, score, node.index)
            heapq.heappush(self.queue, _Queued(-score, child))
        return False

    def splits(self, box) -> bool:
        """Whether a patch is split when nothing is found in it (else it needs no cue)."""
        return min(box[2], box[3]) > self.smallest

    def crop(self, box) -> np.ndarray:
        x, y, w, h = box
        return np.ascontiguousarray(self.image[y : y + h, x : x + w])

    def locate(self, node: Step):
        """The node's detection; with batching, its queued siblings' too, in the same call."""
        if node.box_xywh in self.prefetched:
            return self.prefetched.pop(node.box_xywh)
        cue = self.splits(node.box_xywh)
        siblings = []
        if self.batch and node.parent >= 0:
            queued = (item.step for item in self.queue)
            siblings = [s.box_xywh for s in queued if s.parent == node.parent]
        self.calls += 1
        if not siblings:
            self.model.set_image(self.crop(node.box_xywh))
            self.encodes += 1
            return self.model.locate(self.target, cue=cue)
        boxes = [node.box_xywh, *siblings]
        cue = any(self.splits(b) for b in boxes)
        found = self.model.locate_batch([self.crop(b) for b in boxes], self.target, cue=cue)
        self.encodes += len(boxes)
        self.located_in_batch.update(boxes)
        self.prefetched.update(zip(siblings, found[1:], strict=True))
        return found[0]

    def result(self, found: bool, step: Step) -> SearchResult:
        encodes = self.encodes
        if self.model_encodes is not None:
            encodes = self.model.encodes - self.model_encodes
        box = None
        if step.detection_xywh is not None:
            dx, dy, dw, dh = step.detection_xywh
            box = (dx + step.box_xywh[0], dy + step.box_xywh[1], dw, dh)
        return SearchResult(
            target=self.target,
            found=found,
            box_xywh=box,
            score=step.top_score,
            steps=self.steps,
            path_length=step.index + 1,
            model_calls=self.calls,
            encodes=encodes,
            seconds=time.perf_counter() - self.start,
            all_boxes_xywh=self.all_boxes,
        )


class _Queued:
    """A queue entry that compares on its priority alone, as the original's `PriorityQueue`
    items do: equal scores then leave the heap in heap order (four equal siblings pushed
    a, b, c, d pop as a, c, b, d), not in the order they entered (§10.4)."""

    __slots__ = ("priority", "step")

    def __init__(self, priority: float, step: Step):
        self.priority, self.step = priority, step

    def __lt__(self, other: _Queued) -> bool:
        return self.priority < other.priority


def split(box_xywh: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """Four sub-patches by aspect ratio (h/w ≥ 2: a column of 4; ≤ 0.5: a row of 4; else 2×2);
    the last row/column takes the remainder."""
    x, y, w, h = box_xywh
    ratio = h / w
    cols, rows = (1, 4) if ratio >= 2 else (4, 1) if ratio <= 0.5 else (2, 2)
    sw, sh = w // cols, h // rows
    out = []
    for r in range(rows):
        for c in range(cols):
            cw = w - sw * (cols - 1) if c == cols - 1 else sw
            ch = h - sh * (rows - 1) if r == rows - 1 else sh
            out.append((x + c * sw, y + r * sh, cw, ch))
    return out


def _mass(ancestor: Step, box) -> float:
    """Share of the ancestor's heatmap inside `box` (image pixels)."""
    heat = ancestor.heatmap
    total = 0.0 if heat is None else float(heat.sum())
    if total <= 0:
        return 0.0
    ax, ay = ancestor.box_xywh[:2]
    x0, y0 = box[0] - ax, box[1] - ay
    return float(heat[y0 : y0 + box[3], x0 : x0 + box[2]].sum()) / total


def _normalise(heat: np.ndarray) -> np.ndarray:
    lo, hi = float(heat.min()), float(heat.max())
    return np.zeros_like(heat) if hi <= lo else (heat - lo) / (hi - lo)


def _xywh(xyxy) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    return (x0, y0, x1 - x0, y1 - y0)
