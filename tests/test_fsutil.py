"""Atomic outputs: permissions, a folder swap no kill can lose, stale temporaries, full disks."""

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vsm_kit
from vsm_kit import fsutil
from vsm_kit.errors import VsmKitError
from vsm_kit.fsutil import (
    OutputError,
    StaleTemporaryWarning,
    atomic_dir,
    atomic_path,
    atomic_write,
    recover_dir,
)

REPO = Path(vsm_kit.__file__).parents[1]


class Killed(BaseException):
    """Stands for a kill: nothing catches it."""


@pytest.fixture(params=[0o022, 0o027])
def mask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _folder(path: Path, tag: str) -> None:
    path.mkdir()
    (path / "tag").write_text(tag)
    (path / "sub").mkdir()
    (path / "sub" / "x").write_text(tag)


def _tag(path: Path) -> str:
    return (path / "tag").read_text()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_outputs_get_the_umasks_permissions(tmp_path, mask):
    assert fsutil.umask() == mask
    with atomic_write(tmp_path / "w.txt", "w") as f:
        f.write("hi")
    with atomic_path(tmp_path / "p.safetensors") as tmp:  # safetensors writes its files 0600
        save_file({"a": torch.zeros(2)}, str(tmp))
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("x")
    for name in ("w.txt", "p.safetensors"):
        assert _mode(tmp_path / name) == 0o666 & ~mask, name
    assert _mode(tmp_path / "d") == 0o777 & ~mask
    assert _leftovers(tmp_path) == []


def _ops(monkeypatch, fail_at: int | None) -> list[str]:
    """Count (and fail the `fail_at`-th of) the file-system steps an atomic_dir takes."""
    done: list[str] = []
    for owner, name in ((os, "mkdir"), (os, "rename"), (shutil, "rmtree"), (fsutil, "_exchange")):
        real = getattr(owner, name)

        def step(*args, _real=real, _name=name, **kwargs):
            done.append(_name)
            if len(done) == fail_at:
                raise Killed(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, name, step)
    return done


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_a_failure_at_any_step_of_the_swap_leaves_the_old_folder_or_the_new(
    tmp_path, monkeypatch, exchange
):
    if not exchange:
        monkeypatch.setattr(fsutil, "_exchange", lambda a, b: False)
    out = tmp_path / "merged"

    def replace(fail_at):
        with monkeypatch.context() as m:
            steps = _ops(m, fail_at)
            try:
                with atomic_dir(out) as tmp:
                    (tmp / "tag").write_text("new")
            except Killed:
                pass
        return steps

    _folder(out, "old")
    steps = replace(None)
    assert _tag(out) == "new" and _leftovers(tmp_path) == []
    assert steps.count("rename") == (0 if exchange else 2)
    for k in range(1, len(steps) + 1):
        shutil.rmtree(out)
        _folder(out, "old")
        replace(k)
        assert _tag(out) in ("old", "new"), (k, steps[k - 1])
        assert _tag(out) == ("new" if steps[k - 1] == "rmtree" else "old"), (k, steps[k - 1])
        assert not recover_dir(out)  # nothing to repair: the handlers put it back
    assert len(steps) >= (3 if exchange else 4)  # mkdir(s), the swap's renames, the old's removal


KILLED_WRITER = """
import os, shutil, signal, sys
from pathlib import Path
from vsm_kit import fsutil

out, point, exchange = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
if not exchange:
    fsutil._exchange = lambda a, b: False
def die():
    os.kill(os.getpid(), signal.SIGKILL)
real_rename, real_rmtree = os.rename, shutil.rmtree
def rename(a, b):
    real_rename(a, b)
    if point == "after-first-rename":
        die()
os.rename = rename
def rmtree(p, *args, **kwargs):
    if point == "before-removing-old":
        die()
    real_rmtree(p, *args, **kwargs)
shutil.rmtree = rmtree
if point == "mid-file":
    with fsutil.atomic_write(out) as f:
        f.write(b"half")
        f.flush()
        die()
with fsutil.atomic_dir(out) as tmp:
    (tmp / "tag").write_text("new")
    if point == "mid-folder":
        die()
"""


