"""The search end to end with the tiny real model and the CLI."""

import json

import numpy as np
from PIL import Image

from vsm_kit.cli import main
from vsm_kit.search import SearchConfig, visual_search


def test_search_with_the_tiny_model_visits_patches_and_writes_pictures(
    demo_world, tiny_vsm, tmp_path, capsys
):
    from vsm_kit.data import open_source
    from vsm_kit.model import VSMPredictor

    image = open_source("cocostuff", demo_world.dataset)[0].load_image()
    big = np.asarray(Image.fromarray(image).resize((1024, 768)))
    predictor = VSMPredictor(*tiny_vsm)
    result = visual_search(predictor, big, "dog", SearchConfig(minimum_size=400))
    sides = [min(s.box_xywh[2:]) for s in result.steps]
    assert result.steps[0].box_xywh == (0, 0, 1024, 768)
    assert all(side <= 400 for side in sides[1:]) and len(result.steps) in (1, 5)
    assert result.encodes == len(result.steps) and result.model_calls >= len(result.steps)
    assert result.box_xywh is not None and 0 <= result.score <= 1

    path = tmp_path / "big.jpg"
    Image.fromarray(big).save(path)
    w = demo_world.weights
    args = ["search", "--model", str(w / "vsm-tiny"), "--owlvit", str(w / "owlvit-tiny")]
    args += ["--image", str(path), "--target", "dog", "--device", "cpu"]
    assert main([*args, "--minimum-size", "400", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    assert summary["path_length"] == saved["path_length"] and len(saved["steps"]) >= 1
    pictures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert pictures == ["path.png"] + [f"step_{k:02d}.png" for k in range(len(saved["steps"]))]
