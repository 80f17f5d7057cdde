import json

import pytest
import torch
from safetensors.torch import save_file

from vsm_kit.cli import main
from vsm_kit.errors import VsmKitError
from vsm_kit.model import delta as delta_mod
from vsm_kit.model.weights import read_state_dict


def _dyadic(*shape, seed):
    """Values k/1024 with small k: sums and differences are exact in float16/32."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-512, 512, shape, generator=g).float() / 1024).half()


def _folder(path, state, extra_files=True):
    path.mkdir(parents=True)
    save_file(state, str(path / "model.safetensors"))
    if extra_files:
        (path / "config.json").write_text(json.dumps({"model_type": "llava"}))
        (path / "tokenizer.model").write_bytes(b"sp")


def test_delta_rebuilds_the_target_exactly(tmp_path):
    base = {
        "model.embed_tokens.weight": _dyadic(10, 4, seed=0),
        "lm_head.weight": _dyadic(10, 4, seed=1),
        "model.layers.0.mlp.up_proj.weight": _dyadic(8, 4, seed=2),
        "model.layers.0.self_attn.rotary_emb.inv_freq": _dyadic(2, seed=3),
    }
    target = {
        "model.embed_tokens.weight": _dyadic(13, 4, seed=4),
        "lm_head.weight": _dyadic(13, 4, seed=5),
        "model.layers.0.mlp.up_proj.weight": _dyadic(8, 4, seed=6),
        "model.mm_projector.weight": _dyadic(4, 3, seed=7),
        "model.mm_projector.bias": _dyadic(4, seed=8),
    }
    delta = {k: v.clone() for k, v in target.items()}
    for k in ("model.embed_tokens.weight", "lm_head.weight"):
        delta[k][:10] = target[k][:10] - base[k]
    delta["model.layers.0.mlp.up_proj.weight"] = (
        target["model.layers.0.mlp.up_proj.weight"] - base["model.layers.0.mlp.up_proj.weight"]
    )
    _folder(tmp_path / "base", base, extra_files=False)
    _folder(tmp_path / "delta", delta)
    report = delta_mod.apply_delta(  # small shards: several, with an index
        tmp_path / "base", tmp_path / "delta", tmp_path / "out", progress=False, shard_bytes=200
    )
    out = read_state_dict(tmp_path / "out")
    assert set(out) == set(target)
    for k, v in target.items():
        assert out[k].dtype == v.dtype and torch.equal(out[k], v), k
    assert sorted(report.grown) == ["lm_head.weight", "model.embed_tokens.weight"]
    assert sorted(report.kept_whole) == ["model.mm_projector.bias", "model.mm_projector.weight"]
    assert report.base_only == ["model.layers.0.self_attn.rotary_emb.inv_freq"]
    assert (tmp_path / "out/model.safetensors.index.json").exists()
    assert (tmp_path / "out/tokenizer.model").read_bytes() == b"sp"


def test_unknown_delta_key_is_refused_and_nothing_is_left(tmp_path):
    _folder(tmp_path / "base", {"a.weight": torch.zeros(2)}, extra_files=False)
    _folder(tmp_path / "delta", {"b.weight": torch.zeros(2)})
    with pytest.raises(VsmKitError, match="b.weight is in the delta but not in the base"):
        delta_mod.apply_delta(
            tmp_path / "base", tmp_path / "delta", tmp_path / "out", progress=False
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "delta"]


def test_cli_apply_delta(tmp_path):
    _folder(tmp_path / "base", {"w": torch.ones(2)}, extra_files=False)
    _folder(tmp_path / "delta", {"w": torch.ones(2)})
    assert (
        main(
            [
                "apply-delta",
                "--base",
                str(tmp_path / "base"),
                "--delta",
                str(tmp_path / "delta"),
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    assert torch.equal(read_state_dict(tmp_path / "out")["w"], torch.full((2,), 2.0))
