"""Weights on disk gone wrong: a shard cut short or missing, a full disk, an interrupted swap."""

import errno
import importlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
import torch

from vsm_kit.cli import main
from vsm_kit.convert import MergeError, merge
from vsm_kit.fsutil import OutputError, StaleTemporaryWarning
from vsm_kit.model import weights as weights_module
from vsm_kit.model.architecture import vsm_tiny
from vsm_kit.model.weights import WeightsError, load_vsm, read_state_dict, save_vsm

merge_module = importlib.import_module("vsm_kit.convert.merge")  # `merge` is the function
SHARDS = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")


@pytest.fixture
def model_copy(demo_world, tmp_path):
    """A private copy of the demo world's sharded tiny VSM."""
    folder = tmp_path / "vsm-tiny"
    shutil.copytree(demo_world.weights / "vsm-tiny", folder)
    assert sorted(p.name for p in folder.glob("*.safetensors")) == list(SHARDS)
    return folder


def _damage(folder, how: str):
    """Damage the folder as `how` says; returns the file the error must name."""
    shard = folder / SHARDS[1]
    if how == "cut short":
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    elif how == "deleted":
        shard.unlink()
    elif how == "header cut":
        shard.write_bytes(shard.read_bytes()[:5])
    elif how == "index names the wrong shard":
        index = folder / "model.safetensors.index.json"
        table = json.loads(index.read_text())
        key = next(k for k, v in table["weight_map"].items() if v == SHARDS[0])
        table["weight_map"][key] = SHARDS[1]
        index.write_text(json.dumps(table))
    return shard


DAMAGE = ["cut short", "deleted", "header cut", "index names the wrong shard"]
WHY = {
    "cut short": "is truncated or damaged",
    "deleted": "is missing, though model.safetensors.index.json names it",
    "header cut": "is truncated or damaged",
    "index names the wrong shard": "has no tensor",
}


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_shard_is_one_line_naming_it_and_the_fix(demo_world, model_copy, how):
    shard = _damage(model_copy, how)
    with pytest.raises(WeightsError) as err:
        load_vsm(model_copy, clip=demo_world.weights / "clip-tiny", arch=vsm_tiny())
    message = str(err.value)
    assert f"weights {'shard' if how == 'deleted' else 'file'} {shard} " in message
    assert WHY[how] in message and "re-run the merge" in message and "download" in message
    assert "\n" not in message


@pytest.mark.parametrize("how", ["cut short", "deleted"])
def test_the_cli_says_which_shard_is_damaged_in_one_line(demo_world, model_copy, how, capsys):
    shard = _damage(model_copy, how)
    image = sorted((demo_world.dataset / "vstar_bench" / "direct_attributes").glob("*.jpg"))[0]
    argv = ["detect", "--model", str(model_copy), "--image", str(image), "--target", "cup"]
    argv += ["--clip", str(demo_world.weights / "clip-tiny"), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: weights ") and str(shard) in err and WHY[how] in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_a_pickle_checkpoint_cut_short_is_one_line_naming_it(demo_world, model_copy):
    state = read_state_dict(model_copy)
    for p in model_copy.glob("model*.safetensors*"):
        p.unlink()
    weights = model_copy / "pytorch_model.bin"
    torch.save(state, weights)
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=rf"^weights file {weights} is truncated or damaged \("):
        load_vsm(model_copy, clip=demo_world.weights / "clip-tiny", arch=vsm_tiny())


def test_a_malformed_index_names_its_byte_offset(demo_world, model_copy):
    index = model_copy / "model.safetensors.index.json"
    index.write_text(index.read_text()[:100])
    with pytest.raises(weights_module.MalformedJsonError, match=str(index)):
        load_vsm(model_copy, clip=demo_world.weights / "clip-tiny", arch=vsm_tiny())


def test_saved_folders_get_the_umasks_permissions(demo_world, tiny_vsm, tmp_path):
    model, tokenizer, _ = tiny_vsm
    old = os.umask(0o027)
    try:
        out = save_vsm(model, tokenizer, tmp_path / "saved", demo_world.weights / "clip-tiny")
    finally:
        os.umask(old)
    modes = {p.name: (p.is_dir(), stat.S_IMODE(p.stat().st_mode)) for p in [out, *out.rglob("*")]}
    assert modes["saved"] == (True, 0o750) and modes["model.safetensors"] == (False, 0o640)
    assert set(modes.values()) == {(True, 0o750), (False, 0o640)}, modes


def test_a_full_disk_while_saving_names_the_folder_and_the_space(
    demo_world, tiny_vsm, tmp_path, monkeypatch
):
    model, tokenizer, _ = tiny_vsm
    clip = demo_world.weights / "clip-tiny"
    out = save_vsm(model, tokenizer, tmp_path / "merged", clip)
    before = sorted(p.name for p in out.iterdir())

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(weights_module, "save_safetensors", no_space)
    with pytest.raises(OutputError) as err:
        save_vsm(model, tokenizer, out, clip)
    saved = [v for k, v in model.state_dict().items() if not k.startswith("model.vision_tower.")]
    need = sum(v.numel() * v.element_size() for v in saved)  # what the folder's shards hold
    assert need >= 2**20
    message = str(err.value)
    assert message.startswith(f"no space left to write {out} (") and " free, " in message
    assert message.count(f"{need / 2**20:.1f} MiB needed") == 1 and "\n" not in message
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_the_merge_first_puts_back_a_folder_a_killed_swap_moved_aside(tmp_path, monkeypatch):
    monkeypatch.setattr(merge_module, "check_ram", lambda weights, dtype: None)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "merged"
    old = tmp_path / f".merged.{dead.pid}.0123abcd.old"  # what a kill between the renames leaves
    old.mkdir()
    (old / "config.json").write_text("{}")
    weights = tmp_path / "weights_fp32.safetensors"
    weights.write_bytes(b"not safetensors")
    with pytest.warns(StaleTemporaryWarning, match=f"restored {out}"):
        with pytest.raises(MergeError, match="not a readable safetensors file"):
            merge(None, weights, out)
    assert (out / "config.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", weights.name]
