"""The two image inputs of the VSM, pixel for pixel as the original's image processors make them.

- OWL-ViT (`images`): bicubic resize to S×S (aspect ratio not kept), CLIP mean/std → [3, S, S].
- CLIP (`images_clip`): pad to a square with the CLIP-mean colour, image at the top-left corner
  (as the original does), then the CLIP processor (shortest side, centre crop) → [3, s, s].

transformers 4.31's `OwlViTProcessor` and `CLIPImageProcessor` resize through PIL (the array
becomes a PIL image, `Image.resize(..., BICUBIC)`, then an array again), rescale by 1/255 in
float64, cast to float32 and normalise in float32. This module does the same steps in the same
arithmetic, so the tensors equal 4.31's under the same Pillow (checked in `tests/compat/`);
transformers 5's processors and torchvision's antialiased resize differ from it by a level in
up to 0.44 % of values. Different Pillow versions differ by a level or two on their own (README).

`decode_rgb` is the training pipeline's decode to a tensor; it lives here, beside the other tensor
work, so `vsm_kit.data` stays free of torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, read_file
from transformers import CLIPImageProcessor, OwlViTImageProcessor

from ..data.images import image_size, load_rgb
from ..errors import CorruptImageError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PAD_RGB = tuple(int(255 * m) for m in CLIP_MEAN)  # (122, 116, 104)
OWLVIT_PROCESSOR_DIR = "owlvit"


class ImageInputs:
    """`owl(image)` and `clip(image)` take uint8 [H, W, 3] arrays or uint8 [3, H, W] tensors;
    `both(image)` gives the pair from one decoded image (the training pipeline decodes once).

    Training splits the two halves: `resize` (PIL, uint8 out) in the dataloader workers,
    `normalise` on the device, so a batch crosses to it at a quarter of the float size. The
    transformers processors are kept only to save their configs beside a model."""

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
        self.owl_size, self.clip_size = owl_size, clip_size
        self._mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)

    def save_pretrained(self, folder) -> None:
        """Both processor configs: CLIP's at the top (where LLaVA-style loaders look) and
        OWL-ViT's in `owlvit/`, so a saved model folder needs nothing else to preprocess."""
        self.clip_processor.save_pretrained(str(folder))
        self.owl_processor.save_pretrained(str(Path(folder) / OWLVIT_PROCESSOR_DIR))

    def resize(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (OWL-ViT [3, S, S], CLIP [3, s, s]) from one decoded image: what a dataloader
        worker ships; `normalise` finishes the job on the training device."""
        image = _hwc(image)
        return self._resize_owl(image), self._resize_clip(image)

    def _resize_owl(self, image: np.ndarray) -> torch.Tensor:
        return _pil_resize(image, self.owl_size)

    def _resize_clip(self, image: np.ndarray) -> torch.Tensor:
        # the CLIP processor's shortest-edge resize of a square; its centre crop is a no-op
        return _pil_resize(expand_to_square(image), self.clip_size)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, H, W] → float32: ×1/255 in float64, then (x − mean) / std in float32,
        the processors' arithmetic to the last bit."""
        mean, std = self._mean.to(images.device), self._std.to(images.device)
        return images.double().mul_(1 / 255).float().sub_(mean).div_(std)

    def owl(self, image) -> torch.Tensor:
        """[3, S, S] float32: the whole image resized to S×S (aspect ratio not kept)."""
        return self.normalise(self._resize_owl(_hwc(image)))

    def clip(self, image) -> torch.Tensor:
        """[3, s, s] float32: the padded square resized (image at the top-left)."""
        return self.normalise(self._resize_clip(_hwc(image)))

    def both(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        owl, clip = self.resize(image)
        return self.normalise(owl), self.normalise(clip)


def _hwc(image) -> np.ndarray:
    """uint8 [H, W, 3] array from an array or a [3, H, W] tensor."""
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(image)


def _pil_resize(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] → uint8 [3, size, size] by PIL's bicubic filter."""
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous()


def expand_to_square(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] → [M, M, 3], M = max(H, W), padded with `PAD_RGB`, image at top-left
    (the original's expand2square: a new PIL image of that colour with the image pasted)."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:h, :w] = image
    out[h:] = PAD_RGB
    out[:h, w:] = PAD_RGB
    return out


def decode_rgb(path: str | Path) -> torch.Tensor:
    """Decode `path` once to uint8 [3, H, W] (libjpeg-turbo/libpng through torchvision, about
    twice as fast as PIL); the same pixel grid as `load_rgb` (no EXIF rotation)."""
    path = Path(path)
    image_size(path)  # header only: a missing, looping or oversized file fails here, named
    # torchvision 0.29 marks its decoders deprecated in favour of torchcodec (not in our stack)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_rgb(path)


def _decode_rgb(path: Path) -> torch.Tensor:
    try:
        out = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError as err:
        reason = str(err).splitlines()[0]
    else:
        if out.dtype == torch.uint8:
            return out
        reason = None  # 16-bit: PIL's path keeps the high byte, as `load_rgb` does
    # formats torchvision does not decode (e.g. a JPEG in CMYK) go through PIL instead
    try:
        return torch.from_numpy(load_rgb(path)).permute(2, 0, 1).contiguous()
    except CorruptImageError:
        if reason is None:
            raise
        raise CorruptImageError(path, reason) from None
