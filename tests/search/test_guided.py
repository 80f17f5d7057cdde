"""The guided search against a scripted double (tests/search/oracle.py)."""

import numpy as np
import pytest

from vsm_kit.search import SearchConfig, split, visual_search
from vsm_kit.search.cues import CONTEXT_QUESTION

from .oracle import Located, LocatesInTurn, ScriptedOracle, coordinate_image
from .parse import Doc

TARGET = (1600, 1200, 1640, 1240)  # xyxy in a 2048×1536 image


@pytest.fixture(autouse=True)
def _without_spacy(no_spacy):
    """Context cues take the whole phrase here, spaCy or not (`parses` overrides it)."""


def _contains(box_xywh, target=TARGET):
    x, y, w, h = box_xywh
    return x <= target[0] and y <= target[1] and target[2] <= x + w and target[3] <= y + h


def test_finds_a_small_target_following_the_target_cue():
    oracle = ScriptedOracle(TARGET, sees_below=400)
    result = visual_search(oracle, coordinate_image(2048, 1536), "dog")
    assert result.found and result.score == pytest.approx(0.9)
    assert result.box_xywh == (1600, 1200, 40, 40)
    # whole image → the quarter holding the target → its quarter, small enough to see it
    assert [s.box_xywh for s in result.steps] == [
        (0, 0, 2048, 1536),
        (1024, 768, 1024, 768),
        (1536, 1152, 512, 384),
    ]
    assert [s.level for s in result.steps] == [1, 2, 3]
    assert [s.parent for s in result.steps] == [-1, 0, 1]
    assert [s.cue for s in result.steps] == ["target", "target", None]
    assert result.path_length == 3 and result.model_calls == 3 and result.encodes == 3
    assert oracle.patches == [s.box_xywh for s in result.steps]  # each patch encoded once


def test_a_weak_target_cue_falls_back_to_the_context_cue():
    oracle = ScriptedOracle(TARGET, sees_below=400, cue_peak=2.0)  # below the 3.0 minimum
    result = visual_search(oracle, coordinate_image(2048, 1536), "dog")
    assert result.found and result.box_xywh == (1600, 1200, 40, 40)
    assert oracle.questions == [CONTEXT_QUESTION.format("dog")] * 2
    assert oracle.phrases == ["on the red mat"] * 2  # without spaCy: the whole phrase, stripped
    assert [s.cue for s in result.steps] == [
        f"context: {oracle.context_answer}#on the red mat"
    ] * 2 + [None]
    cue = result.steps[0].cue
    assert (cue.kind, cue.question, cue.answer, cue.phrase) == (
        "context",
        CONTEXT_QUESTION.format("dog"),
        oracle.context_answer,
        "on the red mat",
    )
    assert result.to_dict()["steps"][0]["cue"] == f"context: {oracle.context_answer}#on the red mat"
    assert result.model_calls == 3 + 2 * 2


def test_the_context_phrase_is_segmented_as_the_original_cuts_it(parses):
    answer = "The dog is most likely to appear near the dog between the sofa and the lamp."
    parses[" between the sofa and the lamp"] = Doc(
        [(" ", 1, "dep", "SPACE", ""), ("between", 1, "ROOT", "ADP"), ("the", 3, "det", "DET")]
        + [("sofa", 1, "pobj", "NOUN"), ("and", 3, "cc", "CCONJ"), ("the", 6, "det", "DET")]
        + [("lamp", 3, "conj", "NOUN")]
    )
    oracle = ScriptedOracle(TARGET, sees_below=400, cue_peak=2.0, context_answer=answer)
    result = visual_search(oracle, coordinate_image(2048, 1536), "dog")
    phrase = "region  between the sofa and the lamp"  # two chunks: the phrase, its space kept
    assert oracle.phrases == [phrase] * 2
    assert result.steps[0].cue == f"context: {answer}#{phrase}"