def _killed(out: Path, point: str, exchange: bool = True) -> None:
    code = textwrap.dedent(KILLED_WRITER)
    args = [sys.executable, "-c", code, str(out), point, str(int(exchange))]
    run = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == -signal.SIGKILL, run.stderr


def test_a_sigkill_between_the_two_renames_is_repaired_by_the_next_write(tmp_path):
    out = tmp_path / "merged"
    _folder(out, "old")
    _killed(out, "after-first-rename", exchange=False)
    assert not out.exists()  # the fallback's one unsafe moment: the old folder lies aside
    new, old = sorted(_leftovers(tmp_path), key=lambda n: n.endswith(".old"))
    assert new.startswith(".merged.") and new.endswith(".new")  # the new folder, and the old
    assert old.startswith(".merged.") and old.endswith(".old")  # one, moved aside
    with pytest.warns(StaleTemporaryWarning) as said:
        with atomic_dir(out) as tmp:  # the next write on the same path repairs it first
            assert _tag(out) == "old"
            (tmp / "tag").write_text("newer")
    assert [str(w.message) for w in said] == [
        f"restored {out} from {old}, which an interrupted replace left",
        f"removed 1 stale temporary of {out} left by an interrupted write: {new}",
    ]
    assert _tag(out) == "newer"
    assert _leftovers(tmp_path) == []  # the dead writer's `.new` folder went too


def test_recover_dir_puts_back_a_folder_a_killed_swap_moved_aside(tmp_path):
    out = tmp_path / "merged"
    _folder(out, "old")
    _killed(out, "after-first-rename", exchange=False)
    with pytest.warns(StaleTemporaryWarning, match="restored"):
        assert recover_dir(out)
    assert _tag(out) == "old" and (out / "sub" / "x").read_text() == "old"
    assert not recover_dir(out)


def test_a_sigkill_after_the_exchange_leaves_the_new_folder_and_the_next_write_cleans(tmp_path):
    out = tmp_path / "merged"
    _folder(out, "old")
    _killed(out, "before-removing-old", exchange=True)
    assert _tag(out) == "new"
    [stale] = _leftovers(tmp_path)
    with pytest.warns(StaleTemporaryWarning, match=rf"removed 1 stale temporary .*{stale}"):
        with atomic_dir(out) as tmp:
            (tmp / "tag").write_text("newer")
    assert _tag(out) == "newer" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("point", ["mid-file", "mid-folder"])
def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(tmp_path, point):
    out = tmp_path / ("status.json" if point == "mid-file" else "merged")
    _killed(out, point)
    [stale] = _leftovers(tmp_path)
    assert not out.exists()
    # another output's temporary, and one of a live writer (this process), are left alone
    other = tmp_path / f".other.{os.getpid()}.0123abcd.tmp"
    live = tmp_path / f".{out.name}.{os.getpid()}.0123abcd.tmp"
    other.touch()
    live.touch()
    with pytest.warns(StaleTemporaryWarning, match=rf"removed 1 stale temporary of .*: {stale}"):
        if point == "mid-file":
            with atomic_write(out) as f:
                f.write(b"{}")
        else:
            with atomic_dir(out) as tmp:
                (tmp / "tag").write_text("new")
    assert _leftovers(tmp_path) == sorted([other.name, live.name])


def _creating(code: int, real):
    """`os.open` / `os.mkdir` failing with `code` when they create (as a full or read-only disk
    does), reading as usual (so rmtree still works)."""

    def fail(target, flags=os.O_CREAT, *args, **kwargs):
        if real is os.mkdir or flags & os.O_CREAT:
            raise OSError(code, os.strerror(code), str(target))
        return real(target, flags, *args, **kwargs)

    return fail


