"""Streaming the top-level arrays of a big JSON object in batches of whole elements.

The annotation files are one object holding a few huge arrays (`images`, `annotations`, …).
We find element boundaries with vectorised byte scanning (brackets outside strings, tracked by
depth) and hand out each batch as raw bytes with its element count: callers either parse it with
orjson (`Batch.parse`) or pull a few fields out of the text directly, which avoids building a
Python object per element. Memory holds one batch at a time instead of the whole file.
Every wanted key must be a top-level array; a batch that may hold scalar elements (`5`, `"x"`
between objects) says so, so that field extraction by pattern cannot skip them silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ..errors import MalformedJsonError, VsmKitError

_DELTA = np.zeros(256, np.int8)
_DELTA[[ord("{"), ord("[")]] = 1
_DELTA[[ord("}"), ord("]")]] = -1
_QUOTE, _BACKSLASH, _COMMA = ord('"'), ord("\\"), ord(",")
_GAP_OK = np.zeros(256, bool)  # bytes allowed between two elements of an array
_GAP_OK[list(b" \t\r\n,")] = True
_KEY_BEFORE = re.compile(rb'"((?:[^"\\]|\\.)*)"\s*:\s*$')
CHUNK = 4 << 20
TRIM_EVERY = 4  # chunks between returning freed heap memory to the system

try:  # glibc keeps freed chunk-sized buffers on its heap; trimming keeps RSS near live data
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):
    _malloc_trim = None


class BadInputError(VsmKitError, ValueError):
    """An input file parses but does not have the shape or values a step needs."""


def trim_heap() -> None:
    """Return freed heap memory to the system (glibc only; a no-op elsewhere)."""
    if _malloc_trim is not None:
        with contextlib.suppress(Exception):
            _malloc_trim(0)


def _line_col(path: Path, offset: int) -> tuple[int, int]:
    line, last_nl, pos = 1, -1, 0
    with open(path, "rb") as f:
        while pos < offset:
            block = f.read(min(CHUNK, offset - pos))
            if not block:
                break
            n = block.count(b"\n")
            if n:
                line += n
                last_nl = pos + block.rfind(b"\n")
            pos += len(block)
    return line, offset - last_nl


def _malformed(path: Path, offset: int, reason: str) -> MalformedJsonError:
    line, col = _line_col(path, offset)
    return MalformedJsonError(path, offset, line, col, reason)


def _unescaped(arr: np.ndarray, quotes: np.ndarray, scan_from: int) -> np.ndarray:
    """Drop quotes preceded by an odd run of backslashes (escaped inside a string)."""
    if not quotes.size or not (arr[max(scan_from - 1, 0) :] == _BACKSLASH).any():
        return quotes
    suspects = np.flatnonzero(arr[np.maximum(quotes - 1, 0)] == _BACKSLASH)
    suspects = suspects[quotes[suspects] > 0]
    if not suspects.size:
        return quotes
    keep = np.ones(quotes.size, bool)
    for k in suspects.tolist():
        q, run = int(quotes[k]) - 1, 0
        while q >= 0 and arr[q] == _BACKSLASH:
            run, q = run + 1, q - 1
        keep[k] = run % 2 == 0
    return quotes[keep]


@dataclass(frozen=True)
class Batch:
    """Whole elements of the array `key`: `data` is a JSON array body (elements separated by
    commas), `count` the number of object/array elements in it, `offset` its file position;
    `scalars`: some element may be neither an object nor an array."""

    key: str
    data: bytes
    count: int
    offset: int
    path: Path
    scalars: bool = False

    def parse(self, closed: bool = True) -> list:
        """The elements as Python objects. With `closed=False` the data may stop inside an
        element: only an error before its end is reported (used to locate corruption)."""
        try:
            return orjson.loads(b"[" + self.data + (b"]" if closed else b""))
        except orjson.JSONDecodeError as err:
            at = len(err.doc[: err.pos].encode()) if isinstance(err.doc, str) else err.pos
            if not closed and at >= len(self.data):
                return []
            raise _malformed(self.path, self.offset + max(at - 1, 0), err.msg) from None

    def parse_lenient(self) -> list:
        """Like `parse`, also accepting NaN and Infinity (Python's json writes them), so that a
        step can name such values and leave their rows out instead of refusing the file."""
        try:
            return self.parse()
        except MalformedJsonError as err:
            try:
                return json.loads(b"[" + self.data + b"]")
            except ValueError:
                raise err from None


def _has_scalars(arr: np.ndarray, lo: int, hi: int, starts, ends) -> bool:
    """Whether buf[lo:hi], holding the elements starts[i]..ends[i], has anything but
    whitespace and one separating comma between them (a scalar element, or an empty one)."""
    g0 = np.concatenate(([lo], ends + 1))
    lens = np.concatenate((starts, [hi])) - g0
    if (lens < 0).any():
        return True
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    gap = arr[np.repeat(g0, lens) + within]
    if not _GAP_OK[gap].all():
        return True
    commas = np.bincount(np.repeat(np.arange(lens.size), lens)[gap == _COMMA], minlength=lens.size)
    return bool((commas[1:-1] != 1).any() or commas[0] > 1 or commas[-1] > 1)


def stream_arrays(
    path: str | Path,
    wanted: Collection[str],
    on_bytes: Callable[[int], None] | None = None,
    chunk: int | None = None,
) -> Iterator[Batch]:
    """Yield `Batch`es of each top-level array named in `wanted`, in file order (`chunk`: bytes
    read at a time, default `CHUNK`).

    Raises `MalformedJsonError` (file, byte offset, line, column) for a truncated or malformed
    file, including a top level that is not an object, and `BadInputError` when a wanted key
    is absent or not an array (after the last batch).
    """
    path = Path(path)
    chunk = chunk or CHUNK
    wanted = set(wanted)
    buf, buf_start = b"", 0  # unconsumed bytes and their file offset
    scan_from, depth, in_str = 0, 0, False
    key: str | None = None  # the wanted array we are inside
    elem_from = 0  # buf index where its unparsed elements start
    started = False
    seen: dict[str, int] = {}  # wanted top-level keys found → their value's opening bracket
    open_start = np.zeros(0, np.int64)  # buf index of the element left open by the last chunk

    def batch(lo: int, hi: int, count: int, starts=None, ends=None) -> Batch:
        raw = buf[lo:hi]
        body = raw.lstrip(b" \t\r\n,")
        scalars = starts is not None and _has_scalars(
            arr, lo, hi, starts[(starts >= lo) & (starts < hi)], ends[(ends >= lo) & (ends < hi)]
        )
        return Batch(key, body, count, buf_start + lo + len(raw) - len(body), path, scalars)

    with open(path, "rb") as f:
        for n_chunk in itertools.count():
            if n_chunk % TRIM_EVERY == TRIM_EVERY - 1:
                trim_heap()
            block = f.read(chunk)
            if on_bytes and block:
                on_bytes(len(block))
            if not block:
                break
            buf += block
            arr = np.frombuffer(buf, np.uint8)
            region = arr[scan_from:]
            quotes = _unescaped(arr, np.flatnonzero(region == _QUOTE) + scan_from, scan_from)
            events = (
                np.flatnonzero((region == 123) | (region == 125) | (region == 91) | (region == 93))
                + scan_from
            )
            outside = (np.searchsorted(quotes, events) + in_str) % 2 == 0
            events = events[outside]
            delta = _DELTA[arr[events]].astype(np.int64)
            after = depth + np.cumsum(delta)
            if events.size:
                if not started:
                    if arr[events[0]] != ord("{") or buf[: events[0]].strip():
                        raise _malformed(
                            path,
                            buf_start + int(events[0]),
                            "expected a JSON object at the top level",
                        )
                    started = True
                if after.min() < 0:
                    bad = int(events[np.argmax(after < 0)])
                    raise _malformed(path, buf_start + bad, "unbalanced closing bracket")
                # top-level values opening (1 → 2) or closing (2 → 1); element ends (3 → 2)
                top = np.flatnonzero(((after == 2) & (delta > 0)) | ((after == 1) & (delta < 0)))
                ends = events[(after == 2) & (delta < 0)]
                starts = np.concatenate((open_start, events[(after == 3) & (delta > 0)]))
                for t in top.tolist():
                    p = int(events[t])
                    if delta[t] > 0:
                        match = _KEY_BEFORE.search(buf[max(0, p - 4096) : p])
                        name = match.group(1).decode() if match else None
                        if name in wanted:
                            seen.setdefault(name, buf[p])
                        if buf[p] == ord("[") and name in wanted:
                            key, elem_from = name, p + 1
                    elif key is not None:
                        n = int(((ends >= elem_from) & (ends < p)).sum())
                        b = batch(elem_from, p, n, starts, ends)
                        if b.data.strip():
                            yield b
                        key = None
                if key is not None:  # flush whole elements read so far
                    done = ends[ends >= elem_from]
                    if done.size:
                        end = int(done[-1]) + 1
                        yield batch(elem_from, end, int(done.size), starts, ends)
                        elem_from = end
                    elif len(buf) - elem_from > 4 * chunk:
                        # no element ends in a long stretch: corruption (e.g. a lost quote)?
                        batch(elem_from, len(buf), 0).parse(closed=False)
                    open_start = starts[starts >= elem_from]
                depth = int(after[-1])
            in_str = bool((in_str + quotes.size) % 2)
            # forget what is consumed (keep a tail to find the next key's name)
            keep = elem_from if key is not None else max(0, len(buf) - 4096)
            buf, buf_start = buf[keep:], buf_start + keep
            elem_from -= keep
            open_start = open_start - keep if key is not None else open_start[:0]
            scan_from = len(buf)
    if not started:
        raise _malformed(path, buf_start + len(buf), "no JSON object found (empty file?)")
    if depth != 0 or in_str:
        if key is not None:  # raises at the first bad byte, if there is one
            batch(elem_from, len(buf), 0).parse(closed=False)
        raise _malformed(path, buf_start + len(buf), "unexpected end of data (truncated file)")
    for name in sorted(wanted):
        if seen.get(name) != ord("["):
            got = "an object" if name in seen else "missing (or not a list)"
            raise BadInputError(
                f"{path}: the top-level {name!r} array is {got}. Fix: this is not the released "
                "file (or a damaged copy of it); download or extract it again"
            )
