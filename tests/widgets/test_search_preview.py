"""The search preview driven from code: a scripted double for the algorithm, the tiny model once."""

import io
from datetime import UTC, datetime

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from vsm_kit.search import SearchConfig
from widgets import SearchPreview
from widgets.search_preview import SearchPreviewError

from ..search.oracle import ScriptedOracle, coordinate_image

TARGET = (1600, 1200, 1640, 1240)  # xyxy in a 2048×1536 coordinate image: found in 3 steps


@pytest.fixture
def preview():
    panel = SearchPreview(ScriptedOracle(TARGET, sees_below=400))
    panel.load_array(coordinate_image(2048, 1536))
    return panel


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def test_run_reports_every_step_and_the_slider_walks_the_path(preview):
    reports = []
    preview.progress.observe(lambda ch: reports.append(ch["new"]), names="value")
    figures = plt.get_fignums()
    result = preview.run("dog")
    assert result is preview.result and result.found and len(result.steps) == 3
    assert [r.split(" patches visited")[0] for r in reports if "visited" in r] == ["1", "2", "3"]
    assert "patch (1536, 1152) 512×384" in reports[-1]
    assert (preview.step.min, preview.step.max, preview.step.value) == (0, 2, 2)
    assert "found" in preview.summary.value and "score 0.900" in preview.summary.value
    assert "(1600, 1200, 40, 40)" in preview.summary.value
    assert "detected" in preview.cue.value

    shown = {}
    for k, cue in enumerate(["target cue", "target cue", "detected"]):
        preview.step.value = k  # as dragging the slider does
        shown[k] = (bytes(preview.path_image.value), bytes(preview.step_image.value))
        assert all(png.startswith(b"\x89PNG") for png in shown[k])
        assert f"step {k}</b>" in preview.cue.value and cue in preview.cue.value
    assert len({heat for _, heat in shown.values()}) == 3
    assert len({path for path, _ in shown.values()}) == 3
    preview.show_step(0)
    assert preview.step.value == 0 and bytes(preview.step_image.value) == shown[0][1]
    assert plt.get_fignums() == figures  # every figure closed after rendering


def test_context_cue_text_names_the_answer_and_phrase():
    panel = SearchPreview(ScriptedOracle(TARGET, sees_below=400, cue_peak=2.0))
    panel.load_array(coordinate_image(2048, 1536))
    panel.run("dog")
    panel.show_step(0)
    assert "context cue" in panel.cue.value and "on the red mat" in panel.cue.value


def test_a_hash_in_the_answer_reaches_the_cue_text_whole():
    answer = "The dog is most likely to appear on mat #3."
    oracle = ScriptedOracle(TARGET, sees_below=400, cue_peak=2.0, context_answer=answer)
    panel = SearchPreview(oracle)
    panel.load_array(coordinate_image(2048, 1536))
    panel.run("dog")
    panel.show_step(0)
    assert f"answered “{answer}”; segmented “on mat #3”" in panel.cue.value


def test_errors_show_in_the_status_line_and_do_not_raise(tmp_path):
    panel = SearchPreview(ScriptedOracle(TARGET))
    assert panel.run("dog") is None and "Choose an image first" in panel.status.value
    panel.load_array(coordinate_image(512, 384))
    assert panel.run("  ") is None and "Type a target" in panel.status.value
    missing = tmp_path / "nowhere.png"
    assert panel.load_path(missing) is None and str(missing) in panel.status.value
    assert panel.image.shape == (384, 512, 3)  # the previous image stays chosen
    assert panel.load_upload([{"name": "junk.png", "content": b"not an image"}]) is None
    assert "Cannot decode image junk.png" in panel.status.value
    assert panel.load_upload(()) is None and "no file" in panel.status.value
    assert panel.load_sample("cocostuff", 0) is None and "data_dir" in panel.status.value
    assert panel.show_step(0) is None and "Run a search first" in panel.status.value


def test_lazy_model_dir_reports_a_missing_folder(tmp_path):
    panel = SearchPreview(model_dir=tmp_path / "no-model", device="cpu")
    panel.load_array(coordinate_image(512, 384))
    assert panel.run("dog") is None
    assert "model config" in panel.status.value and "no-model" in panel.status.value
    assert not panel.button.disabled
    with pytest.raises(SearchPreviewError, match="either model= .* or model_dir="):
        SearchPreview()


def test_path_and_upload_load_the_same_pixels(tmp_path):
    image = coordinate_image(300, 200)
    file = tmp_path / "picture.png"
    file.write_bytes(_png(image))
    panel = SearchPreview(ScriptedOracle(TARGET))
    assert np.array_equal(panel.load_path(file), image)
    assert panel.path.value == str(file) and "picture.png" in panel.status.value
    assert bytes(panel.path_image.value).startswith(b"\x89PNG")
    data = _png(image[::-1])
    upload = {"name": "again.png", "type": "image/png", "size": len(data), "content": data}
    panel.upload.value = ({**upload, "last_modified": datetime.now(UTC)},)
    assert np.array_equal(panel.image, image[::-1]) and "again.png" in panel.status.value


def test_a_new_image_clears_the_previous_search(preview):
    preview.run("dog")
    preview.load_array(coordinate_image(512, 384))
    assert preview.result is None and preview.step.disabled and preview.summary.value == ""


def test_tiny_model_on_a_dataset_sample(demo_world, tiny_vsm):
    from vsm_kit.model import VSMPredictor

    panel = SearchPreview(
        VSMPredictor(*tiny_vsm),
        data_dir=demo_world.dataset,
        config=SearchConfig(minimum_size=10_000),
    )
    image = panel.load_sample("cocostuff", 0)
    assert image.dtype == np.uint8 and "cocostuff record 0" in panel.status.value
    panel.target.value = "dog"
    panel.button.click()
    result = panel.result
    assert result is not None and len(result.steps) == 1 and panel.step.max == 0
    assert f"score {result.score:.3f}" in panel.summary.value
    assert bytes(panel.step_image.value).startswith(b"\x89PNG")
    assert panel.load_sample("cocostuff", 10**6) is None and "outside" in panel.status.value