def test_the_target_cue_threshold_decays_with_depth():
    config = SearchConfig(minimum_size=100, minimum_size_scale=100)
    assert [config.cue_threshold(k) for k in (1, 2, 3, 4)] == pytest.approx([6, 4.2, 3.0, 3.0])
    oracle = ScriptedOracle(TARGET, sees_below=200, cue_peak=4.0)
    result = visual_search(oracle, coordinate_image(2048, 1536), "dog", config)
    assert result.found and [s.level for s in result.steps] == [1, 2, 3, 4]
    cues = [s.cue.split(":")[0] if s.cue else None for s in result.steps]
    assert cues == ["context", "context", "target", None]  # 4 < 6, 4 < 4.2, 4 > 3


def test_patches_at_the_minimum_size_are_not_split_and_the_fallback_finds_the_best():
    target = (700, 500, 730, 530)
    # tentative scores grow with depth where the target is, so the best is the deepest one
    oracle = ScriptedOracle(
        target, sees_below=0, miss_score=lambda level, has: 0.2 + 0.05 * level if has else 0.1
    )
    result = visual_search(oracle, coordinate_image(1024, 768), "dog")
    smallest = SearchConfig().smallest_size(1024, 768)  # max(ceil(768 / 4), 224) = 224
    assert len(result.steps) == 1 + 4 + 16  # every patch down to the minimum, then the end
    parents = {s.parent for s in result.steps}
    for s in result.steps:
        if min(s.box_xywh[2:]) <= smallest:
            assert s.index not in parents  # never split
    best = max(result.steps, key=lambda s: s.top_score)
    assert best.level == 3 and _contains(best.box_xywh, target)
    assert result.found and result.score == pytest.approx(0.35)  # ≥ confidence_low 0.3
    assert result.path_length == best.index + 1
    assert result.box_xywh == (700, 500, 30, 30)


def test_the_fallback_below_the_low_confidence_is_a_miss():
    oracle = ScriptedOracle((700, 500, 730, 530), sees_below=0, miss_score=0.25)
    result = visual_search(oracle, coordinate_image(1024, 768), "dog")
    assert not result.found and result.score == pytest.approx(0.25)


def test_every_confident_box_on_the_whole_image_is_returned():
    oracle = ScriptedOracle(
        (10, 10, 50, 50), sees_below=10_000, extra_root_boxes=[(100, 100, 140, 150)]
    )
    result = visual_search(oracle, coordinate_image(640, 480), "dog")
    assert result.found and result.path_length == 1
    assert result.all_boxes_xywh == [(10, 10, 40, 40), (100, 100, 40, 50)]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (
            (0, 0, 100, 300),
            [(0, 0, 100, 75), (0, 75, 100, 75), (0, 150, 100, 75), (0, 225, 100, 75)],
        ),
        (
            (10, 0, 301, 100),
            [(10, 0, 75, 100), (85, 0, 75, 100), (160, 0, 75, 100), (235, 0, 76, 100)],
        ),
        ((0, 0, 101, 99), [(0, 0, 50, 49), (50, 0, 51, 49), (0, 49, 50, 50), (50, 49, 51, 50)]),
    ],
)
def test_split_by_aspect_ratio_with_the_remainder_last(box, expected):
    parts = split(box)
    assert parts == expected
    assert sum(w * h for _, _, w, h in parts) == box[2] * box[3]


def test_result_serialises_to_json_ready_data():
    import json

    result = visual_search(
        ScriptedOracle(TARGET, sees_below=400), coordinate_image(2048, 1536), "dog"
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["found"] and len(data["steps"]) == 3 and "heatmap" not in data["steps"][0]
    assert isinstance(result.steps[0].heatmap, np.ndarray)


class QuadrantCue(LocatesInTurn):
    """Test double that never detects; on the whole image its target cue is one value per
    sub-patch (in `split` order), so the sub-patch scores are set by hand."""

    def __init__(self, values):
        self.values, self.sizes = values, []

    def set_image(self, patch):
        self.sizes.append(patch.shape[:2])

    def locate(self, target, cue=True):
        h, w = self.sizes[-1]
        mask = None
        if cue:  # only the whole image is split here
            mask = np.zeros((h, w))
            for (x, y, bw, bh), value in zip(split((0, 0, w, h)), self.values, strict=True):
                mask[y : y + bh, x : x + bw] = value
        return Located(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0.1]), mask)


