import json
import re

import numpy as np
import pytest
import torch

from vsm_kit.cli import main
from vsm_kit.data import open_source
from vsm_kit.model.predictor import PredictorError, VSMPredictor


@pytest.fixture(scope="module")
def predictor_and_record(tiny_vsm, demo_world):
    rec = open_source("cocostuff", demo_world.dataset)[0]
    p = VSMPredictor(*tiny_vsm)
    p.set_image(rec.load_image())
    return p, rec


def test_detect_gives_pixel_boxes_sorted_by_score(predictor_and_record, demo_world):
    p, rec = predictor_and_record
    det = p.detect("car")
    saved = demo_world.weights / "owlvit-tiny"  # the tiny OWL-ViT's input, from its saved configs
    size = json.loads((saved / "preprocessor_config.json").read_text())["size"]["height"]
    patch = json.loads((saved / "config.json").read_text())["vision_config"]["patch_size"]
    patches = (size // patch) ** 2
    assert det.boxes_xyxy.shape == (patches, 4) and det.scores.shape == (patches,)
    assert np.all(np.diff(det.scores) <= 0) and 0 <= det.scores.min() <= det.scores.max() <= 1
    centers = (det.boxes_xyxy[:, :2] + det.boxes_xyxy[:, 2:]) / 2
    assert centers[:, 0].max() <= rec.width + 1e-3 and centers[:, 1].max() <= rec.height + 1e-3
    again = p.detect("car")  # cached features: same answer
    assert np.array_equal(again.boxes_xyxy, det.boxes_xyxy)
    assert not np.array_equal(p.detect("grass").scores, det.scores)


def _greedy_answer(p, question: str, max_new_tokens: int) -> str:
    """Greedy decoding done by hand: a full forward over the growing sequence per token, stop
    at `</s>`, the original's text clean-up."""
    import torch

    from vsm_kit.model.conversation import image_prompt, tokenize_with_image

    ids = tokenize_with_image(image_prompt(question), p.tokenizer)
    clip = p._require_image()["clip"]
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            row = torch.tensor([ids + new])
            embeds, _, _ = p.model.embed_with_image(row, clip)
            token = int(p.model(inputs_embeds=embeds).logits[0, -1].argmax())
            if token == p.ids.eos:
                break
            new.append(token)
    text = p.tokenizer.decode(new, skip_special_tokens=True)
    return text.replace("\n", "").replace("  ", " ").strip()


def test_segment_and_answer(predictor_and_record):
    p, rec = predictor_and_record
    mask = p.segment("car")
    assert mask.shape == (rec.height, rec.width) and np.isfinite(mask).all()
    text = p.answer("What is in the image?", max_new_tokens=8)
    assert text == _greedy_answer(p, "What is in the image?", 8)


@pytest.mark.parametrize("marker", ["<image>", "[LOC]"])
def test_a_prompt_marker_in_the_text_is_refused(predictor_and_record, marker):
    p, _ = predictor_and_record
    with pytest.raises(PredictorError, match=f"target 'a {re.escape(marker)}' .*Fix: remove"):
        p.detect(f"a {marker}")
    with pytest.raises(PredictorError, match="question .*Fix: remove"):
        p.answer(f"What is {marker}?", max_new_tokens=2)


def test_bf16_and_missing_image(tiny_vsm, predictor_and_record, demo_world):
    _, rec = predictor_and_record
    with pytest.raises(PredictorError, match="no image is set; Fix: call set_image"):
        VSMPredictor(*tiny_vsm).detect("car")
    w = demo_world.weights
    bf16 = VSMPredictor.from_pretrained(
        w / "vsm-tiny", owlvit=w / "owlvit-tiny", device="cpu", dtype=torch.bfloat16
    )
    assert bf16.dtype == torch.bfloat16
    bf16.set_image(rec.load_image())
    assert np.isfinite(bf16.detect("car").scores).all()


def test_cli_detect_json_reads_the_detector_from_the_checkpoint(demo_world, capsys):
    """The demo world's tiny VSM is in the original layout (no architecture block): without
    --owlvit its OWL-ViT sizes come from its tensors, with the same answer."""
    rec = open_source("cocostuff", demo_world.dataset)[0]
    w = demo_world.weights
    args = ["detect", "--model", str(w / "vsm-tiny"), "--image", str(rec.image_path)]
    args += ["--target", "dog", "--json", "--top", "3", "--device", "cpu"]
    answers = []
    for extra in ([], ["--owlvit", str(w / "owlvit-tiny")]):
        assert main(args + extra) == 0
        answers.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    out = answers[0]
    assert out["target"] == "dog" and len(out["detections"]) == 3
    assert len(out["detections"][0]["box_xyxy"]) == 4
    assert answers[1] == out


def test_locate_is_detect_and_segment_from_one_pass(predictor_and_record):
    predictor, _ = predictor_and_record
    loc = predictor.locate("car")
    det = predictor.detect("car")
    np.testing.assert_allclose(loc.boxes_xyxy, det.boxes_xyxy, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(loc.scores, det.scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loc.mask_logits, predictor.segment("car"), rtol=1e-5, atol=1e-5)
