"""Run V*'s guided search on one image and step through the patches it visited."""

from __future__ import annotations

import html
import io
from pathlib import Path

import ipywidgets as W
import numpy as np
from PIL import Image

from vsm_kit.data import SOURCES, Source, load_rgb, open_source
from vsm_kit.errors import CorruptImageError, VsmKitError
from vsm_kit.search import SearchConfig, SearchModel, SearchResult, Step, visual_search
from vsm_kit.viz import draw_search_path, draw_step, render_png

from ._guard import Panel, guarded

DPI = 80
THUMBNAIL_SIDE = 1024  # the chosen image is previewed at most this large


class SearchPreviewError(VsmKitError, ValueError):
    """`SearchPreview` built with a bad combination of arguments."""


class SearchPreview(Panel):
    """Image choice (upload, path or dataset sample), target box, search button, live progress,
    then a step slider: the path so far on the whole image beside the step's heatmap on its patch.

    `SearchPreview(model)` or `SearchPreview(model_dir=DIR)` (loaded on the first search, so the
    panel shows at once). Drive it from code with `load_upload(value)`, `load_path(path)`,
    `load_sample(source, index)`, `load_array(image)`, `run(target)` and `show_step(k)`;
    `image` is the chosen picture, `result` the last search, `path_image.value` and
    `step_image.value` the PNGs on screen, `cue.value` and `summary.value` their texts.
    """

    def __init__(
        self,
        model: SearchModel | None = None,
        *,
        model_dir: str | Path | None = None,
        clip: str | Path | None = None,
        owlvit: str | Path | None = None,
        device: str | None = None,
        data_dir: str | Path | None = None,
        config: SearchConfig | None = None,
        batch_siblings: bool = False,
    ):
        if (model is None) == (model_dir is None):
            raise SearchPreviewError(
                "SearchPreview: give either model= (a loaded SearchModel) or model_dir= (a merged "
                "VSM folder), not both and not neither"
            )
        self._model = model
        self._load_args = {"folder": model_dir, "clip": clip, "owlvit": owlvit, "device": device}
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.config = config or SearchConfig()
        self._sources: dict[str, Source] = {}
        self.image: np.ndarray | None = None
        self._described = ""  # the status line naming the chosen image
        self.result: SearchResult | None = None

        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        self.path = W.Text(placeholder="image file", description="path")
        self.open_button = W.Button(description="open", icon="folder-open")
        names = list(SOURCES)
        self.source = W.Dropdown(options=names, value=names[0], description="sample")
        self.index = W.IntText(0, description="index", layout=W.Layout(width="160px"))
        self.sample_button = W.Button(description="load sample", icon="image")
        for control in (self.source, self.index, self.sample_button):
            control.disabled = self.data_dir is None
        self.target = W.Text(placeholder="e.g. red cup", description="target")
        self.batch = W.Checkbox(value=batch_siblings, description="batch siblings", indent=False)
        self.button = W.Button(description="search", icon="search", button_style="primary")
        self.status = W.HTML()
        self.progress = W.HTML()
        self.step = W.IntSlider(
            min=0, max=0, description="step", disabled=True, continuous_update=False
        )
        self.path_image = W.Image(format="png", layout=W.Layout(max_width="560px"))
        self.step_image = W.Image(format="png", layout=W.Layout(max_width="400px"))
        self.cue = W.HTML()
        self.summary = W.HTML()
        self.output = W.Output()

        self.upload.observe(lambda ch: ch["new"] and self.load_upload(ch["new"]), names="value")
        self.open_button.on_click(lambda _: self.load_path())
        self.sample_button.on_click(lambda _: self.load_sample())
        self.button.on_click(lambda _: self.run())
        self.step.observe(self._slider_moved, names="value")
        self.widget = W.VBox(
            [
                W.HBox([self.upload, self.path, self.open_button]),
                W.HBox([self.source, self.index, self.sample_button]),
                W.HBox([self.target, self.batch, self.button]),
                self.status,
                self.progress,
                self.summary,
                self.step,
                W.HBox([self.path_image, self.step_image]),
                self.cue,
                self.output,
            ]
        )

    @property
    def model(self) -> SearchModel:
        """The model given, or the one loaded from `model_dir` on first use."""
        if self._model is None:
            # imported here: `import widgets` stays quick for panels that need no model
            from vsm_kit.model import VSMPredictor

            folder = self._load_args["folder"]
            self.status.value = f"loading the model from {html.escape(str(folder))} …"
            self._model = VSMPredictor.from_pretrained(**self._load_args)
        return self._model

    # choosing the image

    @guarded
    def load_upload(self, value) -> np.ndarray:
        """Decode a `FileUpload` value (its files as dicts with `name` and `content`)."""
        files = [value] if isinstance(value, dict) else list(value)
        if not files:
            raise VsmKitError("The upload holds no file; choose an image file.")
        name, data = files[0].get("name", "upload"), bytes(files[0]["content"])
        try:
            with Image.open(io.BytesIO(data)) as im:
                image = np.array(im.convert("RGB"))
        except Exception as err:  # PIL raises many kinds for bad bytes; all mean the same
            raise CorruptImageError(name, str(err) or type(err).__name__) from None
        return self._set_image(image, f"upload {name}")

    @guarded
    def load_path(self, path: str | Path | None = None) -> np.ndarray:
        """Read the image file at `path` (default: the path box's text)."""
        if path is not None:
            self.path.value = str(path)
        path = self.path.value.strip()
        if not path:
            raise VsmKitError("Type the path of an image file.")
        return self._set_image(load_rgb(Path(path).expanduser()), path)

    @guarded
    def load_sample(self, source: str | None = None, index: int | None = None) -> np.ndarray:
        """Record `index` of dataset `source` (default: the dropdown's and the index box's)."""
        if self.data_dir is None:
            raise VsmKitError("No data folder: give SearchPreview(data_dir=...) to load samples.")
        if source is not None and source not in SOURCES:
            raise VsmKitError(f"Unknown source {source!r}; choose from {', '.join(SOURCES)}.")
        self.source.value = source if source is not None else self.source.value
        self.index.value = index if index is not None else self.index.value
        name, index = self.source.value, self.index.value
        if name not in self._sources:
            self._sources[name] = open_source(name, self.data_dir)
        src = self._sources[name]
        if not 0 <= index < len(src):
            raise VsmKitError(f"{name} has records 0 … {len(src) - 1}; index {index} is outside.")
        record = src[index]
        texts = ", ".join(html.escape(t) for t in record.texts[:6]) or "—"
        image = self._set_image(record.load_image(), f"{name} record {index}")
        self._described += f" · targets: {texts}"
        self.status.value = self._described
        return image

    @guarded
    def load_array(self, image: np.ndarray, name: str = "array") -> np.ndarray:
        """Use `image` (uint8 [H, W, 3]) as it is."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise VsmKitError(f"Expected a uint8 [H, W, 3] image, got {image.dtype} {image.shape}.")
        return self._set_image(image, name)

    def _set_image(self, image: np.ndarray, name: str) -> np.ndarray:
        """Show the new image and forget the previous search."""
        self.image = image
        self._clear_result()
        self.path_image.value = _thumbnail_png(image)
        h, w = image.shape[:2]
        self._described = f"<b>{html.escape(name)}</b> · {w}×{h}"
        self.status.value = self._described
        return image

    def _clear_result(self) -> None:
        self.result = None
        self.step.value, self.step.max, self.step.disabled = 0, 0, True
        self.step_image.value = b""
        self.progress.value = self.summary.value = self.cue.value = ""

    # searching and stepping through

    @guarded
    def run(self, target: str | None = None) -> SearchResult:
        """Search the chosen image for `target` (default: the target box's text)."""
        if target is not None:
            self.target.value = target
        target = self.target.value.strip()
        if self.image is None:
            raise VsmKitError("Choose an image first: upload one, type a path or load a sample.")
        if not target:
            raise VsmKitError("Type a target to search for, e.g. 'red cup'.")
        self._clear_result()
        self.path_image.value = _thumbnail_png(self.image)
        model = self.model
        self.status.value = f"searching for <b>{html.escape(target)}</b> …"
        self.button.disabled = True
        try:
            result = visual_search(
                model,
                self.image,
                target,
                self.config,
                batch_siblings=self.batch.value,
                on_step=self._report,
            )
        finally:
            self.button.disabled = False
        self.result = result
        self.status.value = self._described
        self.summary.value = _summary(result)
        self.step.max, self.step.disabled = len(result.steps) - 1, False
        self.show_step(len(result.steps) - 1)
        return result

    def _report(self, step: Step) -> None:
        """Live progress: one update per visited patch, while the search runs."""
        x, y, w, h = step.box_xywh
        self.progress.value = (
            f"{step.index + 1} patches visited · current: step {step.index}, level {step.level}, "
            f"patch ({x}, {y}) {w}×{h}, top score {step.top_score:.2f}"
        )

    @guarded
    def show_step(self, k: int) -> None:
        """Show step `k`: the path up to it on the whole image and its heatmap on its patch."""
        if self.result is None:
            raise VsmKitError("Run a search first.")
        steps = self.result.steps
        if not 0 <= k < len(steps):
            raise VsmKitError(f"This search has steps 0 … {len(steps) - 1}; {k} is outside.")
        if self.step.value != k:
            self.step.value = k  # re-enters through the observer
            return
        self.path_image.value = render_png(draw_search_path(self.image, self.result, k + 1), DPI)
        self.step_image.value = render_png(draw_step(self.image, steps[k]), DPI)
        self.cue.value = _cue_text(steps[k], self.config)

    def _slider_moved(self, change) -> None:
        if self.result is not None:
            self.show_step(change["new"])


def _thumbnail_png(image: np.ndarray) -> bytes:
    """PNG of `image` scaled down to fit THUMBNAIL_SIDE (a quick look before the search)."""
    picture = Image.fromarray(image)
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def _cue_text(step: Step, config: SearchConfig) -> str:
    """The step in words: its patch, its scores, and the cue that led into its sub-patches."""
    x, y, w, h = step.box_xywh
    head = f"<b>step {step.index}</b> · level {step.level} · patch ({x}, {y}) {w}×{h} · "
    if step.score is not None:
        head += f"queued with score {step.score:.3f} · "
    head += f"top detection score {step.top_score:.2f} · "
    cue = step.cue
    if cue is not None and cue.kind == "target":
        return head + "<b>target cue</b>: the detection's own mask logits, strong enough to follow"
    if cue is not None:
        return (
            f"{head}<b>context cue</b>: asked where the target would be, the model answered "
            f"“{html.escape(cue.answer)}”; segmented “{html.escape(cue.phrase)}”"
        )
    if step.top_score > config.confidence_high:
        return head + "<b>detected</b> here: no cue needed"
    return head + "<b>no cue</b>: the patch is at the minimum size and is not split"


def _summary(result: SearchResult) -> str:
    """`result.describe()` with the target in bold."""
    name = html.escape(result.target)
    return f"<b>{name}</b>" + html.escape(result.describe()).removeprefix(name)
