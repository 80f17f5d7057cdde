"""What every preprocessing step shares: inputs checks, progress, the box index writer, results."""

from __future__ import annotations

import collections
import contextlib
import math
import re
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import orjson
from tqdm.auto import tqdm

from ..data import tree
from ..errors import MissingDataError
from ..fsutil import atomic_write
from ._stream import BadInputError, Batch, trim_heap

GROUPS_PER_WRITE = 2_000  # images serialised per write: bounds memory while writing


@dataclass
class StepResult:
    """What one step did. `peak_rss_mb` is the process's peak resident memory so far."""

    step: str
    output: Path
    status: str  # "built" or "up to date"
    images: int = 0
    boxes: int = 0
    skipped: int = 0  # annotations of images skipped on purpose (known absent from the release)
    unknown_image_ids: int = 0  # annotations naming an image id the file does not list
    malformed: int = 0  # rows left out because a field has the wrong type or value
    missing_images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def require_inputs(data_dir: Path, keys: list[tuple[str, str]], step: str) -> list[Path]:
    """The step's input paths (`data.tree.PATHS` keys); a missing one raises with where it
    comes from."""
    paths = []
    for key in keys:
        path = tree.at(data_dir, *key)
        if not path.is_file():
            raise MissingDataError(
                path,
                f"input of the {step} preprocessing step",
                f"get it from {tree.entry(*key).origin}",
            )
        paths.append(path)
    return paths


def byte_bar(paths: list[Path], step: str, progress: bool):
    total = sum(p.stat().st_size for p in paths)
    return tqdm(total=total, unit="B", unit_scale=True, desc=step, disable=not progress)


# ids: at most 18 digits (int64), ending the value; anything else goes the validating way
_IMAGE_ID = re.compile(rb'"image_id"\s*:\s*(-?\d{1,18})(?=\s*[,}])')
_CATEGORY_ID = re.compile(rb'"category_id"\s*:\s*(-?\d{1,9})(?=\s*[,}])')
_BBOX = re.compile(rb'"bbox"\s*:\s*\[([^\]]*)\]')
_ID = re.compile(rb'"id"\s*:\s*(-?\d{1,18})(?=\s*[,}])')
_FILE_NAME = re.compile(rb'"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_NUMBER_BYTES = b"0123456789+-.eE \t\r\n,]"  # what the bbox texts of a batch may hold
SHOW = 3  # bad rows named in a warning


class Skips:
    """Rows left out of an output, counted per input file, the first few named (position in
    the file's array, id, what is wrong) for the step's warnings."""

    def __init__(self, what: str):
        self.what = what
        self.counts: dict[Path, int] = {}
        self.examples: dict[Path, list[str]] = {}

    def add(self, path: Path, key: str, position: int, item, why: str) -> None:
        self.counts[path] = self.counts.get(path, 0) + 1
        shown = self.examples.setdefault(path, [])
        if len(shown) < SHOW:
            ident = f" (id {item['id']!r})" if isinstance(item, dict) and "id" in item else ""
            shown.append(f"{key}[{position}]{ident}: {why}")

    def __len__(self) -> int:
        return sum(self.counts.values())

    def warnings(self) -> list[str]:
        return [
            f"{n} {self.what} of {path} left out: "
            + "; ".join(self.examples[path])
            + ("; …" if n > SHOW else "")
            for path, n in self.counts.items()
        ]


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value, bits: int = 63) -> bool:
    """A JSON integer (not a bool, not a float) that fits a signed `bits + 1`-bit integer."""
    return type(value) is int and -(1 << bits) <= value < 1 << bits


def bbox_problem(bbox) -> str | None:
    """Why `bbox` is not 4 finite numbers, or None."""
    if not (
        type(bbox) is list
        and len(bbox) == 4
        and all((type(v) is float and math.isfinite(v)) or is_int(v) for v in bbox)
    ):
        return f"bbox {_show(bbox)} is not 4 finite numbers"
    return None


def _annotation_problem(item) -> str | None:
    if not isinstance(item, dict):
        return f"{_show(item)} is not an object"
    for key, bits in (("image_id", 63), ("category_id", 31)):
        if key not in item:
            return f"no {key!r}"
        if not is_int(item[key], bits):
            return f"{key} {_show(item[key])} is not an integer"
    if "bbox" not in item:
        return "no 'bbox'"
    return bbox_problem(item["bbox"])


