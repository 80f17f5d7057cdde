"""Reading annotation JSON: one fast parse per file, errors that name the file and byte offset."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import orjson

from .errors import MalformedJsonError, MissingDataError

_FIX = "check the dataset layout with `vsm-kit check`"


def parse_json_bytes(data: bytes, path: str | Path) -> Any:
    """Parse `data` (the content of `path`); a syntax error becomes `MalformedJsonError`."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as err:
        # orjson reports a character index into the decoded text; users need the byte offset.
        offset = len(err.doc[: err.pos].encode("utf-8")) if isinstance(err.doc, str) else err.pos
        raise MalformedJsonError(path, offset, err.lineno, err.colno, err.msg) from None


def load_json(path: str | Path, what: str = "JSON file", fix: str = "") -> Any:
    """Load a whole JSON file. Missing → `MissingDataError` with `fix`; malformed → byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MissingDataError(path, what, fix or _FIX) from None
    return parse_json_bytes(data, path)


@functools.lru_cache(maxsize=6)
def _load_cached(path: str, mtime_ns: int, size: int) -> Any:
    return load_json(path)


def load_json_shared(path: str | Path, what: str = "JSON file", fix: str = "") -> Any:
    """Like `load_json`, but parsed once per process while the file is unchanged.

    Several readers use the same big annotation file (COCO instances for COCO-Stuff, the refer
    datasets' instances); they share one parse. Treat the result as read-only.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MissingDataError(path, what, fix or _FIX) from None
    return _load_cached(str(path.resolve()), st.st_mtime_ns, st.st_size)


def dump_json_bytes(obj: Any) -> bytes:
    """Compact JSON as the original tool writes it (no indentation); numpy arrays allowed."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
