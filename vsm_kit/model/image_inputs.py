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
    """Callable pair of processors: `owl(image)` and `clip(image)` take uint8 [H, W, 3] arrays
    or uint8 [3, H, W] tensors. Tensors skip a conversion: `both(decode_rgb(path))` is the
    training pipeline's one-decode path."""

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

    def owl(self, image) -> torch.Tensor:
        """[3, S, S] float32."""
        return self.owl_processor(images=_chw(image), return_tensors="pt")["pixel_values"][0]

    def clip(self, image) -> torch.Tensor:
        """[3, s, s] float32."""
        square = expand_to_square(_chw(image))
        return self.clip_processor(images=square, return_tensors="pt")["pixel_values"][0]

    def both(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        image = _chw(image)
        return self.owl(image), self.clip(image)


def _chw(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()


def expand_to_square(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] → [3, M, M], M = max(H, W), padded with `PAD_RGB`, image at top-left."""
    _, h, w = image.shape
    side = max(h, w)
    out = torch.tensor(PAD_RGB, dtype=torch.uint8).view(3, 1, 1).repeat(1, side, side)
    out[:, :h, :w] = image
    return out
