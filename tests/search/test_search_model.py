"""The search end to end with the tiny real model and the CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from vsm_kit.cli import main
from vsm_kit.data import open_source
from vsm_kit.search import SearchConfig, visual_search


def _share(heatmap, box) -> float:
    x, y, w, h = box
    total = float(heatmap.sum())
    return float(heatmap[y : y + h, x : x + w].sum()) / total if total > 0 else 0.0


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
    # the children of the whole image are visited best first, by their share of its heatmap
    root = result.steps[0]
    if len(result.steps) > 1:
        shares = [_share(root.heatmap, s.box_xywh) / 4 for s in result.steps[1:]]
        assert [s.score for s in result.steps[1:]] == pytest.approx(shares)
        assert shares == sorted(shares, reverse=True)
    # the result is the best tentative box: the step that found the target, or the fallback
    best = max(result.steps, key=lambda s: s.top_score)
    assert result.score == best.top_score
    assert result.found == (best.top_score >= SearchConfig().confidence_low)
    dx, dy, dw, dh = best.detection_xywh
    assert result.box_xywh == (dx + best.box_xywh[0], dy + best.box_xywh[1], dw, dh)

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


def test_batched_locate_and_the_encoding_cache_match_single_calls(demo_world, tiny_vsm):
    from vsm_kit.model import VSMPredictor

    rng = np.random.default_rng(0)
    patches = [rng.integers(0, 256, (200 + 7 * k, 260, 3), dtype=np.uint8) for k in range(3)]
    predictor = VSMPredictor(*tiny_vsm)
    batched = predictor.locate_batch(patches, "dog")
    assert predictor.encodes == 3
    for patch, loc in zip(patches, batched, strict=True):
        predictor.set_image(patch)  # encoded by the batch already
        single = predictor.locate("dog")
        assert loc.mask_logits.shape == patch.shape[:2]
        np.testing.assert_allclose(loc.scores, single.scores, atol=1e-5)
        np.testing.assert_allclose(loc.boxes_xyxy, single.boxes_xyxy, atol=1e-3)
        np.testing.assert_allclose(loc.mask_logits, single.mask_logits, atol=1e-4)
    assert predictor.encodes == 3
    predictor.clear_cache()
    predictor.set_image(patches[0])
    assert predictor.encodes == 4


def test_tiny_model_paths_are_identical_with_sibling_batching(demo_world, tiny_vsm):
    from vsm_kit.model import VSMPredictor

    image = open_source("cocostuff", demo_world.dataset)[0].load_image()
    big = np.asarray(Image.fromarray(image).resize((1024, 768)))
    config = SearchConfig(minimum_size=200, confidence_high=1.0)  # visit every patch
    results = {}
    for batch in (False, True):
        predictor = VSMPredictor(*tiny_vsm)
        results[batch] = visual_search(predictor, big, "dog", config, batch_siblings=batch)
        assert predictor.encodes == results[batch].encodes  # what the search reports is real
    plain, batched = results[False], results[True]
    assert [s.box_xywh for s in batched.steps] == [s.box_xywh for s in plain.steps]
    assert len(plain.steps) == 1 + 4 + 16
    assert batched.box_xywh == pytest.approx(plain.box_xywh, abs=1e-3)
    assert batched.model_calls < plain.model_calls


def test_locate_without_the_cue_skips_only_the_mask(tiny_vsm):
    from vsm_kit.model import VSMPredictor

    patch = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    predictor = VSMPredictor(*tiny_vsm)
    predictor.set_image(patch)
    full, bare = predictor.locate("dog"), predictor.locate("dog", cue=False)
    assert bare.mask_logits is None and full.mask_logits.shape == (240, 320)
    np.testing.assert_array_equal(bare.scores, full.scores)
    np.testing.assert_array_equal(bare.boxes_xyxy, full.boxes_xyxy)


def test_answers_are_cleaned_as_the_original_cleans_them(tiny_vsm, monkeypatch):
    from vsm_kit.model import VSMPredictor

    predictor = VSMPredictor(*tiny_vsm)
    predictor.set_image(np.zeros((64, 80, 3), np.uint8))
    asked = []

    def decode(ids, skip_special_tokens=False):
        asked.append(skip_special_tokens)
        return "\n the  cup\nis    most likely to appear on the mat \n"

    monkeypatch.setattr(predictor.tokenizer, "decode", decode)
    # newlines go (not made spaces), each pair of spaces becomes one in one pass, ends stripped
    assert (
        predictor.answer("Where?", max_new_tokens=2)
        == "the cupis  most likely to appear on the mat"
    )
    assert asked == [True]


def test_an_answer_loses_the_prompt_markers_so_its_phrase_can_be_segmented(tiny_vsm, monkeypatch):
    from vsm_kit.model import VSMPredictor
    from vsm_kit.search.cues import context_phrase

    predictor = VSMPredictor(*tiny_vsm)
    predictor.set_image(np.zeros((64, 80, 3), np.uint8))
    # a model trained on detection replies answers the location question with one of them
    monkeypatch.setattr(predictor.tokenizer, "decode", lambda ids, **kw: "Sure, [LOC].<image>")
    answer = predictor.answer("Where?", max_new_tokens=2)
    assert answer == "Sure, ."
    assert predictor.segment(context_phrase(answer, "cup")).shape == (64, 80)
