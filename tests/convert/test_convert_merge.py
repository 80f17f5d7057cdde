"""A 2-rank CPU training run → fp32 safetensors → merged, verified Hugging Face folder."""

import hashlib
import importlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPImageProcessor, OwlViTImageProcessor

import vsm_kit
from tests.plumbing import PLUMBING
from vsm_kit.cli import main
from vsm_kit.convert import LAST, ConvertError, MergeError, convert, convert_merge, merge
from vsm_kit.model import VSMPredictor, vsm_tiny
from vsm_kit.model import weights as weights_module
from vsm_kit.model.weights import HEAD_PREFIXES
from vsm_kit.train.config import RunConfig
from vsm_kit.train.launch import TrainingRun

CONFIGS = Path(vsm_kit.__file__).parent / "configs"
merge_module = importlib.import_module("vsm_kit.convert.merge")  # the name `merge` is the function


@pytest.fixture(scope="module")
def run_dir(demo_world, tmp_path_factory):
    cfg = demo_world.recipe(
        **{
            **PLUMBING,
            "output_dir": str(tmp_path_factory.mktemp("convert") / "run"),
            "max_steps": 3,
        },
    )
    run = TrainingRun.start(cfg, num_gpus=2)
    assert run.wait(600) == "finished", run.log_tail(40)
    return run.output_dir


@pytest.fixture(scope="module")
def converted(run_dir):
    return convert(run_dir)


@pytest.fixture(scope="module")
def best_not_last(run_dir, tmp_path_factory):
    """A copy of the run whose last checkpoint, global_step4, comes after its best one,
    global_step3 (the run's own, validated at its last step), and holds other weights."""
    copy = tmp_path_factory.mktemp("best_not_last") / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("weights_fp32.safetensors"))
    ckpts = copy / "checkpoints"
    assert json.loads((ckpts / "best.json").read_text())["tag"] == "global_step3"
    shutil.copytree(ckpts / "global_step3", ckpts / "global_step4")
    for shard in (ckpts / "global_step4").glob("*optim_states.pt"):
        state = torch.load(shard, weights_only=False)
        for flat in state["optimizer_state_dict"]["single_partition_of_fp32_groups"]:
            flat.data.add_(1.0)  # every trainable parameter moves
        torch.save(state, shard)
    (ckpts / "latest").write_text("global_step4")
    return copy


def _saved_tag(weights: Path) -> str:
    with safe_open(str(weights), "pt") as f:
        return f.metadata()["tag"]


def _saved_dtypes(folder: Path) -> dict[str, str]:
    dtypes = {}
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            dtypes.update({k: f.get_slice(k).get_dtype() for k in f.keys()})  # noqa: SIM118
    return dtypes


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_convert_merge_reload_offline_and_verify(run_dir, converted, demo_world, tmp_path):
    assert converted.tag == "global_step3" and converted.out.exists()
    assert converted.chosen.startswith("the best, val det_acc")
    assert converted.trainable > 0 and converted.frozen > 0 and not converted.extra
    out = tmp_path / "merged"
    heard = []
    _, report = convert_merge(run_dir, out, progress=lambda done, text: heard.append((done, text)))
    assert [done for done, _ in heard] == [0, 1, merge_module.STAGES]
    assert "best checkpoint" in heard[0][1] and heard[1][1].startswith(str(converted)[:20])
    assert heard[-1][1] == f"saved {out}"
    # the original's dtypes: the LLM in bf16, every VSM head in fp32; verified at bf16 tolerance
    dtypes = _saved_dtypes(out)
    heads = {k for k in dtypes if k.startswith(HEAD_PREFIXES)}
    assert {dtypes[k] for k in heads} == {"F32"}
    assert {dtypes[k] for k in set(dtypes) - heads} == {"BF16"}
    assert report.dtype == "mixed" and report.tolerance == merge_module.TOLERANCE[torch.bfloat16]
    text = (out / "config.json").read_text()
    assert json.loads(text)["vision_tower"] == "clip-tiny" and '"/' not in text
    assert report.verified and set(report.differences) == {
        "lm_logits",
        "box_logits",
        "boxes",
        "mask_logits",
    }
    assert max(report.differences.values()) <= report.tolerance
    # everything to use the folder offline is in it (the test session runs HF_HUB_OFFLINE=1)
    AutoTokenizer.from_pretrained(out)
    assert CLIPImageProcessor.from_pretrained(out).crop_size["height"] == 224
    owl_size = vsm_tiny().owlvit.image_size  # 384: read from the architecture, not fixed
    assert OwlViTImageProcessor.from_pretrained(out / "owlvit").size["height"] == owl_size
    assert (out / "generation_config.json").exists()
    predictor = VSMPredictor.from_pretrained(out, device="cpu")
    record = vsm_kit.data.open_source("cocostuff", demo_world.dataset)[0]
    predictor.set_image(record.load_image())
    assert np.isfinite(predictor.detect("person").scores).all()


