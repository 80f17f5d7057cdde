"""Search evaluation over V*Bench-format folders: a scripted double with exact expectations, the
demo world's bench, bad annotations, and `vsm-kit search-eval` with the tiny real model."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vsm_kit.cli import main
from vsm_kit.data.images import load_rgb
from vsm_kit.demo._draw import COLORS
from vsm_kit.errors import MalformedJsonError
from vsm_kit.search import SearchConfig, visual_search
from vsm_kit.search.bench import (
    BenchFormatError,
    BenchOptionError,
    Summary,
    evaluate_bench,
    load_bench,
    summary_table,
    write_log,
)

from .oracle import LocatesInTurn, ScriptedOracle, coordinate_image

W, H = 2048, 1536
# target → (where the double finds it, xyxy; the smaller patch side it sees it below)
PLACES = {
    "dog": ((1600, 1200, 1640, 1240), 400),  # 3 steps: image, quarter, its quarter
    "cat": ((100, 100, 140, 140), 800),  # 2 steps: a quarter is small enough
    "cup": ((300, 1000, 330, 1030), 400),
    "kite": ((1200, 200, 1260, 260), 400),  # its json box is elsewhere: found, but a miss
}


class ScriptedBenchModel(LocatesInTurn):
    """Test double: one `ScriptedOracle` per target name, each seeing every patch."""

    def __init__(self):
        self.oracles = {t: ScriptedOracle(xyxy, sees_below=s) for t, (xyxy, s) in PLACES.items()}

    def set_image(self, patch):
        for oracle in self.oracles.values():
            oracle.set_image(patch)

    def locate(self, target, cue=True):
        return self.oracles[target].locate(target, cue)

    def segment(self, phrase):
        raise AssertionError("the target cue is always strong enough here")

    answer = segment


def _xywh(xyxy):
    return [xyxy[0], xyxy[1], xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]]


def _write(folder, stem, targets, boxes):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coordinate_image(W, H)).save(folder / f"{stem}.png")  # lossless
    ann = {"target_object": targets, "bbox": boxes, "question": "?", "options": ["a", "b"]}
    (folder / f"{stem}.json").write_text(json.dumps(ann))


@pytest.fixture(scope="module")
def scripted_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    _write(root / "direct_attributes", "sa_1", ["dog"], [_xywh(PLACES["dog"][0])])
    _write(root / "direct_attributes", "sa_2", ["cat"], [_xywh(PLACES["cat"][0])])
    wrong = [10, 10, 60, 60]
    _write(root / "relative_position", "sa_3", ["cup", "kite"], [_xywh(PLACES["cup"][0]), wrong])
    Image.fromarray(coordinate_image(64, 64)).save(root / "relative_position" / "sa_4.jpg")
    return root


def test_every_target_is_searched_and_scored(scripted_bench, tmp_path):
    report = evaluate_bench(ScriptedBenchModel(), scripted_bench, progress=False)
    got = [(r.folder, r.image, r.target, r.hit, r.found, r.path_length) for r in report.records]
    assert got == [
        ("direct_attributes", "direct_attributes/sa_1.png", "dog", True, True, 3),
        ("direct_attributes", "direct_attributes/sa_2.png", "cat", True, True, 2),
        ("relative_position", "relative_position/sa_3.png", "cup", True, True, 3),
        ("relative_position", "relative_position/sa_3.png", "kite", False, True, 3),
    ]
    assert [r.iou for r in report.records] == [1.0, 1.0, 1.0, 0.0]
    assert report.records[3].pred_xywh == _xywh(PLACES["kite"][0])
    assert report.unpaired == ["relative_position/sa_4.jpg"]
    s = report.summary
    assert (s.samples, s.hits, s.success_rate) == (4, 3, 0.75)
    assert s.mean_path_length_found == 2.75 and s.mean_path_length_hits == pytest.approx(8 / 3)
    assert s.mean_model_calls == 2.75  # the target cue only: one call per visited patch
    folders = report.per_folder
    assert (folders["direct_attributes"].success_rate, folders["relative_position"].hits) == (1, 1)
    assert folders["direct_attributes"].mean_path_length_found == 2.5

    table = summary_table(report)
    assert [row["folder"] for row in table] == ["direct_attributes", "relative_position", "all"]
    assert table[-1]["success rate"] == 0.75 and table[-1]["mean path length (hits)"] == 2.67
    assert table[-1]["mean path length (found)"] == 2.75
    assert json.loads(json.dumps(report.to_dict()))["summary"]["hits"] == 3
    assert str(report).startswith(
        "3/4 hits (success rate 75.0%), mean path length 2.67 over hits (2.75 when found)"
    )

    lines = write_log(report, tmp_path / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["target"] for line in lines] == ["dog", "cat", "cup", "kite"]
    assert json.loads(lines[0])["gt_xywh"] == [1600, 1200, 40, 40]
    kite = json.loads(lines[3])
    assert (kite["found"], kite["hit"], kite["iou"], kite["path_length"], kite["steps"]) == (
        True,
        False,
        0.0,
        3,
        3,
    )


def test_limit_config_and_batching_pass_through(scripted_bench):
    config = SearchConfig(minimum_size=800)  # quarters are not split
    batched = evaluate_bench(
        ScriptedBenchModel(), scripted_bench, config, batch_siblings=True, limit=2, progress=False
    )
    single = evaluate_bench(ScriptedBenchModel(), scripted_bench, config, limit=2, progress=False)
    assert [r.target for r in batched.records] == ["dog", "cat"]
    # dog: never seen; its fallback below confidence_low is a miss of path length 0
    assert [(r.hit, r.found, r.path_length) for r in batched.records] == [
        (False, False, 0),
        (True, True, 2),
    ]
    assert batched.batch_siblings and not single.batch_siblings
    for key in ("path_length", "steps", "iou"):
        assert [getattr(r, key) for r in batched.records] == [
            getattr(r, key) for r in single.records
        ]
    assert [r.model_calls for r in single.records] == [5, 2]  # the image, then each quarter
    assert [r.model_calls for r in batched.records] == [2, 2]  # the quarters in one call
    assert batched.to_dict()["config"]["minimum_size"] == 800
    with pytest.raises(BenchOptionError, match="(?s)limit must be at least 1, got 0.*Fix"):
        evaluate_bench(ScriptedBenchModel(), scripted_bench, limit=0, progress=False)


@pytest.mark.parametrize(
    ("confidence_low", "found", "hit", "path_length"),
    [(0.3, False, False, 0), (0.05, True, True, 1)],  # the fallback's best score is 0.1
)
def test_only_a_search_that_found_the_target_is_scored_by_iou(
    scripted_bench, confidence_low, found, hit, path_length
):
    config = SearchConfig(minimum_size=800, confidence_low=confidence_low)
    report = evaluate_bench(ScriptedBenchModel(), scripted_bench, config, limit=1, progress=False)
    (dog,) = report.records
    # the fallback's box is the right one (IoU 1) either way; its path leads to the root
    assert (dog.found, dog.hit, dog.path_length, dog.iou, dog.steps) == (
        found,
        hit,
        path_length,
        1.0,
        5,
    )
    assert dog.pred_xywh == _xywh(PLACES["dog"][0])
    s = Summary.of([dog])
    assert (s.hits, s.mean_path_length_found, s.mean_path_length_hits) == (
        (1, 1.0, 1.0) if hit else (0, None, None)
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"target_object": ["dog"]}', "`bbox` is missing"),
        ('{"target_object": ["dog", "cat"], "bbox": [[1, 2, 3, 4]]}', "2 target_object name"),
        ('{"target_object": ["dog"], "bbox": [[1, 2, 3]]}', "is not \\[x, y, w, h\\]"),
        ('{"target_object": ["dog"], "bbox": [[1, 2, 0, 4]]}', "has no area"),
        ('["dog"]', "expected a JSON object"),
    ],
)
def test_a_bad_annotation_names_its_file(tmp_path, content, problem):
    _write(tmp_path / "direct_attributes", "sa_9", ["dog"], [[1, 2, 3, 4]])
    (tmp_path / "direct_attributes" / "sa_9.json").write_text(content)
    with pytest.raises(BenchFormatError, match=f"sa_9.json: .*{problem}"):
        load_bench(tmp_path)


def test_malformed_json_and_missing_folder_are_reported(tmp_path):
    _write(tmp_path / "a", "sa_9", ["dog"], [[1, 2, 3, 4]])
    (tmp_path / "a" / "sa_9.json").write_text('{"target_object": ["dog"], "bbox": [[1, 2')
    with pytest.raises(MalformedJsonError, match="sa_9.json"):
        load_bench(tmp_path)
    with pytest.raises(BenchFormatError, match="not a folder"):
        load_bench(tmp_path / "absent")
    lonely = tmp_path / "b" / "direct_attributes"
    lonely.mkdir(parents=True)
    Image.fromarray(coordinate_image(8, 8)).save(lonely / "sa_1.png")
    with pytest.raises(BenchFormatError, match="no image has an annotation"):
        evaluate_bench(ScriptedBenchModel(), lonely.parent, progress=False)


def _deepest_searched_patches(width: int, height: int) -> list[tuple]:
    """The patches a search that finds nothing visits and does not split (xywh)."""
    oracle = ScriptedOracle((-50, -50, -40, -40), sees_below=0)  # off the image: never found
    visual_search(oracle, coordinate_image(width, height), "cup")
    smallest = SearchConfig().smallest_size(width, height)
    return [p for p in oracle.patches if min(p[2], p[3]) <= smallest]


def test_the_demo_world_bench_matches_what_was_drawn(demo_world):
    root = demo_world.dataset / "vstar_bench"
    bench = load_bench(root)
    assert bench.unpaired == []
    assert sorted({s.folder for s in bench.samples}) == ["direct_attributes", "relative_position"]
    truth = {
        (r.image, t.text): t.boxes_xyxy[0].tolist()
        for r in demo_world.truth["vstar_bench"]
        for t in r.targets
    }
    got = {
        (s.image.relative_to(demo_world.dataset).as_posix(), s.target): s.box_xywh
        for s in bench.samples
    }
    assert got.keys() == truth.keys() and len(got) == 6 + 3 * 2
    for key, (x, y, w, h) in got.items():
        assert truth[key] == [x, y, x + w, y + h]
    for image in sorted({s.image for s in bench.samples}):
        assert image.suffix == ".jpg" and image.stem.startswith("sa_")
        pixels = load_rgb(image)
        assert 1024 <= max(pixels.shape[:2]) <= 2048
        ann = json.loads(image.with_suffix(".json").read_text())
        boxes = np.array(ann["bbox"])
        assert boxes.dtype.kind == "i" and (boxes[:, 2:] < 80).all()  # small targets
        assert (boxes[:, 2] * boxes[:, 3] <= 0.002 * pixels.shape[0] * pixels.shape[1]).all()
        deepest = _deepest_searched_patches(pixels.shape[1], pixels.shape[0])
        for x, y, w, h in boxes:  # whole in one patch the search does not split
            assert any(
                px <= x and py <= y and x + w <= px + pw and y + h <= py + ph
                for px, py, pw, ph in deepest
            )
        # among distractors: outside the targets' boxes, 4 more saturated shapes of target size
        saturated = np.ptp(pixels.astype(int), axis=2) > 80
        for x, y, w, h in boxes:
            saturated[y : y + h, x : x + w] = False
        parts, n = ndimage.label(saturated)
        assert (np.bincount(parts.ravel())[1:] >= 150).sum() >= 4
        centers = boxes[:, :2] + boxes[:, 2:] // 2
        if image.parent.name == "direct_attributes":  # the first option names the drawn colour
            color = ann["options"][0].removesuffix(".").split()[-1]
            ((x, y, w, h),) = boxes  # the colour most of its middle shows (texture marks aside)
            middle = pixels[y + h // 3 : y + h - h // 3, x + w // 3 : x + w - w // 3]
            rgb = np.asarray(list(COLORS.values()))
            nearest = np.abs(middle.reshape(-1, 1, 3).astype(int) - rgb).sum(-1).argmin(1)
            votes = np.bincount(nearest, minlength=len(COLORS))
            assert len(ann["options"]) == 4 and list(COLORS)[votes.argmax()] == color
        else:  # the first option tells which side the first target is on
            a, b = ann["target_object"]
            side = "left" if centers[0][0] < centers[1][0] else "right"
            assert ann["options"][0] == f"The {a} is on the {side} side of the {b}."


def test_search_eval_cli_with_the_tiny_model(demo_world, tmp_path, capsys):
    w = demo_world.weights
    log = tmp_path / "eval.jsonl"
    args = ["search-eval", "--model", str(w / "vsm-tiny"), "--owlvit", str(w / "owlvit-tiny")]
    args += ["--bench", str(demo_world.dataset / "vstar_bench"), "--device", "cpu"]
    assert main([*args, "--limit", "2", "--minimum-size", "600", "--log", str(log)]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[0])["summary"]
    assert summary["samples"] == 2
    assert out[1].startswith(f"{summary['hits']}/2 hits") and out[1].endswith(str(log))
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["folder"] for r in records] == ["direct_attributes"] * 2
    for r in records:
        assert 1 <= r["steps"] <= 5 and r["encodes"] <= 5  # image + at most its quarters
        assert r["path_length"] <= r["steps"] and (r["path_length"] > 0) == r["found"]
        assert r["model_calls"] >= r["steps"] and r["hit"] == (r["found"] and r["iou"] > 0.5)
    assert summary["hits"] == sum(r["hit"] for r in records)
    assert summary["success_rate"] == summary["hits"] / 2


def test_hidden_folders_such_as_notebook_checkpoints_are_skipped(tmp_path):
    _write(tmp_path / "direct_attributes", "sa_1", ["dog"], [[1, 2, 3, 4]])
    _write(tmp_path / "direct_attributes" / ".ipynb_checkpoints", "sa_1", ["dog"], [[1, 2, 3, 4]])
    bench = load_bench(tmp_path)
    assert [s.image.relative_to(tmp_path).as_posix() for s in bench.samples] == [
        "direct_attributes/sa_1.png"
    ]
