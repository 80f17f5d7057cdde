import pytest
import yaml

from vsm_kit.train.config import GroupMix, RunConfig
from widgets import RunForm


@pytest.fixture
def valid(tmp_path):
    """A config whose data and weights folders exist, so `validate(check_paths=True)` passes."""
    for name in ("data", "base", "clip", "owlvit"):
        (tmp_path / name).mkdir()
    return RunConfig().replace(
        **{
            "output_dir": str(tmp_path / "run"),
            "data.data_dir": str(tmp_path / "data"),
            "weights.base": str(tmp_path / "base"),
            "weights.clip": str(tmp_path / "clip"),
            "weights.owlvit": str(tmp_path / "owlvit"),
        }
    )


class FakeRun:
    def __init__(self, config):
        self.config, self.status, self.output_dir = config, "running", config.output_dir

    def stop(self):
        self.status = "stopped"


def test_default_config_round_trips():
    assert RunForm().config == RunConfig()
    assert RunForm(RunConfig()).config == RunConfig()


def test_modified_config_round_trips(valid):
    cfg = valid.replace(
        **{
            "max_steps": 7,
            "precision": "fp16",
            "optim.betas": [0.8, 0.99],
            "lora.targets": ["q_proj", "k_proj", "v_proj"],
            "zero.stage": 3,
            "zero.offload_params": True,
            "weights.arch": "tiny",
            "data.val_limit": 5,
        }
    )
    cfg.data.mix = {"vqa": GroupMix(1.5, {"llava_instruct_80k": 2.0}, by_size=True)}
    form = RunForm(cfg)
    assert form.config == cfg
    assert "data.mix.vqa.sources.llava_instruct_80k" in form.controls
    assert "data.mix.refer_seg.rate" not in form.controls
    assert form.error_field is None and form.message.value == ""
    assert not form.launch_button.disabled


def test_changing_controls_updates_config(valid):
    form = RunForm(valid)
    form.controls["optim.lr"].value = 2e-4
    form.controls["max_steps"].value = "12"
    form.controls["lora.targets"].value = "q_proj, o_proj"
    form.controls["data.mix.vqa.sources.llava_instruct_80k"].value = 3.0
    form.controls["data.mix.mixed_grounding.by_size"].value = False
    cfg = form.config
    assert cfg.optim.lr == 2e-4 and cfg.max_steps == 12 and cfg.lora.targets == ["q_proj", "o_proj"]
    assert cfg.data.mix["vqa"].sources["llava_instruct_80k"] == 3.0
    assert not cfg.data.mix["mixed_grounding"].by_size
    form.controls["max_steps"].value = ""
    assert form.config.max_steps is None


def test_giou_mode_is_a_choice_shown_and_edited(valid, tmp_path):
    form = RunForm(valid)
    control = form.controls["loss.giou"]
    assert tuple(control.options) == ("original", "normalized") and control.value == "original"
    control.value = "normalized"
    assert form.config.loss.giou == "normalized" and form.error_field is None
    again = RunForm()
    again.load(form.save(tmp_path / "run.yaml"))
    assert again.controls["loss.giou"].value == "normalized"
    d = valid.to_dict()
    d["loss"]["giou"] = "mean"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    form.load(tmp_path / "bad.yaml")
    assert form.error_field == "loss.giou" and "loss.giou" in form.message.value
    assert form.launch_button.disabled


def test_negative_lr_names_the_field_and_disables_launch(valid):
    form = RunForm(valid)
    form.controls["optim.lr"].value = -1.0
    assert form.error_field == "optim.lr"
    assert "optim.lr" in form.message.value and "must lie in (0, 1)" in form.message.value
    assert form.controls["optim.lr"].layout.border
    assert form.launch_button.disabled
    form.controls["optim.lr"].value = 1e-4
    assert form.error_field is None and form.message.value == ""
    assert not form.controls["optim.lr"].layout.border and not form.launch_button.disabled


def test_unparsable_text_names_the_field(valid):
    form = RunForm(valid)
    form.controls["max_steps"].value = "many"
    assert form.error_field == "max_steps" and "expected int" in form.message.value


def test_missing_data_dir_names_the_field(valid, tmp_path):
    form = RunForm(valid)
    form.controls["data.data_dir"].value = str(tmp_path / "nowhere")
    assert form.error_field == "data.data_dir" and "is not a folder" in form.message.value
    assert form.launch_button.disabled


def test_save_load_round_trip(valid, tmp_path):
    form = RunForm(valid)
    form.controls["optim.epochs"].value = 3
    path = form.save(tmp_path / "run.yaml")
    assert RunConfig.load(path).optim.epochs == 3
    other = RunForm()
    assert other.load(path) == form.config and other.config == form.config
    assert other.error_field is None


def test_unknown_source_in_yaml_names_the_field(valid, tmp_path):
    d = valid.to_dict()
    d["data"]["mix"]["vqa"]["sources"]["imaginary"] = 1.0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    form = RunForm(valid)
    form.load(path)
    assert form.error_field == "data.mix.vqa.sources.imaginary"
    assert "data.mix.vqa.sources.imaginary: unknown source" in form.message.value
    assert form.controls["data.mix.vqa.sources.imaginary"].layout.border
    assert form.launch_button.disabled


def test_unreadable_yaml_shows_message_and_keeps_form(valid, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("optim: {lr: [unclosed")
    form = RunForm(valid)
    assert form.load(path) is None
    assert "not valid YAML" in form.message.value and form.config == valid
    form.load(tmp_path / "absent.yaml")
    assert "does not exist" in form.message.value


def test_launch_and_stop_with_fake_start(valid):
    started = []

    def start(config):
        started.append(config)
        return FakeRun(config)

    form = RunForm(valid, start=start)
    assert form.stop_button.disabled
    run = form.launch()
    assert started == [valid] and form.run is run
    assert "running" in form.status.value and form.launch_button.disabled
    assert form.launch() is None and "stop it first" in form.message.value and len(started) == 1
    form.stop()
    assert run.status == "stopped" and "stopped" in form.status.value
    assert not form.launch_button.disabled and form.stop_button.disabled
    run.status = "finished"
    form.refresh_status()
    assert "finished" in form.status.value


def test_launch_refuses_an_invalid_config(valid):
    form = RunForm(valid, start=lambda cfg: pytest.fail("started an invalid run"))
    form.controls["optim.grad_accum"].value = 0
    assert form.launch() is None and form.run is None
    assert form.error_field == "optim.grad_accum"
