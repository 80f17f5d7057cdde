"""Shared fixtures: one demo world per test run; nothing reaches the network."""

from __future__ import annotations

import os
import shutil

import matplotlib
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
matplotlib.use("Agg")


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory):
    """The default demo world, generated once, with the generator's truth in memory.

    Read-only: tests that change files use `world_copy`."""
    from vsm_kit.demo import make_demo_world

    return make_demo_world(tmp_path_factory.mktemp("world"), seed=0, progress=False)


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
