"""Each documented user error: one message naming the file or field and the fix, exit 2."""

from pathlib import Path

import pytest

import vsm_kit
from vsm_kit.cli import main

CONFIG = str(Path(vsm_kit.__file__).parent / "configs" / "demo_tiny_cpu.yaml")


def _bench_image(demo_world) -> str:
    return str(sorted((demo_world.dataset / "vstar_bench" / "direct_attributes").glob("*.jpg"))[0])


def _cases(w, tmp: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name → (argv, fragments the message must hold)."""
    data, model, img = str(w.dataset), str(w.weights / "vsm-tiny"), _bench_image(w)
    train = ["train", "--config", CONFIG, "--data-dir", data, "--weights-dir", str(w.weights)]
    train += ["--output-dir", str(tmp / "run"), "--dry-run"]
    (tmp / "unknown_field.yaml").write_text(f"output_dir: {tmp / 'r'}\nbogus: 1\n")
    (tmp / "bad_value.yaml").write_text(f"output_dir: {tmp / 'r'}\noptim:\n  lr: -1\n")
    (tmp / "bad_target.yaml").write_text(f"output_dir: {tmp / 'r'}\nlora:\n  targets: [qq_proj]\n")
    nope = str(tmp / "nope")
    corrupt = tmp / "cut.safetensors"  # a converted file cut short
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    return {
        "no command": ([], ["required: command", "vsm-kit --help"]),
        "unknown command": (["chek"], ["invalid choice: 'chek'", "vsm-kit --help"]),
        "check wrong group": (
            ["check", data, "--datasets", "refer_seg,nope"],
            ["--datasets", "'nope'", "general_segdet", "vsm-kit check --help"],
        ),
        "check bad count": (["check", data, "--verify-images", "many"], ["--verify-images"]),
        "demo-world bad scale": (["demo-world", "--out", nope, "--scale", "0"], ["--scale"]),
        "demo-world bad bases": (
            ["demo-world", "--out", nope, "--bases", "trained"],
            ["--bases", "'trained'", "pretrained"],
        ),
        "preprocess missing folder": (
            ["preprocess", "--data-dir", nope],
            ["Missing dataset folder", nope, "Fix:"],
        ),
        "preprocess wrong step": (
            ["preprocess", "--data-dir", data, "--only", "coco,nope"],
            ["--only", "'nope'", "objects365"],
        ),
        "apply-delta missing base": (
            ["apply-delta", "--base", nope, "--delta", model, "--out", str(tmp / "d")],
            [nope, "Fix:"],
        ),
        "detect missing model": (
            ["detect", "--model", nope, "--image", img, "--target", "cup", "--device", "cpu"],
            [f"{nope}/config.json", "Fix:"],
        ),
        "detect missing image": (
            ["detect", "--model", model, "--image", f"{nope}.jpg", "--target", "c"],
            ["Missing image", f"{nope}.jpg", "Fix:"],
        ),
        "detect missing owlvit": (  # the demo VSM has no vsm_arch: --owlvit gives the sizes
            ["detect", "--model", model, "--owlvit", nope, "--image", img, "--target", "c"],
            ["OWL-ViT config", f"{nope}/config.json", "Fix:", "leave --owlvit out"],
        ),
        "detect bad top": (
            ["detect", "--model", model, "--image", img, "--target", "c", "--top", "0"],
            ["--top", "'0'"],
        ),
        "search missing model": (
            ["search", "--model", nope, "--image", img, "--target", "cup", "--device", "cpu"],
            [f"{nope}/config.json"],
        ),
        "search-eval without log": (
            ["search-eval", "--model", model, "--bench", str(w.dataset / "vstar_bench")],
            ["--log"],
        ),
        "search-eval missing bench": (
            ["search-eval", "--model", model, "--bench", nope, "--log", str(tmp / "l.jsonl")],
            [nope, "not a folder", "Fix:"],
        ),
        "train missing config": (
            ["train", "--config", str(tmp / "none.yaml"), "--dry-run"],
            [str(tmp / "none.yaml"), "does not exist"],
        ),
        "train unknown field": (
            ["train", "--config", str(tmp / "unknown_field.yaml"), "--dry-run"],
            ["bogus: unknown field", "output_dir"],
        ),
        "train bad value": (
            ["train", "--config", str(tmp / "bad_value.yaml"), "--dry-run"],
            ["optim.lr", "-1"],
        ),
        "train missing data": (
            [*train, "--data-dir", nope],
            ["data.data_dir", nope, "not a folder"],
        ),
        "train bad ranks": ([*train, "--num-gpus", "0"], ["--num-gpus"]),
        "train missing weights dir": (
            [*train, "--weights-dir", nope],
            [f"weights.dir: {nope} is not a folder; Fix:", "--weights-dir"],
        ),
        "train bad lora target": (
            ["train", "--config", str(tmp / "bad_target.yaml"), "--dry-run"],
            ["lora.targets", "'qq_proj'", "q_proj, k_proj, v_proj, o_proj"],
        ),
        "convert not a run": (["convert", data], [f"{data}/config.yaml", "does not exist"]),
        "convert tag and last": (
            ["convert", data, "--tag", "global_step3", "--last"],
            ["--last", "not allowed with", "--tag"],
        ),
        "merge missing weights": (
            ["merge", "--weights", f"{nope}.safetensors", "--config", CONFIG, "--out", nope],
            [f"{nope}.safetensors", "vsm-kit convert"],
        ),
        "merge corrupt weights": (
            ["merge", "--weights", str(corrupt), "--config", CONFIG, "--out", nope],
            [str(corrupt), "not a readable safetensors file", "vsm-kit convert"],
        ),
        "convert-merge not a run": (
            ["convert-merge", data, "--out", nope],
            [f"{data}/config.yaml", "does not exist"],
        ),
    }


NAMES = [
    "no command",
    "unknown command",
    "check wrong group",
    "check bad count",
    "demo-world bad scale",
    "demo-world bad bases",
    "preprocess missing folder",
    "preprocess wrong step",
    "apply-delta missing base",
    "detect missing model",
    "detect missing image",
    "detect missing owlvit",
    "detect bad top",
    "search missing model",
    "search-eval without log",
    "search-eval missing bench",
    "train missing config",
    "train unknown field",
    "train bad value",
    "train missing data",
    "train bad ranks",
    "train missing weights dir",
    "train bad lora target",
    "convert not a run",
    "convert tag and last",
    "merge missing weights",
    "merge corrupt weights",
    "convert-merge not a run",
]


@pytest.mark.parametrize("name", NAMES)
def test_user_error_is_one_message_and_exit_2(name, demo_world, tmp_path, capsys):
    argv, fragments = _cases(demo_world, tmp_path)[name]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in err and "usage:" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "nope").exists()  # a failed command leaves nothing behind


def test_every_case_is_listed(demo_world, tmp_path):
    assert sorted(_cases(demo_world, tmp_path)) == sorted(NAMES)


def test_a_library_bug_keeps_its_traceback(monkeypatch):
    """Only user errors are shortened; anything else reaches the user as a traceback."""
    import vsm_kit.data

    def broken(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(vsm_kit.data, "check_layout", broken)
    with pytest.raises(ValueError, match="a bug"):
        main(["check", "."])


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    import vsm_kit.data

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(vsm_kit.data, "check_layout", interrupted)
    assert main(["check", "."]) == 130
    assert capsys.readouterr().err == "interrupted\n"
