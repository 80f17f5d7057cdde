"""Parameters of the guided visual search, with the original code's defaults (§10.2)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SearchConfig:
    confidence_low: float = 0.3  # the fallback's best tentative detection must reach this
    confidence_high: float = 0.5  # a detection above this ends the search
    target_cue_threshold: float = 6.0  # max target-cue logit needed at scale level 1 …
    target_cue_threshold_decay: float = 0.7  # … times this per level below the root …
    target_cue_threshold_minimum: float = 3.0  # … but never below this
    minimum_size_scale: float = 4.0  # patches stop splitting at min(W, H) / this …
    minimum_size: int = 224  # … or this many pixels, whichever is larger
    root_multi_threshold: float = 0.5  # boxes above this on the whole image are all returned

    def smallest_size(self, width: int, height: int) -> int:
        return max(math.ceil(min(width, height) / self.minimum_size_scale), self.minimum_size)

    def cue_threshold(self, level: int) -> float:
        decayed = self.target_cue_threshold * self.target_cue_threshold_decay ** (level - 1)
        return max(self.target_cue_threshold_minimum, decayed)

    def to_dict(self) -> dict:
        return asdict(self)
