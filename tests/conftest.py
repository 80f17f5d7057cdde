"""Shared fixtures: one demo world per test run; nothing reaches the network; the run leaves
/dev/shm as it found it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
matplotlib.use("Agg")

SHM = Path("/dev/shm")


def _shm_files() -> set[str]:
    return {p.name for p in SHM.iterdir()} if SHM.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def shm_left_as_found():
    """Fails the run naming every file it left in /dev/shm (RAM that nothing frees); the
    DeepSpeed buffers among them are then removed, so that the machine does not fill up."""
    before = _shm_files()
    yield
    left = sorted(_shm_files() - before)
    if left:
        from vsm_kit.train import shm

        shm.sweep_stale([SHM / name for name in left if name.startswith(shm.PREFIX)])
        pytest.fail(f"the tests left {len(left)} file(s) in {SHM}: " + ", ".join(left))


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory):
    """The demo world with random bases (seconds), generated once, with the generator's truth
    in memory: for every test of plumbing. Read-only: tests that change files use `world_copy`."""
    from vsm_kit.demo import make_demo_world

    root = tmp_path_factory.mktemp("world")
    return make_demo_world(root, seed=0, progress=False, bases="random")


@pytest.fixture(scope="session")
def pretrained_world(tmp_path_factory):
    """The default demo world: bases fitted to its scenes (about 2 minutes on 2 cores once per
    machine, then read from the cache), for the tests of learning. Read-only."""
    from vsm_kit.demo import make_demo_world

    return make_demo_world(tmp_path_factory.mktemp("pretrained-world"), seed=0, progress=False)


@pytest.fixture
def world_copy(demo_world, tmp_path):
    """A private copy of the demo data tree that a test may damage."""
    dst = tmp_path / "dataset"
    shutil.copytree(demo_world.dataset, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_vsm(demo_world):
    """(model, tokenizer, special ids) loaded from the demo world's tiny VSM (original layout)."""
    from vsm_kit.model.architecture import vsm_tiny
    from vsm_kit.model.weights import load_vsm

    return load_vsm(demo_world.weights / "vsm-tiny", arch=vsm_tiny())
