"""The two image inputs of the VSM, built with transformers' image processors.

- OWL-ViT (`images`): bicubic resize to S×S (aspect ratio not kept), CLIP mean/std → [3, S, S].
- CLIP (`images_clip`): pad to a square with the CLIP-mean colour, image at the top-left corner
  (as the original does), then the CLIP processor (shortest side, centre crop) → [3, s, s].
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import CLIPImageProcessor, OwlViTImageProcessor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_RGB = tuple(int(255 * m) for m in CLIP_MEAN)  # (122, 116, 104)


class ImageInputs:
    """Callable pair of processors: `owl(image)` and `clip(image)` take uint8 [H, W, 3]."""

    def __init__(self, owl_size: int = 768, clip_size: int = 224):
        self.owl_processor = OwlViTImageProcessor(
            size={"height": owl_size, "width": owl_size},
            crop_size={"height": owl_size, "width": owl_size},
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        )
        self.clip_processor = CLIPImageProcessor(
            size={"shortest_edge": clip_size},
            crop_size={"height": clip_size, "width": clip_size},
            image_mean=list(CLIP_MEAN),
            image_std=list(CLIP_STD),
        )

    def owl(self, image: np.ndarray) -> torch.Tensor:
        return self.owl_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def clip(self, image: np.ndarray) -> torch.Tensor:
        return self.clip_processor(images=expand_to_square(image), return_tensors="pt")[
            "pixel_values"
        ][0]


def expand_to_square(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] → [M, M, 3], M = max(H, W), padded with `PAD_RGB`, image at top-left."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, 3), np.uint8)
    out[:] = PAD_RGB
    out[:h, :w] = image
    return out
