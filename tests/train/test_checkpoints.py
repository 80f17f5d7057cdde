"""Checkpoints without DeepSpeed: a kill at any point of a save or a commit leaves `last` and
`best` naming complete folders, loses at most the work since the last complete checkpoint, and
the next relaunch deletes exactly the leftovers."""

import contextlib

import pytest
import torch

from vsm_kit.fsutil import atomic_write
from vsm_kit.train import checkpoints as ckpt_mod
from vsm_kit.train.checkpoints import CheckpointError, Checkpoints

SHARD = "mp_rank_00_model_states.pt"


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def _save(ck: Checkpoints, step: int) -> str:
    """What every rank writes for `global_step{step}` before the commit."""
    tag = f"global_step{step}"
    (ck.dir / tag).mkdir()
    torch.save({"step": step}, ck.dir / tag / SHARD)
    ck.save_rank_state(tag, {"step": step})
    return tag


def _folders(ck: Checkpoints) -> list[str]:
    return sorted(p.name for p in ck.dir.glob("global_step*"))


def _complete(ck: Checkpoints, tag: str) -> bool:
    return torch.load(ck.dir / tag / SHARD)["step"] == ck.rank_state(tag)["step"]


@pytest.fixture
def ck(tmp_path):
    """A run with best = step 5 and last = step 10."""
    ck = Checkpoints(tmp_path / "checkpoints")
    ck.commit(_save(ck, 5), best=True, metrics={"det_acc": 0.5})
    ck.commit(_save(ck, 10), best=False)
    return ck


def test_commit_keeps_last_and_best_only(ck):
    assert (ck.last, ck.best["tag"], ck.best["metrics"]) == (
        "global_step10",
        "global_step5",
        {"det_acc": 0.5},
    )
    assert _folders(ck) == ["global_step10", "global_step5"]
    ck.commit(_save(ck, 15), best=False)
    assert ck.last == "global_step15" and _folders(ck) == ["global_step15", "global_step5"]
    ck.commit(_save(ck, 20), best=True, metrics={"det_acc": 0.7})
    assert ck.last == ck.best["tag"] == "global_step20" and _folders(ck) == ["global_step20"]


def test_kill_during_a_save_keeps_the_previous_checkpoint(ck):
    # (a) the folder exists, a rank has not finished; (b) a shard is half written
    (ck.dir / "global_step15").mkdir()
    (ck.dir / "global_step15" / SHARD).write_bytes(torch.zeros(3).numpy().tobytes()[:5])
    assert ck.last == "global_step10" and ck.best["tag"] == "global_step5"
    assert ck.prune() == ["global_step15"]
    assert _folders(ck) == ["global_step10", "global_step5"]


def test_kill_while_writing_the_rank_state_leaves_no_file(ck, monkeypatch):
    (ck.dir / "global_step15").mkdir()

    def half_save(obj, f):
        f.write(b"PK\x03")
        raise Killed

    monkeypatch.setattr(ckpt_mod.torch, "save", half_save)
    with pytest.raises(Killed):
        ck.save_rank_state("global_step15", {"step": 15})
    assert not [p for p in (ck.dir / "global_step15").iterdir() if p.suffix == ".pt"]
    assert ck.last == "global_step10"


# a commit of global_step15 does, in order: [best.json,] latest, delete step 10 [, step 5]
@pytest.mark.parametrize(
    ("best", "kill_at", "last", "best_tag"),
    [
        (True, 0, "global_step10", "global_step5"),  # writing best.json
        (True, 1, "global_step10", "global_step15"),  # best recorded, writing latest
        (True, 2, "global_step15", "global_step15"),  # deleting the old last
        (True, 3, "global_step15", "global_step15"),  # deleting the old best
        (False, 0, "global_step10", "global_step5"),  # writing latest
        (False, 1, "global_step15", "global_step5"),  # deleting the old last
    ],
)
def test_kill_at_every_step_of_a_commit(ck, monkeypatch, best, kill_at, last, best_tag):
    tag = _save(ck, 15)
    ops = iter(range(10))
    real_rmtree = ckpt_mod.shutil.rmtree

    @contextlib.contextmanager
    def killable_write(path):
        with atomic_write(path) as f:
            if next(ops) == kill_at:
                f.write(b'{"ta')  # half a file, then the kill
                raise Killed
            yield f

    def killable_rmtree(path):
        if next(ops) == kill_at:
            next(iter(path.iterdir())).unlink()  # half deleted
            raise Killed
        real_rmtree(path)

    monkeypatch.setattr(ckpt_mod, "atomic_write", killable_write)
    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", killable_rmtree)
    with pytest.raises(Killed):
        ck.commit(tag, best=best, metrics={"det_acc": 0.6} if best else None)
    monkeypatch.undo()

    relaunch = Checkpoints(ck.dir)
    assert relaunch.last == last and relaunch.best["tag"] == best_tag
    assert _complete(relaunch, relaunch.last) and _complete(relaunch, best_tag)
    left = _folders(relaunch)
    assert relaunch.prune() == sorted(set(left) - {last, best_tag})
    assert _folders(relaunch) == sorted({last, best_tag})
    assert not (relaunch.dir / "latest").read_text().startswith("{")


def test_a_lost_latest_pointer_falls_back_to_the_best(ck):
    (ck.dir / "latest").unlink()
    assert ck.last == "global_step5"
    (ck.dir / "latest").write_text("global_step99")  # names a folder that is gone
    assert ck.last == "global_step5"


def test_no_checkpoint(tmp_path):
    ck = Checkpoints(tmp_path / "checkpoints")
    assert ck.last is None and ck.best is None and ck.prune() == []


def test_missing_rank_state_is_refused_clearly(ck):
    with pytest.raises(CheckpointError, match="rank 1.*fresh run"):
        ck.rank_state("global_step10", rank=1)
