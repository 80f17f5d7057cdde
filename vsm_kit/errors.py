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
