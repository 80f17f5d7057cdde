"""Writing outputs so that a crash never leaves a half-written one in place, nor stray temporaries.

Temporaries lie beside their output NAME as `.NAME.PID.RAND.tmp` (a file being written, inside
a folder of that name for `atomic_path`), `.NAME.PID.RAND.new` (a folder being written) and
`.NAME.PID.RAND.old` (a folder being replaced). The writer's pid lets the next write to NAME
remove the temporaries of writers that died (and say so). Outputs get the usual permissions,
0o666 / 0o777 less the umask. A folder replaces the old one in one rename (Linux renameat2
RENAME_EXCHANGE); where the file system cannot, in two, and a kill between them is repaired by
`recover_dir`, which the next `atomic_dir` on the path runs first. A full disk, a read-only or
an unwritable folder is an `OutputError` naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
import threading
import warnings
from pathlib import Path

import psutil

from .errors import VsmKitError

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}
_umask_lock = threading.Lock()


class OutputError(VsmKitError, OSError):
    """An output cannot be written: the disk is full, or its folder is read-only/unwritable."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code


class StaleTemporaryWarning(UserWarning):
    """Temporaries that a killed writer left beside an output were removed."""


def umask() -> int:
    """The process umask, read without changing it (from /proc where there is one)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The permissions a new file gets from `open`: 0o666 less the umask."""
    return 0o666 & ~umask()


