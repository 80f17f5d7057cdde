"""Image decoding: RGB uint8 arrays in the stored pixel grid (annotations refer to it).

Nothing here needs torch (the data-only commands and readers never load it); the training
pipeline's tensor decode, `decode_rgb`, lives in `vsm_kit.model.image_inputs`.

16-bit images (PNG grey `I;16`/`I;16B`, 32-bit `I`, 16-bit RGB) become 8-bit by keeping the high
byte (`value >> 8`; `I` values are first clipped to 0..65535), identically in `load_rgb` and
`vsm_kit.model.image_inputs.decode_rgb`.

Images over `max_image_pixels()` pixels (default: 2 x PIL's `MAX_IMAGE_PIXELS`, the size PIL
itself refuses) raise `ImageTooLargeError` before any pixel is decoded. Raise the limit with the
environment variable `VSM_KIT_MAX_IMAGE_PIXELS=N` (`0` = no limit) or
`set_max_image_pixels(N)` (`None` = no limit)."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import CorruptImageError, ImageTooLargeError, MissingDataError, VsmKitError

_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_PIL_LIMIT = threading.Lock()  # guards the moment PIL's own check is switched off


def _limit_from_env() -> int | None:
    raw = os.environ.get("VSM_KIT_MAX_IMAGE_PIXELS", "").strip()
    if not raw:
        return 2 * Image.MAX_IMAGE_PIXELS
    try:
        value = int(raw)
    except ValueError:
        raise VsmKitError(
            f"VSM_KIT_MAX_IMAGE_PIXELS={raw!r} is not a whole number. Fix: set it to the largest "
            "image size in pixels to accept (0 = no limit)"
        ) from None
    return value if value > 0 else None


_max_pixels: int | None = _limit_from_env()


def set_max_image_pixels(n: int | None) -> None:
    """Accept images of up to `n` pixels (None: no limit); see the module docstring."""
    global _max_pixels
    _max_pixels = n


def max_image_pixels() -> int | None:
    """The current limit in pixels (None: no limit)."""
    return _max_pixels


def link_problem(path: Path, err: OSError) -> str | None:
    """The user-facing reason for an OSError of a symbolic link (loop or dangling), else None."""
    if err.errno == errno.ELOOP:
        return "a symbolic link loop (the link leads back to itself); point it at the real file"
    if isinstance(err, FileNotFoundError) and path.is_symlink():
        return f"a symbolic link to a missing file ({os.readlink(path)}); fix or remove the link"
    return None


@contextlib.contextmanager
def _open(path: str | Path, what: str = "image"):
    """PIL image of `path` (size checked against the limit); a missing file or a decoding
    failure becomes a user-facing error."""
    path = Path(path)
    try:
        with _PIL_LIMIT:  # the limit is ours (it can be raised): PIL's check is off meanwhile
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except OSError as err:
        if reason := link_problem(path, err):
            raise CorruptImageError(path, reason) from None
        if isinstance(err, FileNotFoundError):
            raise MissingDataError(
                path, what, "check the dataset layout with `vsm-kit check`"
            ) from None
        raise CorruptImageError(path, str(err) or type(err).__name__) from None
    except _DECODE_ERRORS as err:
        raise CorruptImageError(path, str(err) or type(err).__name__) from None
    with im:
        if _max_pixels is not None and im.width * im.height > _max_pixels:
            raise ImageTooLargeError(path, im.width, im.height, _max_pixels)
        try:
            yield im
        except _DECODE_ERRORS as err:
            raise CorruptImageError(path, str(err) or type(err).__name__) from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in _SIXTEEN_BIT:  # PIL's convert("RGB") would clip these to 255
        high = (np.asarray(im).clip(0, 65535) >> 8).astype(np.uint8)
        return np.repeat(high[:, :, None], 3, axis=2)
    return np.array(im.convert("RGB"))


def load_rgb(path: str | Path) -> np.ndarray:
    """Decode `path` to uint8 [H, W, 3]. Grayscale is expanded; EXIF orientation is NOT applied
    because COCO-style annotations use the stored pixel grid."""
    with _open(path) as im:
        return _to_rgb(im)


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
        if type(err) in (CorruptImageError, MissingDataError):
            return str(err).split(": ", 1)[-1]
        return str(err)  # a message that leads with the file already
    return None
