"""What every preprocessing step shares: inputs checks, progress, the box index writer, results."""

from __future__ import annotations

import collections
import contextlib
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

from ..data.layout import EXPECTED
from ..errors import MissingDataError, VsmKitError
from ..fsutil import atomic_write
from ._stream import Batch, trim_heap

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
    missing_images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def require_inputs(data_dir: Path, rels: list[str], step: str) -> list[Path]:
    """The step's input paths; a missing one raises with where it comes from."""
    paths = []
    for rel in rels:
        path = data_dir / rel
        if not path.is_file():
            origin = next((e.origin for e in EXPECTED if e.path == rel), "the dataset release")
            raise MissingDataError(
                path, f"input of the {step} preprocessing step", f"get it from {origin}"
            )
        paths.append(path)
    return paths


def byte_bar(paths: list[Path], step: str, progress: bool):
    total = sum(p.stat().st_size for p in paths)
    return tqdm(total=total, unit="B", unit_scale=True, desc=step, disable=not progress)


_IMAGE_ID = re.compile(rb'"image_id"\s*:\s*(-?\d+)')
_CATEGORY_ID = re.compile(rb'"category_id"\s*:\s*(-?\d+)')
_BBOX = re.compile(rb'"bbox"\s*:\s*\[([^\]]*)\]')
_ID = re.compile(rb'"id"\s*:\s*(-?\d+)')
_FILE_NAME = re.compile(rb'"file_name"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _field(items: list[dict], key: str, batch: Batch) -> list:
    try:
        return [item[key] for item in items]
    except (KeyError, TypeError):
        raise VsmKitError(
            f"{batch.path}: an element of {batch.key!r} after byte {batch.offset} has no {key!r}"
        ) from None


def _ints(values: list) -> np.ndarray:
    """int64 array of ints, or of the digit strings the patterns capture."""
    if values and isinstance(values[0], bytes):
        return np.fromstring(b" ".join(values), dtype=np.int64, sep=" ")
    return np.array(values, dtype=np.int64)


class AnnotationColumns:
    """Per annotation: image id, category id and the bbox's JSON text, kept verbatim.

    Fields are pulled from each batch's text by pattern, with no Python object per annotation;
    a batch whose layout does not give exactly one match per element is parsed instead.
    About 50 bytes per box are kept (ids, text end and the bbox text)."""

    def __init__(self):
        self._ids: list[np.ndarray] = []  # image ids, or their groups once `resolve` is set
        self._resolved: list[bool] = []
        self._cats: list[np.ndarray] = []
        self._ends: list[np.ndarray] = []
        self.bbox_text = bytearray()
        # ids → int32 groups, when the images are known before their annotations (saves memory)
        self.resolve = None

    def add(self, batch: Batch) -> None:
        d = batch.data
        ids, cats, boxes = _IMAGE_ID.findall(d), _CATEGORY_ID.findall(d), _BBOX.findall(d)
        if not len(ids) == len(cats) == len(boxes) == batch.count:
            items = batch.parse()
            ids, cats = _field(items, "image_id", batch), _field(items, "category_id", batch)
            boxes = [orjson.dumps(b)[1:-1] for b in _field(items, "bbox", batch)]
        ids = _ints(ids)
        self._resolved.append(self.resolve is not None)
        self._ids.append(self.resolve(ids) if self.resolve else ids)
        self._cats.append(_ints(cats).astype(np.int32))
        if boxes:  # bbox texts never contain "]": end each with one and find the ends at once
            start = len(self.bbox_text)
            self.bbox_text += b"]".join(boxes) + b"]"
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
            finally:
                while len(pending) >= 2:
                    pending.popleft().result()

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


def image_columns(batch: Batch) -> tuple[list[int], list[str]]:
    """(ids, file names) of a batch of COCO-style image entries."""
    d = batch.data
    ids, names = _ID.findall(d), _FILE_NAME.findall(d)
    if len(ids) == len(names) == batch.count:
        return [int(i) for i in ids], [
            orjson.loads(b'"' + n + b'"') if b"\\" in n else n.decode() for n in names
        ]
    items = batch.parse()
    return _field(items, "id", batch), _field(items, "file_name", batch)


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


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
