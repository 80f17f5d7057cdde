"""Image decoding: RGB uint8 arrays in the stored pixel grid (annotations refer to it).

Only `decode_rgb` (the training pipeline's tensor path) needs torch, and imports it itself, so
the data-only commands and readers never load torch."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CorruptImageError, MissingDataError

if TYPE_CHECKING:
    import torch

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


@contextlib.contextmanager
def _open(path: str | Path, what: str = "image"):
    """PIL image of `path`; a missing file or a decoding failure becomes a user-facing error."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            yield im
    except FileNotFoundError:
        raise MissingDataError(
            path, what, "check the dataset layout with `vsm-kit check`"
        ) from None
    except _DECODE_ERRORS as err:
        raise CorruptImageError(path, str(err) or type(err).__name__) from None


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode `path` to uint8 [H, W, 3]. Grayscale is expanded; EXIF orientation is NOT applied
    because COCO-style annotations use the stored pixel grid."""
    with _open(path) as im:
        return np.array(im.convert("RGB"))


def load_label_map(path: str | Path) -> np.ndarray:
    """Decode a single-channel PNG label map to uint8 [H, W]."""
    with _open(path, "label map") as im:
        return np.asarray(im)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding pixels."""
    with _open(path) as im:
        return im.height, im.width


def verify_image(path: str | Path) -> str | None:
    """None when the file decodes completely, else the reason it does not."""
    try:
        with _open(path) as im:
            im.load()
    except (CorruptImageError, MissingDataError) as err:
        return str(err).split(": ", 1)[-1]
    return None


def decode_rgb(path: str | Path) -> torch.Tensor:
    """Decode `path` once to uint8 [3, H, W] (libjpeg-turbo/libpng through torchvision, about
    twice as fast as PIL); the same pixel grid as `load_rgb` (no EXIF rotation)."""
    path = Path(path)
    # torchvision 0.29 marks its decoders deprecated in favour of torchcodec (not in our stack)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_rgb(path)


def _decode_rgb(path: Path) -> torch.Tensor:
    import torch
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        data = read_file(str(path))
    except RuntimeError:
        if not path.exists():
            raise MissingDataError(
                path, "image", "check the dataset layout with `vsm-kit check`"
            ) from None
        raise
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        # formats torchvision does not decode (e.g. a JPEG in CMYK) go through PIL instead
        try:
            return torch.from_numpy(load_rgb(path)).permute(2, 0, 1).contiguous()
        except CorruptImageError:
            raise CorruptImageError(path, str(err).splitlines()[0]) from None
