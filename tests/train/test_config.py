"""RunConfig: YAML round trips, the shipped recipes, and errors that name the field."""

from pathlib import Path

import pytest

import vsm_kit
from tests.plumbing import PLUMBING
from vsm_kit import configs
from vsm_kit.train.config import ConfigError, RunConfig
from vsm_kit.train.launch import TrainingRun

CONFIGS = Path(vsm_kit.__file__).parent / "configs"


def _tiny(demo_world, tmp_path) -> RunConfig:
    return configs.load("demo_tiny_cpu").replace(
        **{
            **PLUMBING,
            "data.data_dir": str(demo_world.dataset),
            "weights.dir": str(demo_world.weights),
            "output_dir": str(tmp_path / "run"),
        },
    )


@pytest.mark.parametrize("name", [f"{n}.yaml" for n in configs.names()])
def test_shipped_recipes_open_with_their_command_and_round_trip(name, tmp_path):
    text = (CONFIGS / name).read_text()
    assert text.startswith("# ") and "vsm-kit train --config" in text.split("\n\n")[0]
    cfg = RunConfig.load(CONFIGS / name)
    cfg.validate(check_paths=False)
    assert RunConfig.load(cfg.save(tmp_path / "again.yaml")) == cfg


def test_the_7b_recipe_is_the_original_default():
    cfg = configs.load("vsm_7b_lora")
    assert cfg == RunConfig()  # the dataclass defaults are train.py's defaults
    assert cfg.total_steps == 100_000 and cfg.optim.micro_batch * cfg.optim.grad_accum == 8


@pytest.mark.parametrize("name", [f"{n}.yaml" for n in configs.names()])
def test_recipes_train_with_the_originals_giou_term_and_name_the_other(name):
    cfg = RunConfig.load(CONFIGS / name)
    assert cfg.loss.giou == "original" == RunConfig().loss.giou
    block = (CONFIGS / name).read_text().split("\nloss:\n")[1].split("\nzero:\n")[0]
    assert "normalized" in block and "#" in block  # the comment says what the option does


def test_giou_mode_is_validated_naming_the_field():
    cfg = RunConfig().replace(**{"loss.giou": "normalized"})
    assert cfg.validate(check_paths=False).loss.giou == "normalized"
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as err:
        RunConfig().replace(**{"loss.giou": "mean"}).validate(check_paths=False)
    assert err.value.field == "loss.giou"
    assert "'mean'" in str(err.value) and "original" in str(err.value)


def test_weights_dir_resolves_the_tiny_recipe(demo_world, tmp_path):
    cfg = _tiny(demo_world, tmp_path).resolved().validate()
    assert Path(cfg.weights.base) == demo_world.weights / "llava-tiny"
    assert Path(cfg.weights.owlvit).is_absolute() and cfg.weights.dir == ""


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"data.mix": {"vqa": {"rate": 1, "sources": {"imaginary": 1}}}},
            "data.mix.vqa.sources.imaginary",
        ),
        (
            {"data.mix": {"vqa": {"rate": -2, "sources": {"llava_instruct_80k": 1}}}},
            "data.mix.vqa.rate",
        ),
        (
            {"data.mix": {"vqa": {"rate": 1, "sources": {"refcoco": 1}}}},
            "data.mix.vqa.sources.refcoco",
        ),
        ({"weights.base": "/nowhere/llava"}, "weights.base"),
        ({"weights.owlvit": ""}, "weights.owlvit"),
        ({"optim.lr": -1e-4}, "optim.lr"),
        ({"optim.micro_batch": 0}, "optim.micro_batch"),
        ({"precision": "fp8"}, "precision"),
        ({"loss.giou": "intended"}, "loss.giou"),
        ({"zero.offload_params": True}, "zero.offload_params"),
    ],
)
def test_bad_configs_are_rejected_before_launch_naming_the_field(
    change, field, demo_world, tmp_path
):
    cfg = _tiny(demo_world, tmp_path).resolved()
    with pytest.raises(ConfigError) as err:
        TrainingRun.start(cfg.replace(**change))
    assert err.value.field == field
    assert not (tmp_path / "run").exists()  # nothing launched, nothing written


def test_unknown_and_mistyped_yaml_fields_are_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  warmup: 10\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.load(path)
    assert err.value.field == "optim.warmup"
    path.write_text("optim:\n  micro_batch: two\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.load(path)
    assert err.value.field == "optim.micro_batch"


def test_an_incomplete_data_tree_gives_the_layout_report(demo_world, world_copy, tmp_path):
    (world_copy / "vsm_vqa_data" / "llava_instruct_80k.json").unlink()
    cfg = _tiny(demo_world, tmp_path).replace(**{"data.data_dir": str(world_copy)})
    with pytest.raises(vsm_kit.errors.VsmKitError) as err:
        TrainingRun.start(cfg)
    assert "Dataset layout under" in str(err.value) and "llava_instruct_80k.json" in str(err.value)
    assert not (tmp_path / "run").exists()
