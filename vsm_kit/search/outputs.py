"""Writing a search's result: `result.json`, the path over the whole image, each step's
heatmap and the final box — into a folder that appears complete or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..fsutil import atomic_dir
from ..viz import draw_search_path, draw_step
from .guided import SearchResult


def write_result(result: SearchResult, image: np.ndarray, out: str | Path, dpi: int = 80) -> Path:
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "result.json").write_text(json.dumps(result.to_dict(), indent=1))
        for name, fig in [("path.png", draw_search_path(image, result))] + [
            (f"step_{s.index:02d}.png", draw_step(image, s)) for s in result.steps
        ]:
            fig.savefig(tmp / name, dpi=dpi)
            plt.close(fig)
    return out
