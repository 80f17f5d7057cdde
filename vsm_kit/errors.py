"""Errors a user can act on: each names the file involved and the fix."""

from __future__ import annotations

from pathlib import Path


class VsmKitError(Exception):
    """Base class: the message is complete and meant for the user, no traceback needed."""


class MissingDataError(VsmKitError, FileNotFoundError):
    """A file or folder the toolkit needs is absent."""

    def __init__(self, path: str | Path, what: str, fix: str):
        self.path = Path(path)
        super().__init__(f"Missing {what}: {self.path}\n  Fix: {fix}")


class BadArgumentError(VsmKitError, ValueError):
    """A name or value passed to the library that it does not know (a dataset group, a source,
    a step); the message lists the ones it does."""


class MalformedJsonError(VsmKitError, ValueError):
    """A JSON file cannot be parsed; `offset` is the byte offset of the problem."""

    def __init__(self, path: str | Path, offset: int, line: int, column: int, reason: str):
        self.path, self.offset, self.line, self.column = Path(path), offset, line, column
        super().__init__(
            f"Malformed JSON in {self.path} at byte {offset} (line {line}, column {column}): "
            f"{reason}.\n  Fix: the file is truncated or corrupted; download or extract it again."
        )


class CorruptImageError(VsmKitError, OSError):
    """An image file exists but cannot be decoded."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(f"Cannot decode image {self.path}: {reason}")


class UnsafePickleError(VsmKitError, ValueError):
    """A pickle asks to construct objects beyond plain data; we refuse to run it."""


class AnnotationError(VsmKitError, ValueError):
    """An annotation file (or one element of it) does not hold what its release holds."""

    def __init__(self, path: str | Path, problem: str, fix: str):
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}. Fix: {fix}")


class ImageTooLargeError(CorruptImageError):
    """An image declares more pixels than the decompression-bomb limit allows."""

    def __init__(self, path: str | Path, width: int, height: int, limit: int):
        self.path = Path(path)
        VsmKitError.__init__(
            self,
            f"Image {self.path} is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limit} pixels (a guard against decompression bombs). Fix: if the image is genuine, "
            f"raise the limit: VSM_KIT_MAX_IMAGE_PIXELS={width * height} in the environment, or "
            f"vsm_kit.data.images.set_max_image_pixels({width * height})",
        )


class LabelMapSizeError(CorruptImageError):
    """A COCO-Stuff label map whose size differs from its image's: its masks would not align."""

    def __init__(self, path: str | Path, image: str | Path, label_hw, image_hw):
        self.path = Path(path)
        VsmKitError.__init__(
            self,
            f"Label map {self.path} is {label_hw[1]}x{label_hw[0]} but its image {image} is "
            f"{image_hw[1]}x{image_hw[0]} (width x height); its masks cannot align. Fix: replace "
            "it with the stuffthingmaps_trainval2017 label map of that image",
        )