def save_safetensors(state: dict, path: str | Path, metadata: dict | None = None) -> None:
    """safetensors' `save_file` with the usual permissions (it writes its files 0600);
    `metadata` defaults to the `{"format": "pt"}` transformers expects."""
    from safetensors.torch import save_file

    save_file(state, str(path), metadata=metadata or {"format": "pt"})
    os.chmod(path, file_mode())


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    exp = min(3, (n.bit_length() - 1) // 10)
    return f"{n / 1024**exp:.1f} {('KiB', 'MiB', 'GiB')[exp - 1]}"


def _errno_of(err: BaseException) -> int | None:
    """The OS error code behind `err`: an OSError's, or the "(os error N)" that Rust writers
    (safetensors, tokenizers) put in their messages."""
    if isinstance(err, OSError):
        return err.errno
    m = re.search(r"\(os error (\d+)\)", str(err))
    return int(m[1]) if m else None


def _free(path: Path) -> int | None:
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(folder).free
    return None


@contextlib.contextmanager
def _explained(path: Path, size: int | None):
    """Turn a full disk or an unwritable output folder into a one-line `OutputError`."""
    try:
        yield
    except OutputError:
        raise
    except Exception as err:
        code = _errno_of(err)
        where = Path(os.path.abspath(getattr(err, "filename", None) or path.parent))
        if code in _NO_SPACE:
            free, need = _free(path.parent), f", {_size(size)} needed" if size else ""
            left = f"{_size(free)} free" if free is not None else "free space unknown"
            raise OutputError(
                f"no space left to write {path} ({left}{need}): free up space on that disk or "
                "write the output to another one",
                code,
            ) from None
        parent = Path(os.path.abspath(path.parent))
        if code in _NOT_WRITABLE and (parent in (where, *where.parents) or where in parent.parents):
            folder = where if where in parent.parents else path.parent
            why = "is on a read-only file system" if code == errno.EROFS else "is not writable"
            raise OutputError(
                f"cannot write {path}: {folder} {why}: make the folder writable (chmod u+w) or "
                "choose an output folder you can write to",
                code,
            ) from None
        raise


def _temp(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{kind}"


def _temporaries(path: Path):
    """(entry, pid, kind, ctime) of every temporary of `path` in its folder."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[0-9a-f]{{8}}\.(tmp|new|old)")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if m := pattern.fullmatch(entry.name):
            with contextlib.suppress(OSError):
                yield Path(entry.path), int(m[1]), m[2], entry.stat(follow_symlinks=False).st_ctime


def _held(pid: int, ctime: float) -> bool:
    """Whether the writer `pid` may still be using a temporary last changed at `ctime`: it is
    alive and it is the same process (one started after the change got a reused pid)."""
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= ctime + 1
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _remove_stale(path: Path) -> None:
    """Remove the temporaries of `path` whose writers are dead, with a warning naming them."""
    removed = []
    for entry, pid, _, ctime in _temporaries(path):
        if _held(pid, ctime):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
    if removed:
        warnings.warn(
            f"removed {len(removed)} stale temporar{'y' if len(removed) == 1 else 'ies'} of "
            f"{path} left by an interrupted write: {', '.join(sorted(removed))}",
            StaleTemporaryWarning,
            stacklevel=2,
        )


def recover_dir(path: str | Path) -> bool:
    """Put back the folder `path` when an interrupted `atomic_dir` moved it away and died
    before renaming the new one in (two-rename fallback): `path` is missing and a dead writer's
    `.NAME.PID.RAND.old` holds it. Returns whether it did."""
    path = Path(path)
    if os.path.lexists(path):
        return False
    olds = [(c, e) for e, pid, kind, c in _temporaries(path) if kind == "old" and not _held(pid, c)]
    if not olds:
        return False
    old = max(olds)[1]
    with _explained(path, None):
        os.rename(old, path)
    warnings.warn(
        f"restored {path} from {old.name}, which an interrupted replace left",
        StaleTemporaryWarning,
        stacklevel=2,
    )
    return True


def _prepare(path: Path, size: int | None, recover: bool = False) -> None:
    """Make the output's folder and clear the temporaries dead writers left there."""
    with _explained(path, size):
        path.parent.mkdir(parents=True, exist_ok=True)
        if recover:
            recover_dir(path)
        _remove_stale(path)


@contextlib.contextmanager
def atomic_path(path: str | Path, size: int | None = None):
    """Yield a temporary file path beside `path`; it is renamed over `path` when the block
    finishes and removed on any exception, so `path` is never half-written (for writers that
    want a file name, such as safetensors). The file lies in a temporary folder of its own, so
    a writer's own temporaries go when it goes. `size`: the bytes to be written, if known (a
    full disk's error says it)."""
    path = Path(path)
    _prepare(path, size)
    folder = _temp(path, "tmp")
    tmp = folder / path.name
    try:
        with _explained(path, size):
            os.mkdir(folder, 0o700)
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            yield tmp
            os.chmod(tmp, file_mode())  # a writer may have replaced it by a 0600 file
            os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", size: int | None = None):
    """Yield a file object for a temporary file beside `path`; synced and renamed over `path`
    only when the block finishes. On any exception `path` is untouched."""
    path = Path(path)
    _prepare(path, size)
    tmp = _temp(path, "tmp")
    try:
        with _explained(path, size):
            with open(tmp, mode.replace("w", "x")) as f:  # x: a new file, 0o666 less the umask
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, size: int | None = None):
    """Yield an empty temporary folder beside `path`; when the block finishes it replaces `path`
    in one rename (the old folder is removed after). On any exception the temporary folder is
    removed and `path` is untouched. A folder that an interrupted replace moved away is put
    back first (`recover_dir`)."""
    path = Path(path)
    _prepare(path, size, recover=True)
    tmp = _temp(path, "new")
    try:
        with _explained(path, size):
            os.mkdir(tmp)  # 0o777 less the umask
            yield tmp
            _swap(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(new: Path, path: Path) -> None:
    """Rename the folder `new` to `path`, replacing what is there; never a moment without one."""
    if not os.path.lexists(path):
        os.rename(new, path)
    elif _exchange(new, path):  # `new` now holds the old folder
        shutil.rmtree(new, ignore_errors=True)
    else:
        old = _temp(path, "old")
        os.rename(path, old)
        try:
            os.rename(new, path)
        except BaseException:
            os.rename(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap `a` and `b` atomically (Linux renameat2 RENAME_EXCHANGE); False where the system or
    the file system cannot, so the caller falls back to two renames."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    src, dst = os.fsencode(a), os.fsencode(b)
    if renameat2(_AT_FDCWD, src, _AT_FDCWD, dst, _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _renameat2():
    """libc's renameat2 (glibc 2.28+), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def is_up_to_date(output: Path, inputs: list[Path]) -> bool:
    """True when `output` exists and is newer than every input."""
    if not output.exists():
        return False
    newest = max(p.stat().st_mtime_ns for p in inputs)
    return output.stat().st_mtime_ns > newest
