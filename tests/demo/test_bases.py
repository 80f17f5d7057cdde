"""Pretrained tiny bases: a deterministic fit, cached by its content key, saved in the real
formats (a few optimizer steps here; the default step counts are the demo's)."""

import json

import numpy as np
import pytest

from vsm_kit.demo import _bases, make_demo_world
from vsm_kit.demo._bases import FitSteps, bases_key, draw_scene, pretrained_bases
from vsm_kit.fsutil import file_mode
from vsm_kit.model.architecture import vsm_tiny

FEW = FitSteps(owlvit=3, clip=2, llava=2, scenes=6)
WEIGHTS = (
    "clip-tiny/model.safetensors",
    "owlvit-tiny/model.safetensors",
    "llava-tiny/model.safetensors",
)


def _weights(folder):
    return {rel: (folder / rel).read_bytes() for rel in WEIGHTS}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VSM_KIT_CACHE", str(root))
        return pretrained_bases(vsm_tiny(), 0, FEW, progress=False)


def test_same_seed_gives_the_same_weights_and_a_report(fitted, tmp_path, monkeypatch):
    monkeypatch.setenv("VSM_KIT_CACHE", str(tmp_path))
    again = pretrained_bases(vsm_tiny(), 0, FEW, progress=False)
    assert again != fitted and _weights(again) == _weights(fitted)
    # saved with the usual permissions, as the random bases are (safetensors writes 0600)
    assert {(fitted / rel).stat().st_mode & 0o777 for rel in WEIGHTS} == {file_mode()}
    report = json.loads((fitted / _bases.REPORT).read_text())
    assert report["steps"] == FEW.__dict__
    assert 0 <= report["owlvit_held_out"]["box_hit"] <= report["owlvit_held_out"]["name_hit"] <= 1
    assert np.isfinite([report["clip_last_loss"], report["llava_last_loss"]]).all()


def test_a_cached_fit_is_reused_and_other_settings_refit(fitted, monkeypatch):
    monkeypatch.setenv("VSM_KIT_CACHE", str(fitted.parent))

    def no_fit(*args, **kwargs):
        raise AssertionError("the cached fit was not reused")

    monkeypatch.setattr(_bases, "fit_owlvit", no_fit)
    assert pretrained_bases(vsm_tiny(), 0, FEW, progress=False) == fitted
    assert bases_key(vsm_tiny(), 1, FEW) != bases_key(vsm_tiny(), 0, FEW)
    assert bases_key(vsm_tiny(), 0, FitSteps(owlvit=4, clip=2, llava=2, scenes=6)) != (
        bases_key(vsm_tiny(), 0, FEW)
    )
    with pytest.raises(AssertionError, match="not reused"):
        pretrained_bases(vsm_tiny(), 1, FEW, progress=False)
    assert not any(p.name.startswith(".") for p in fitted.parent.iterdir()), "a half-written fit"


def test_a_pretrained_world_loads_through_the_real_loaders(fitted, tmp_path, monkeypatch):
    from vsm_kit.model.weights import init_vsm_from_base, load_vsm

    monkeypatch.setenv("VSM_KIT_CACHE", str(fitted.parent))
    monkeypatch.setattr(_bases, "FitSteps", lambda: FEW)
    world = make_demo_world(tmp_path / "w", progress=False, bases="pretrained")
    assert world.bases == "pretrained"
    assert _weights(world.weights) == _weights(fitted)
    w = world.weights
    model, _, _ = init_vsm_from_base(w / "llava-tiny", w / "clip-tiny", w / "owlvit-tiny")
    assert model.arch.owlvit.image_size == vsm_tiny().owlvit.image_size
    load_vsm(w / "vsm-tiny", arch=vsm_tiny())


def test_scene_labels_mark_each_object_and_its_box():
    g = vsm_tiny().owlvit.image_size // vsm_tiny().owlvit.patch_size
    scene = draw_scene(np.random.default_rng(5), g)
    assert scene.things and scene.has_box.any()
    h, w = scene.image.shape[:2]
    for t in scene.things:
        x, y, bw, bh = t.bbox
        r = min(int((y + bh / 2) / h * g), g - 1)
        c = min(int((x + bw / 2) / w * g), g - 1)
        assert scene.has_box[r, c]
        assert np.allclose(scene.boxes[r, c], [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h])
        assert scene.names[r, c] == _bases.NAMES.index(t.name)
    assert (scene.names[~scene.has_box] >= -1).all() and (scene.names[scene.has_box] >= 0).all()
