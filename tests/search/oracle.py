"""A scripted test double for the search's model interface — not a model.

Its images encode their own coordinates (`coordinate_image`), so from a patch's pixels it knows
where the patch lies. It detects the target only in patches that contain it and whose smaller
side is at most `sees_below`, and its cue maps are Gaussians peaked on the target."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def coordinate_image(width: int, height: int) -> np.ndarray:
    """uint8 [H, W, 3]: R = x mod 256, G = y mod 256, B = 16·(x div 256) + (y div 256)."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([x % 256, y % 256, 16 * (x // 256) + y // 256], -1).astype(np.uint8)


@dataclass
class Located:
    boxes_xyxy: np.ndarray
    scores: np.ndarray
    mask_logits: np.ndarray | None


class LocatesInTurn:
    """`locate_batch` for test doubles: `set_image` then `locate`, patch by patch."""

    def locate_batch(self, patches: list, target: str, cue: bool = True) -> list:
        out = []
        for patch in patches:
            self.set_image(patch)
            out.append(self.locate(target, cue))
        return out


@dataclass
class ScriptedOracle(LocatesInTurn):
    target_xyxy: tuple[int, int, int, int]  # where the target is, image pixels
    sees_below: int = 300  # detects only in patches this small (smaller side)
    cue_peak: float = 10.0  # height of the target cue on the target
    detect_score: float = 0.9
    miss_score: object = 0.1  # a number, or f(level, contains_target) for tentative scores
    context_answer: str = "The dog is most likely to appear on the red mat."
    extra_root_boxes: list = field(default_factory=list)  # more confident boxes on the whole image
    patches: list = field(default_factory=list)  # (x, y, w, h) of every set_image
    phrases: list = field(default_factory=list)
    questions: list = field(default_factory=list)
    batches: list = field(default_factory=list)  # sizes of locate_batch calls

    def set_image(self, patch: np.ndarray) -> None:
        r, g, b = (int(v) for v in patch[0, 0])
        x0, y0 = 256 * (b // 16) + r, 256 * (b % 16) + g
        self.patches.append((x0, y0, patch.shape[1], patch.shape[0]))

    @property
    def _box(self):
        return self.patches[-1]

    def _contains(self) -> bool:
        x, y, w, h = self._box
        tx0, ty0, tx1, ty1 = self.target_xyxy
        return x <= tx0 and y <= ty0 and tx1 <= x + w and ty1 <= y + h

    def _peak(self, height: float) -> np.ndarray:
        x, y, w, h = self._box
        tx0, ty0, tx1, ty1 = self.target_xyxy
        cx, cy = (tx0 + tx1) / 2 - x, (ty0 + ty1) / 2 - y
        yy, xx = np.mgrid[0:h, 0:w]
        sigma = max(tx1 - tx0, ty1 - ty0)
        return height * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))

    def _level(self) -> int:
        full = self.patches[0]
        return 1 + int(round(np.log2(full[2] * full[3] / (self._box[2] * self._box[3])) / 2))

    def locate(self, target: str, cue: bool = True) -> Located:
        x, y, w, h = self._box
        tx0, ty0, tx1, ty1 = self.target_xyxy
        here = (tx0 - x, ty0 - y, tx1 - x, ty1 - y)
        boxes = [here, (0, 0, 10, 10)]
        if self._contains() and min(w, h) <= self.sees_below:
            scores = [self.detect_score, 0.05]
            if len(self.patches) == 1:
                for box in self.extra_root_boxes:
                    boxes.append(box)
                    scores.append(0.8)
        else:
            miss = self.miss_score
            score = miss(self._level(), self._contains()) if callable(miss) else miss
            scores = [score, 0.01] if self._contains() else [0.01, score]
        mask = self._peak(self.cue_peak) if cue else None  # the search must not need it then
        return Located(np.array(boxes, float), np.array(scores), mask)

    def segment(self, phrase: str) -> np.ndarray:
        self.phrases.append(phrase)
        return self._peak(5.0)

    def answer(self, question: str) -> str:
        self.questions.append(question)
        return self.context_answer

    def locate_batch(self, patches: list, target: str, cue: bool = True) -> list[Located]:
        self.batches.append(len(patches))
        return super().locate_batch(patches, target, cue)