@pytest.mark.parametrize("writer", ["atomic_path", "atomic_dir"])
def test_a_full_disk_when_creating_the_temporary_names_the_path_and_the_space(
    tmp_path, monkeypatch, writer
):
    out = tmp_path / "out"
    name = "open" if writer == "atomic_path" else "mkdir"
    monkeypatch.setattr(os, name, _creating(errno.ENOSPC, getattr(os, name)))
    with pytest.raises(OutputError) as err:
        with getattr(fsutil, writer)(out, size=3 << 30):
            pytest.fail("the block must not run")
    message = str(err.value)
    assert "\n" not in message and str(out) in message
    assert "free" in message and "3.0 GiB needed" in message
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").is_char_device(), reason="no /dev/full")
def test_a_full_disk_while_writing_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "annotations.json"
    out.write_text("previous")
    real_open = open

    def to_dev_full(file, mode="r", *args, **kwargs):  # created as usual, written to /dev/full
        real_open(file, mode, *args, **kwargs).close()
        return real_open("/dev/full", mode.replace("x", "w"), *args, **kwargs)

    monkeypatch.setattr(fsutil, "open", to_dev_full, raising=False)
    with pytest.raises(OutputError, match=rf"no space left to write {out} \(.* free\)"):
        with atomic_write(out) as f:
            f.write(b"x" * 10_000)
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations.json"]


def test_a_rust_writers_full_disk_is_recognised(tmp_path):
    out = tmp_path / "weights.safetensors"
    with pytest.raises(OutputError, match="no space left to write"):
        with atomic_path(out):
            raise RuntimeError("I/O error: No space left on device (os error 28) at path x")
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0555")
def test_a_read_only_output_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        for writer in (atomic_path, atomic_write, atomic_dir):
            with pytest.raises(OutputError, match=rf"cannot write {folder}/out: .* not writable"):
                with writer(folder / "out"):
                    pass
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize(
    ("code", "why"), [(errno.EACCES, "is not writable"), (errno.EROFS, "read-only file system")]
)
@pytest.mark.parametrize("writer", ["atomic_path", "atomic_write", "atomic_dir"])
def test_an_unwritable_output_folder_is_one_line(tmp_path, monkeypatch, writer, code, why):
    folder = tmp_path / "ro"
    folder.mkdir()

    name = "mkdir" if writer == "atomic_dir" else "open"  # what chmod 0555 or a ro mount gives
    monkeypatch.setattr(os, name, _creating(code, getattr(os, name)))
    if writer == "atomic_write":
        monkeypatch.setattr(fsutil, "open", _creating(code, os.mkdir), raising=False)
    with pytest.raises(OutputError) as err:
        with getattr(fsutil, writer)(folder / "out"):
            pass
    message = str(err.value)
    assert message.startswith(f"cannot write {folder / 'out'}: {folder} ") and why in message
    assert "\n" not in message and "chmod u+w" in message
    assert isinstance(err.value, VsmKitError)
    monkeypatch.undo()
    assert list(folder.iterdir()) == []


def test_a_refused_input_read_inside_the_block_is_not_blamed_on_the_output(tmp_path):
    with pytest.raises(PermissionError) as err:
        with atomic_write(tmp_path / "out" / "x.json"):
            raise PermissionError(errno.EACCES, "Permission denied", "/data/images/1.jpg")
    assert not isinstance(err.value, OutputError)


def test_atomic_path_takes_a_writers_own_temporaries_with_it(tmp_path):
    out = tmp_path / "w.safetensors"
    with pytest.raises(Killed):
        with atomic_path(out) as tmp:
            save_file({"a": torch.ones(3)}, str(tmp))
            (tmp.parent / ".tmpXYZ").write_text("a writer's own temporary")
            raise Killed
    assert sorted(tmp_path.iterdir()) == []
    with atomic_path(out) as tmp:
        save_file({"a": torch.ones(3)}, str(tmp))
    assert torch.equal(load_file(out)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]
