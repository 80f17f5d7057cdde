import json
import shutil

import pytest
import torch

from vsm_kit.errors import MissingDataError
from vsm_kit.model.architecture import vsm_tiny
from vsm_kit.model.weights import (
    WeightsError,
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


def test_nothing_is_downloaded_for_a_hub_name(demo_world, tmp_path):
    folder = tmp_path / "hub"
    shutil.copytree(demo_world.weights / "vsm-tiny", folder)
    config = json.loads((folder / "config.json").read_text())
    config["vision_tower"] = config["mm_vision_tower"] = "openai/clip-vit-large-patch14"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(MissingDataError, match="local folder"):
        load_vsm(folder, arch=vsm_tiny())


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
