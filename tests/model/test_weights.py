import json
import shutil

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from safetensors import safe_open

from vsm_kit.errors import MissingDataError
from vsm_kit.model.architecture import ArchitectureError, owlvit_from_shapes, vsm_7b, vsm_tiny
from vsm_kit.model.clip_tower import tower_name
from vsm_kit.model.predictor import VSMPredictor
from vsm_kit.model.weights import (
    HEAD_PREFIXES,
    ShardWriter,
    WeightsError,
    _llama_arch,
    _owlvit_from_tensors,
    check_and_load,
    init_vsm_from_base,
    load_vsm,
    read_state_dict,
    save_vsm,
)

from .batch import demo_batch


def _losses(model, batch):
    torch.manual_seed(0)
    with torch.no_grad():
        return {k: v.item() for k, v in model.forward_train(batch).items()}


def test_save_then_load_gives_identical_outputs(demo_world, tiny_vsm, tmp_path):
    model, tok, ids = tiny_vsm
    model.eval()
    out = save_vsm(model, tok, tmp_path / "saved", str(demo_world.weights / "clip-tiny"))
    assert sorted(p.name for p in out.iterdir()) == [
        "added_tokens.json",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "owlvit",  # OWL-ViT's preprocessor_config.json
        "preprocessor_config.json",  # CLIP's
        "special_tokens_map.json",
        "tokenizer.model",
        "tokenizer_config.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["VSMForCausalLM"]
    assert config["out_dim"] == 24 and config["vocab_size"] == 1004
    again, tok2, ids2 = load_vsm(out)  # architecture from our config block
    assert ids2 == ids
    batch = demo_batch(demo_world.dataset, tok)
    assert _losses(again, batch) == _losses(model, batch)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_original_layout_loads_and_drops_inv_freq(demo_world, tiny_vsm):
    model, _, _ = tiny_vsm
    state = read_state_dict(demo_world.weights / "vsm-tiny")
    ignored = check_and_load(model, state, allow_missing=("model.vision_tower.",))
    assert ignored and all(k.endswith("rotary_emb.inv_freq") for k in ignored)


def test_pickle_checkpoints_load_with_weights_only(demo_world, tmp_path):
    folder = tmp_path / "bin"
    shutil.copytree(demo_world.weights / "vsm-tiny", folder)
    state = read_state_dict(folder)
    for p in folder.glob("model*.safetensors*"):
        p.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    model, _, _ = load_vsm(folder, clip=demo_world.weights / "clip-tiny", arch=vsm_tiny())
    assert torch.equal(model.state_dict()["lm_head.weight"], state["lm_head.weight"])


def test_a_checkpoint_from_another_base_names_the_keys(demo_world, tiny_vsm):
    model, _, _ = tiny_vsm
    state = dict(read_state_dict(demo_world.weights / "vsm-tiny"))
    state["lm_head.weight"] = torch.zeros(2000, 64)
    del state["model.norm.weight"]
    state["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError) as err:
        check_and_load(model, state, allow_missing=("model.vision_tower.",))
    msg = str(err.value)
    assert "lm_head.weight: checkpoint (2000, 64) vs model (1004, 64)" in msg
    assert "missing (1): model.norm.weight" in msg and "unexpected (1): model.extra.weight" in msg


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty local Hugging Face cache, so no test sees the machine's own."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _with_vision_tower(src, folder, name: str):
    shutil.copytree(src, folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_tower"] = config["mm_vision_tower"] = name
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_nothing_is_downloaded_for_a_hub_name(demo_world, tmp_path, hub_cache):
    folder = _with_vision_tower(
        demo_world.weights / "vsm-tiny", tmp_path / "hub", "openai/clip-vit-large-patch14"
    )
    with pytest.raises(MissingDataError) as err:
        load_vsm(folder, arch=vsm_tiny())
    msg = str(err.value)
    assert "--clip" in msg and "clip=" in msg
    assert f"the Hugging Face cache {hub_cache} for openai/clip-vit-large-patch14" in msg
    assert str(tmp_path / "clip-vit-large-patch14") in msg  # beside the model folder
    assert not any(hub_cache.iterdir())


def test_a_hub_name_is_found_in_the_local_cache(demo_world, tmp_path, hub_cache):
    repo = hub_cache / "models--someorg--clip-tiny"
    shutil.copytree(demo_world.weights / "clip-tiny", repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    folder = _with_vision_tower(
        demo_world.weights / "vsm-tiny", tmp_path / "m", "someorg/clip-tiny"
    )
    model, _, _ = load_vsm(folder, arch=vsm_tiny())
    clip = read_state_dict(demo_world.weights / "clip-tiny")
    got = model.model.vision_tower.vision_tower.state_dict()
    assert all(torch.equal(got[k], v) for k, v in clip.items())
    assert tower_name(repo / "snapshots" / "0123abc") == "someorg/clip-tiny"


def test_a_saved_folder_names_its_clip_and_loads_after_a_move(
    demo_world, tiny_vsm, tmp_path, hub_cache
):
    model, tok, _ = tiny_vsm
    saved = save_vsm(model, tok, tmp_path / "here" / "saved", demo_world.weights / "clip-tiny")
    text = (saved / "config.json").read_text()
    config = json.loads(text)
    assert config["vision_tower"] == config["mm_vision_tower"] == "clip-tiny"
    assert '"/' not in text and str(demo_world.root) not in text  # no path of this machine
    load_vsm(saved)  # where it was saved: the relative record finds the tower
    for where in ("beside", "beside its parent"):  # on another machine, say
        moved = tmp_path / where.replace(" ", "_") / "deeper" / "moved"
        shutil.copytree(saved, moved)
        clip_dir = moved.parent if where == "beside" else moved.parent.parent
        shutil.copytree(demo_world.weights / "clip-tiny", clip_dir / "clip-tiny")
        again, _, _ = load_vsm(moved)
        for k, v in model.state_dict().items():
            assert torch.equal(v, again.state_dict()[k]), (where, k)
        shutil.rmtree(clip_dir / "clip-tiny")
        with pytest.raises(MissingDataError) as err:
            load_vsm(moved)
        assert "--clip" in str(err.value) and str(clip_dir / "clip-tiny") in str(err.value)
        load_vsm(moved, clip=demo_world.weights / "clip-tiny")


def test_mixed_dtypes_are_saved_as_the_original_and_load_in_one_dtype(
    demo_world, tiny_vsm, tmp_path
):
    model, tok, _ = tiny_vsm
    out = save_vsm(
        model,
        tok,
        tmp_path / "mixed",
        demo_world.weights / "clip-tiny",
        dtype=torch.bfloat16,
        head_dtype=torch.float32,
    )
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    heads = {k for k in dtypes if k.startswith(HEAD_PREFIXES)}
    assert heads and any(k.startswith("model.layers.") for k in dtypes)
    assert {dtypes[k] for k in heads} == {"F32"}
    assert {dtypes[k] for k in set(dtypes) - heads} == {"BF16"}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    fp32, tok, ids = load_vsm(out)
    for k, v in fp32.state_dict().items():
        if k.startswith("model.vision_tower."):
            continue
        want = model.state_dict()[k]
        want = want if k.startswith(HEAD_PREFIXES) else want.to(torch.bfloat16).float()
        assert v.dtype == torch.float32 and torch.equal(v, want), k
    bf16 = VSMPredictor(*load_vsm(out, dtype=torch.bfloat16))
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    ref, image = VSMPredictor(fp32, tok, ids), _record(demo_world).load_image()
    for p in (bf16, ref):
        p.set_image(image)
    got, want = bf16.detect("car").scores, ref.detect("car").scores
    assert np.isfinite(got).all() and np.abs(got - want).max() < 0.02


def _record(world):
    from vsm_kit.data import open_source

    return open_source("cocostuff", world.dataset)[0]


def test_original_layout_without_owlvit_reads_the_detector_from_its_tensors(demo_world):
    w = demo_world.weights
    read, tok, _ = load_vsm(w / "vsm-tiny")
    given, _, _ = load_vsm(w / "vsm-tiny", owlvit=w / "owlvit-tiny")
    assert read.arch == given.arch == vsm_tiny()
    batch = demo_batch(demo_world.dataset, tok)
    assert _losses(read, batch) == _losses(given, batch)


def test_llama_sizes_missing_from_the_config_come_from_the_tensors(demo_world, tmp_path):
    folder = tmp_path / "bare"
    shutil.copytree(demo_world.weights / "vsm-tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        del config[key]
    config["vision_tower"] = str(demo_world.weights / "clip-tiny")
    (folder / "config.json").write_text(json.dumps(config))
    model, _, _ = load_vsm(folder)
    assert model.arch.llama == vsm_tiny().llama
    # the head count: a saved rotary_emb.inv_freq is head_dim / 2 long
    shapes = {
        "model.embed_tokens.weight": (1004, 64),
        "model.layers.0.mlp.gate_proj.weight": (128, 64),
        "model.layers.0.self_attn.rotary_emb.inv_freq": (16,),
    }
    assert _llama_arch({}, _Shapes(shapes, layers=2)).num_attention_heads == 2


def test_an_owlvit_the_tensors_cannot_tell_names_the_option(demo_world, tmp_path):
    folder = tmp_path / "no-class-head"
    shutil.copytree(demo_world.weights / "vsm-tiny", folder)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.owlvit.class_head.dense0.weight"]
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsError, match="--owlvit"):
        load_vsm(folder, clip=demo_world.weights / "clip-tiny")


class _Shapes:
    """A tensor store holding only shapes: the published 7B VSM's OWL-ViT part."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], layers: int):
        self.shapes, self.layers = shapes, layers

    def __contains__(self, key):
        return key in self.shapes

    def shape(self, key):
        return self.shapes[key]

    def count(self, prefix):
        return self.layers


def test_the_published_owlvit_part_is_b16_with_64_wide_heads():
    v = "model.owlvit.vision_model."
    store = _Shapes(
        {
            v + "embeddings.patch_embedding.weight": (768, 3, 16, 16),
            v + "embeddings.position_embedding.weight": (2305, 768),
            v + "encoder.layers.0.mlp.fc1.weight": (3072, 768),
            "model.owlvit.class_head.dense0.weight": (512, 768),
        },
        layers=12,
    )
    assert _owlvit_from_tensors(store) == vsm_7b().owlvit
    l14 = dict(hidden_size=1024, num_hidden_layers=24, intermediate_size=4096, patch_size=14)
    other = owlvit_from_shapes(**l14, image_size=840, text_hidden_size=768)  # no named size
    assert (other.num_attention_heads, other.text_hidden_size) == (16, 768)
    odd = dict(hidden_size=100, num_hidden_layers=2, intermediate_size=200, patch_size=16)
    with pytest.raises(ArchitectureError, match="head count.*Fix: pass the OWL-ViT folder"):
        owlvit_from_shapes(**odd, image_size=768, text_hidden_size=24)


def test_init_from_base_adds_loc_and_keeps_the_base(demo_world):
    w = demo_world.weights
    model, tok, ids = init_vsm_from_base(
        w / "llava-tiny", w / "clip-tiny", w / "owlvit-tiny", vsm_tiny()
    )
    assert (ids.loc, ids.im_start, ids.im_end) == (1003, 1001, 1002)
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == 1004
    base = read_state_dict(w / "llava-tiny")
    assert torch.equal(
        model.state_dict()["model.mm_projector.weight"], base["model.mm_projector.weight"]
    )
    assert torch.equal(
        model.state_dict()["model.embed_tokens.weight"][:1003], base["model.embed_tokens.weight"]
    )


def test_shard_writer_splits_at_the_size_and_indexes_every_tensor(tmp_path):
    state = {"a": torch.zeros(10), "b": torch.ones(10), "big": torch.arange(100.0)}
    state["c"] = torch.ones(5)
    writer = ShardWriter(tmp_path, shard_bytes=80)  # a and b fill one shard; big exceeds alone
    for k, v in state.items():
        writer.add(k, v)
    writer.close()
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(set(index.values())) == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert index["a"] == index["b"] != index["big"] != index["c"]
    out = read_state_dict(tmp_path)
    assert all(torch.equal(out[k], v) for k, v in state.items()) and set(out) == set(state)
    single = ShardWriter(tmp_path / "one")
    (tmp_path / "one").mkdir()
    single.add("a", state["a"])
    single.close()
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["model.safetensors"]