@pytest.mark.parametrize(
    ("size", "values", "order"),
    [
        # four equal siblings pushed a, b, c, d leave the heap as a, c, b, d
        ((1024, 768), (10, 10, 10, 10), "acbd"),  # 2×2, a constant cue: every score 0
        ((2048, 600), (10, 10, 10, 10), "acbd"),  # a row of 4
        ((600, 2048), (7, 7, 7, 7), "acbd"),  # a column of 4
        ((1024, 768), (10, 10, 10, 5), "acbd"),  # three tie above the fourth
        ((1024, 768), (6, 10, 8, 5), "bcad"),  # no tie: best first
    ],
)
@pytest.mark.parametrize("batch", [False, True])
def test_equal_siblings_leave_the_queue_in_heap_order(size, values, order, batch):
    config = SearchConfig(minimum_size=550)  # the image is split, its sub-patches are not
    result = visual_search(
        QuadrantCue(values), coordinate_image(*size), "dog", config, batch_siblings=batch
    )
    parts = split((0, 0, *size))
    assert [s.box_xywh for s in result.steps] == [(0, 0, *size)] + [
        parts["abcd".index(k)] for k in order
    ]
    assert not result.found  # nothing detected: every sibling was visited


SCENARIOS = {
    "target cue": dict(target_xyxy=TARGET, sees_below=400),
    "context cue": dict(target_xyxy=TARGET, sees_below=400, cue_peak=2.0),
    "deep": dict(target_xyxy=TARGET, sees_below=200, cue_peak=4.0),
    "fallback": dict(
        target_xyxy=(700, 500, 730, 530),
        sees_below=0,
        miss_score=lambda level, has: 0.2 + 0.05 * level if has else 0.1,
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_identical_paths_with_sibling_batching_on_and_off(name):
    config = SearchConfig(minimum_size=100, minimum_size_scale=100) if name == "deep" else None
    image = coordinate_image(2048, 1536)
    runs = {}
    for batch in (False, True):
        oracle = ScriptedOracle(**SCENARIOS[name])
        seen = []
        result = visual_search(
            oracle, image, "dog", config, batch_siblings=batch, on_step=seen.append
        )
        assert seen == result.steps  # every visit reported, in order
        runs[batch] = (oracle, result)
    (plain_oracle, plain), (batched_oracle, batched) = runs[False], runs[True]
    key = ("found", "box_xywh", "score", "path_length")
    assert [getattr(batched, k) for k in key] == [getattr(plain, k) for k in key]
    assert [s.to_dict() for s in batched.steps] == [s.to_dict() for s in plain.steps]
    for a, b in zip(batched.steps, plain.steps, strict=True):
        assert (a.heatmap is None) == (b.heatmap is None)
        assert a.heatmap is None or np.array_equal(a.heatmap, b.heatmap)
    assert plain_oracle.batches == [] and batched_oracle.batches  # siblings were batched
    assert all(size > 1 for size in batched_oracle.batches)
    # a batched sibling visited later costs no call; the batch itself may locate extra patches
    assert batched.model_calls <= plain.model_calls
    assert batched.encodes >= plain.encodes == len(plain.steps)


def test_describe_gives_the_verdict_box_score_and_cost_in_one_line():
    from vsm_kit.search.guided import SearchResult

    found = SearchResult("red cup", True, (10.4, 20.6, 30, 40), 0.91234, [None] * 5, 3, 7, 5, 1.234)
    assert found.describe() == (
        "red cup: found · box xywh (10, 21, 30, 40) px · score 0.912 · path length 3 of 5 "
        "patches · 7 model calls (5 encodes) · 1.23 s"
    )
    missed = SearchResult("a#b", False, None, 0.0, [None], 0, 1, 1, 0.5)
    assert missed.describe() == (
        "a#b: not found · score 0.000 · path length 0 of 1 patches · 1 model calls "
        "(1 encodes) · 0.50 s"
    )