def _boxes_are_numbers(piece: bytes, n: int) -> bool:
    """Whether `piece` ("x,y,w,h]" n times, as the pattern captured) is n boxes of 4 JSON
    numbers that fit a double (orjson refuses NaN, Infinity and overflowing numbers)."""
    if piece.translate(None, _NUMBER_BYTES):  # anything but numbers, "," and "]"
        return False
    arr = np.frombuffer(piece, np.uint8)
    ends, commas = np.flatnonzero(arr == 93), np.flatnonzero(arr == 44)
    if ends.size != n or commas.size != 3 * n:
        return False
    by_box = commas.reshape(n, 3)  # each box's 3 commas lie between its "]" and the previous
    if (by_box[:, 2] > ends).any() or (by_box[1:, 0] < ends[:-1]).any():
        return False
    try:
        orjson.loads(b"[" + piece[:-1].replace(b"]", b",") + b"]")
    except orjson.JSONDecodeError:
        return False
    return True


def _ints(values: list) -> np.ndarray:
    """int64 array of ints, or of the digit strings the patterns capture."""
    if values and isinstance(values[0], bytes):
        return np.fromstring(b" ".join(values), dtype=np.int64, sep=" ")
    return np.array(values, dtype=np.int64)


class AnnotationColumns:
    """Per annotation: image id, category id and the bbox's JSON text, kept verbatim.

    Fields are pulled from each batch's text by pattern, with no Python object per annotation,
    when every element gives one integer id, one integer category and one box of 4 JSON
    numbers; any other batch is parsed and validated element by element, and a bad element
    (not an object, an id or category that is no integer, a bbox that is not 4 finite numbers)
    is left out and counted in `skips`. About 50 bytes per box are kept (ids, text end and the
    bbox text)."""

    def __init__(self):
        self._ids: list[np.ndarray] = []  # image ids, or their groups once `resolve` is set
        self._resolved: list[bool] = []
        self._cats: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self.bbox_text = bytearray()
        # ids → int32 groups, when the images are known before their annotations (saves memory)
        self.resolve = None
        self.skips = Skips("annotations")
        self.read = 0  # annotations read, kept or not
        self.read_from: dict[Path, int] = {}  # annotations read, per file

    def add(self, batch: Batch) -> None:
        d = batch.data
        ids, cats, boxes = _IMAGE_ID.findall(d), _CATEGORY_ID.findall(d), _BBOX.findall(d)
        # bbox texts never contain "]": end each with one and find the ends at once
        piece = b"]".join(boxes) + b"]" if boxes else b""
        position = self.read_from.get(batch.path, 0)
        if batch.scalars or not (
            len(ids) == len(cats) == len(boxes) == batch.count
            and _boxes_are_numbers(piece, len(boxes))
        ):
            ids, cats, boxes = [], [], []
            items = batch.parse_lenient()
            for k, item in enumerate(items):
                why = _annotation_problem(item)
                if why:
                    self.skips.add(batch.path, batch.key, position + k, item, why)
                    continue
                ids.append(item["image_id"])
                cats.append(item["category_id"])
                boxes.append(orjson.dumps(item["bbox"])[1:-1])
            piece = b"]".join(boxes) + b"]" if boxes else b""
            n_read = len(items)
        else:
            n_read = batch.count
        self.read_from[batch.path] = position + n_read
        self.read += n_read
        ids = _ints(ids)
        self._resolved.append(self.resolve is not None)
        self._ids.append(self.resolve(ids) if self.resolve else ids)
        self._cats.append(_ints(cats).astype(np.int32))
        if boxes:
            start = len(self.bbox_text)
            self.bbox_text += piece
            ends = np.flatnonzero(np.frombuffer(self.bbox_text, np.uint8, offset=start) == 93)
            self._ends.append((ends + start).astype(np.uint32 if start < 2**31 else np.int64))

    def __len__(self) -> int:
        return sum(len(c) for c in self._cats)

    def _add_and_trim(self, batch: Batch) -> None:
        self.add(batch)
        if len(self._cats) % 4 == 0:
            trim_heap()

    @contextlib.contextmanager
    def in_background(self):
        """Within the block, `submit(batch)` extracts on a worker thread, in order, while the
        caller scans the next chunk (numpy releases the GIL, so the two overlap)."""
        pending: collections.deque = collections.deque()
        with ThreadPoolExecutor(max_workers=1) as pool:

            def submit(batch: Batch) -> None:
                while len(pending) >= 2:
                    pending.popleft().result()
                pending.append(pool.submit(self._add_and_trim, batch))

            try:
                yield submit
                while pending:  # the last batches too: their errors must not be lost
                    pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

    def group_by(self, sorted_ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """int32 [N]: `values[k]` for the image id `sorted_ids[k]` of each annotation, -1 where
        the id is unknown. Frees the stored ids batch by batch."""
        groups = []
        while self._ids:
            ids, done = self._ids.pop(0), self._resolved.pop(0)
            groups.append(ids if done else lookup(sorted_ids, values, ids).astype(np.int32))
        group = _cat(groups, np.int32)
        del groups
        trim_heap()
        return group

    def cats_and_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """(category ids [N], offsets [N + 1]): box k's text is
        `bbox_text[offsets[k] : offsets[k + 1] - 1]` (each is followed by its "]")."""
        cats, self._cats = _cat(self._cats, np.int32), []
        n = len(cats)
        offsets = np.zeros(n + 1, self._ends[-1].dtype if self._ends else np.int64)
        if n:
            np.concatenate(self._ends, out=offsets[1:])
            offsets[1:] += 1
        self._ends = []
        trim_heap()
        return cats, offsets


def _cat(parts: list[np.ndarray], dtype=np.int64) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def image_columns(batch: Batch, skips: Skips, position: int) -> tuple[list[int], list[str], int]:
    """(ids, file names, entries read) of a batch of COCO-style image entries, which start at
    `position` of the file's `images`; an entry without an integer `id` and a string
    `file_name` is left out and counted in `skips` (its annotations then name an unknown id)."""
    d = batch.data
    ids, names = _ID.findall(d), _FILE_NAME.findall(d)
    if not batch.scalars and len(ids) == len(names) == batch.count:
        names = [orjson.loads(b'"' + n + b'"') if b"\\" in n else n.decode() for n in names]
        return [int(i) for i in ids], names, batch.count
    ids, names = [], []
    items = batch.parse_lenient()
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            why = f"{_show(item)} is not an object"
        elif not is_int(item.get("id")):
            why = f"id {_show(item.get('id'))} is not an integer"
        elif type(item.get("file_name")) is not str or not item["file_name"]:
            why = f"file_name {_show(item.get('file_name'))} is not a file name"
        else:
            ids.append(item["id"])
            names.append(item["file_name"])
            continue
        skips.add(batch.path, batch.key, position + k, item, why)
    return ids, names, len(items)


def lookup(sorted_ids: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[k] where sorted_ids[k] == query, else -1 (vectorised dict lookup)."""
    if not sorted_ids.size:
        return np.full(query.shape, -1, np.int64)
    pos = np.searchsorted(sorted_ids, query).clip(0, sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == query, values[pos], -1)


def _copy_segments(src: np.ndarray, starts, lens, dst: np.ndarray, dst_starts) -> None:
    """dst[dst_starts[i] : +lens[i]] = src[starts[i] : +lens[i]] for every i, vectorised."""
    total = int(lens.sum())
    if not total:
        return
    dt = np.int32 if max(src.size, dst.size) < 2**31 else np.int64  # halves the index memory
    lens = lens.astype(dt)
    within = np.arange(total, dtype=dt) - np.repeat(np.cumsum(lens, dtype=dt) - lens, lens)
    dst[np.repeat(dst_starts.astype(dt), lens) + within] = src[
        np.repeat(starts.astype(dt), lens) + within
    ]


_TAILS = b"]},]}],]}]"  # after a box: another follows / its image's list ends / the chunk ends
_TAIL_OFF, _TAIL_LEN = np.array([0, 3, 7]), np.array([3, 4, 3])
WINDOW = 20_000  # images whose annotations are selected per pass over the columns


def write_box_index(
    path: Path, names: list[str], group: np.ndarray, cols: AnnotationColumns
) -> int:
    """Write `{name: [{"category_id", "bbox"}, ...]}` atomically; keys in order of their first
    annotation, boxes in annotation order (as the original tool's dict-append produces), bbox
    numbers exactly as written in the input. `group[k]` (int32) is the name index of annotation
    k, -1 to drop it; it is overwritten (its memory is reused). Bytes are assembled with
    vectorised copies, a few thousand images at a time, with no per-box Python objects and no
    full-size sort. Returns the number of keys written."""
    cats, bbox_offsets = cols.cats_and_offsets()
    # rank names by their first annotation (reversed assignment: the earliest write wins);
    # names without annotations and the drop slot (-1) rank after every used name
    n = group.size
    first = np.full(len(names) + 1, n, np.int64)
    first[group[::-1]] = np.arange(n - 1, -1, -1)
    first[-1] = n + 1
    by_rank = np.argsort(first, kind="stable")
    n_keys = int((first[:-1] < n).sum())
    rank = np.empty(len(names) + 1, np.int32)
    rank[by_rank] = np.arange(len(names) + 1, dtype=np.int32)
    key = np.take(rank, group, out=group)  # rank of each annotation's name, in place
    del first, rank, group
    if cats.size and 0 <= cats.min() and cats.max() < 1 << 20:
        cat_values = np.flatnonzero(np.bincount(cats)).astype(cats.dtype)
    else:
        cat_values = np.unique(cats)
    heads = [b'{"category_id":%d,"bbox":[' % c for c in cat_values.tolist()]
    head_len = np.array([len(h) for h in heads], np.int64)
    head_off = np.cumsum(head_len) - head_len
    heads_blob = b"".join(heads)
    text = np.frombuffer(cols.bbox_text, np.uint8)
    assemble = partial(
        _assemble,
        cats=cats,
        bbox_offsets=bbox_offsets,
        text=text,
        heads_blob=heads_blob,
        head_len=head_len,
        head_off=head_off,
        cat_values=cat_values,
    )

    def chunks():
        """(rows, local group starts, keys) of consecutive images, in output order."""
        for w0 in range(0, n_keys, WINDOW):
            w1 = min(w0 + WINDOW, n_keys)
            trim_heap()
            rows = np.flatnonzero((key >= w0) & (key < w1))
            rows = rows[np.argsort(key[rows], kind="stable")]
            bounds = np.searchsorted(key[rows], np.arange(w0, w1 + 1))
            for g0 in range(w0, w1, GROUPS_PER_WRITE):
                g1 = min(g0 + GROUPS_PER_WRITE, w1)
                keys = [orjson.dumps(names[by_rank[r]]) + b":[" for r in range(g0, g1)]
                lo = bounds[g0 - w0]
                yield rows[lo : bounds[g1 - w0]], bounds[g0 - w0 : g1 - w0] - lo, keys

    # two threads assemble consecutive chunks (numpy releases the GIL); written in order
    with atomic_write(path) as f, ThreadPoolExecutor(max_workers=2) as pool:
        f.write(b"{")
        pending: collections.deque = collections.deque()
        first = True
        for spec in chunks():
            if len(pending) >= 2:
                _write_chunk(f, pending.popleft().result(), first)
                first = False
            pending.append(pool.submit(assemble, *spec))
        while pending:
            _write_chunk(f, pending.popleft().result(), first)
            first = False
        f.write(b"}")
    del text, assemble
    return n_keys


def _assemble(
    rows, local_starts, keys, cats, bbox_offsets, text, heads_blob, head_len, head_off, cat_values
) -> bytes:
    """The JSON of consecutive images: for each box `[key] head bbox tail`, where the key
    (`"name":[`) opens each image's list and the tail closes the box, the list or the chunk."""
    key_len = np.array([len(k) for k in keys], np.int64)
    extra = np.frombuffer(heads_blob + b"".join(keys) + _TAILS, np.uint8)
    n = rows.size
    kl, ko = np.zeros(n, np.int64), np.zeros(n, np.int64)
    kl[local_starts] = key_len
    ko[local_starts] = len(heads_blob) + np.cumsum(key_len) - key_len
    code = np.searchsorted(cat_values, cats[rows])
    hl, ho = head_len[code], head_off[code]
    bo = bbox_offsets[rows].astype(np.int64)
    bl = bbox_offsets[rows + 1] - 1 - bo
    kind = np.zeros(n, np.int64)
    kind[local_starts[1:] - 1] = 1
    kind[-1] = 2
    tl, to = _TAIL_LEN[kind], len(extra) - len(_TAILS) + _TAIL_OFF[kind]
    size = kl + hl + bl + tl
    at = np.cumsum(size) - size
    out = np.empty(int(size.sum()), np.uint8)
    _copy_segments(extra, ko, kl, out, at)
    _copy_segments(extra, ho, hl, out, at + kl)
    _copy_segments(text, bo, bl, out, at + kl + hl)
    _copy_segments(extra, to, tl, out, at + kl + hl + bl)
    return out.tobytes()


def _write_chunk(f, body: bytes, first: bool) -> None:
    if body:
        f.write(body if first else b"," + body)


def require_usable(path: Path, read: int, skips: Skips) -> None:
    """Refuse a file without a usable annotation (none at all, or all malformed): the output
    would lose every box it contributes, a much worse file than the one it replaces."""
    if read == skips.counts.get(path, 0):
        why = f"all {read} are malformed ({skips.examples[path][0]}; …)" if read else "none"
        raise BadInputError(
            f"{path}: no usable annotation ({why}); the existing output is left as it was. "
            "Fix: download or extract the file again"
        )


def require_boxes(inputs: list[Path], boxes: int, cols: AnnotationColumns, unknown: int):
    """Refuse to write an index without the boxes of one of its files, or without any box."""
    for path in inputs:
        require_usable(path, cols.read_from.get(path, 0), cols.skips)
    if not boxes:
        raise BadInputError(
            f"{', '.join(map(str, inputs))}: none of the {cols.read} annotations read can be "
            f"indexed ({unknown} name image ids the files do not list); the existing output is "
            "left as it was. Fix: download or extract the annotation files again"
        )


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