def test_fp32_merge_matches_to_float_precision(run_dir, converted, tmp_path):
    config = RunConfig.load(run_dir / "config.yaml")
    report = merge(config, converted.out, tmp_path / "fp32", dtype="fp32")
    assert max(report.differences.values()) < 1e-5
    assert set(_saved_dtypes(tmp_path / "fp32").values()) == {"F32"}


def test_export_takes_the_best_checkpoint_unless_told_otherwise(
    best_not_last, converted, tmp_path, capsys
):
    best = convert(best_not_last, out=tmp_path / "best.safetensors")
    assert (best.tag, _saved_tag(best.out)) == ("global_step3", "global_step3")
    assert best.chosen.startswith("the best, val det_acc")
    want, got = load_file(converted.out), load_file(best.out)
    assert all(torch.equal(got[k], v) for k, v in want.items())
    last = convert(best_not_last, tag=LAST, out=tmp_path / "last.safetensors")
    assert (last.tag, last.chosen) == ("global_step4", "the last")
    lora = next(k for k in want if "lora_A" in k)
    assert not torch.equal(load_file(last.out)[lora], want[lora])

    # the CLI: the best by default, --last or --tag for another, not both
    for extra, tag in (([], "global_step3 (the best"), (["--last"], "global_step4 (the last)")):
        assert main(["convert", str(best_not_last), "--out", str(tmp_path / "c"), *extra]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith(tag)
    assert main(["convert", str(best_not_last), "--last", "--tag", "global_step3"]) == 2

    # no best recorded (no validation ran before the last checkpoint): the last, said so
    (best_not_last / "checkpoints" / "best.json").rename(tmp_path / "best.json")
    try:
        fallback = convert(best_not_last, out=tmp_path / "fallback.safetensors")
    finally:
        (tmp_path / "best.json").rename(best_not_last / "checkpoints" / "best.json")
    assert fallback.tag == "global_step4" and "no best recorded" in fallback.chosen
    with pytest.raises(ConvertError, match="global_step9"):
        convert(best_not_last, tag="global_step9")


def test_cli_merge_saves_the_original_dtypes_by_default(run_dir, converted, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["merge", "--weights", str(converted.out), "--out", str(out), "--no-verify"]) == 0
    assert "mixed: LLM bfloat16, heads float32" in capsys.readouterr().out
    assert set(_saved_dtypes(out).values()) == {"BF16", "F32"}
    args = ["merge", "--weights", str(converted.out), "--out", str(out), "--no-verify"]
    assert main([*args, "--dtype", "fp16"]) == 0
    assert set(_saved_dtypes(out).values()) == {"F16"}


def test_interrupted_merge_leaves_no_partial_folder_and_the_old_one_intact(
    run_dir, converted, tmp_path, monkeypatch
):
    config = RunConfig.load(run_dir / "config.yaml")
    out = tmp_path / "merged"
    merge(config, converted.out, out, dtype="fp32", verify=False)
    before = _digest(out)

    def interrupted(*args, **kwargs):  # the weights are written, the tokenizer is not
        raise KeyboardInterrupt

    monkeypatch.setattr(weights_module, "save_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge(config, converted.out, out, dtype="bf16", verify=False)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary leftovers
    with pytest.raises(KeyboardInterrupt):
        merge(config, converted.out, tmp_path / "fresh", dtype="bf16", verify=False)
    assert not (tmp_path / "fresh").exists()


def test_a_checkpoint_from_another_base_names_the_keys(run_dir, converted, tmp_path):
    # what a run on a base with a wider MLP (intermediate 96, not 128) would have saved
    state = load_file(converted.out)
    for k, v in state.items():
        if ".mlp." in k:
            state[k] = torch.zeros(
                [96 if d == vsm_tiny().llama.intermediate_size else d for d in v.shape]
            )
    foreign = tmp_path / "foreign.safetensors"
    save_file(state, foreign)
    config = RunConfig.load(run_dir / "config.yaml")
    with pytest.raises(MergeError) as err:
        merge(config, foreign, tmp_path / "merged")
    text = str(err.value)
    assert "shape mismatch" in text and "layers.0.mlp.gate_proj.weight" in text
    assert "foreign.safetensors" in text and config.weights.base in text
    assert not (tmp_path / "merged").exists()


def test_convert_names_trainable_parameters_the_checkpoint_lacks(run_dir, tmp_path):
    config = RunConfig.load(run_dir / "config.yaml")
    # a run that adapted k_proj as well would have LoRA tensors this checkpoint does not hold
    (tmp_path / "checkpoints").symlink_to(run_dir / "checkpoints")
    config.replace(**{"lora.targets": ["q_proj", "k_proj", "v_proj"]}).save(
        tmp_path / "config.yaml"
    )
    with pytest.raises(ConvertError) as err:
        convert(tmp_path)
    assert "k_proj.lora_A" in str(err.value)
    assert not (tmp_path / "weights_fp32.safetensors").exists()


def test_merge_refuses_when_ram_is_short(run_dir, converted, tmp_path, monkeypatch):
    """The estimate is twice the fp32 file plus twice the saved copy (bf16 LLM: half) plus
    2 GiB; one byte less available refuses, the estimate itself is enough."""
    fp32 = converted.out.stat().st_size
    need = 2 * fp32 + 2 * (fp32 // 2) + 2 * 1024**3
    assert merge_module.ram_needed(converted.out, "mixed") == need

    def available(n):
        monkeypatch.setattr(
            merge_module.psutil, "virtual_memory", lambda: SimpleNamespace(available=n)
        )

    available(need - 1)
    with pytest.raises(MergeError) as err:
        merge(RunConfig.load(run_dir / "config.yaml"), converted.out, tmp_path / "m")
    assert "needs ~" in str(err.value) and "available" in str(err.value)
    assert not (tmp_path / "m").exists()
    available(need)
    report = merge(RunConfig.load(run_dir / "config.yaml"), converted.out, tmp_path / "m")
    assert report.verified


def test_merge_panel_runs_both_steps_and_shows_the_verification(best_not_last, tmp_path):
    from widgets import MergePanel

    panel = MergePanel(best_not_last, tmp_path / "merged", dtype="fp32")
    assert panel.checkpoint.value == "best" and MergePanel().dtype.value == "mixed"
    report = panel.run()
    assert _saved_tag(best_not_last / "weights_fp32.safetensors") == "global_step3"
    assert report.verified and panel.progress.value == panel.progress.max
    assert "passed" in panel.report_html.value and "mask_logits" in panel.report_html.value
    panel.checkpoint.value, panel.verify.value = "last", False
    assert panel.run() is not None
    assert _saved_tag(best_not_last / "weights_fp32.safetensors") == "global_step4"
    panel.run_dir.value = str(tmp_path / "nowhere")
    assert panel.run() is None and "nowhere" in panel.status.value
