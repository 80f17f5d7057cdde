"""A form over `RunConfig`: edit, validate inline, save/load YAML, launch and stop a run."""

from __future__ import annotations

import copy
import html
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import get_args, get_origin, get_type_hints

import ipywidgets as W

from vsm_kit.errors import VsmKitError
from vsm_kit.train import (
    ARCHS,
    GIOU_MODES,
    LIVE,
    PRECISIONS,
    ConfigError,
    RunConfig,
    TrainingRun,
)

from ._guard import Panel, error_html, guarded

CHOICES = {
    "precision": PRECISIONS,
    "weights.arch": ARCHS,
    "loss.giou": GIOU_MODES,
    "zero.stage": (0, 1, 2, 3),
}
SECTION_TITLES = {"optim": "Optimiser", "lora": "LoRA", "zero": "ZeRO"}
INVALID_BORDER = "1px solid #b00020"
STYLE = {"description_width": "200px"}


class RunForm(Panel):
    """One accordion section per part of `RunConfig`, generated from its dataclasses.

    `controls` maps dotted field names (`"optim.lr"`, `"data.mix.vqa.rate"`) to their widgets.
    Drive it from code with `config`, `set_config(cfg)`, `save(path)`, `load(path)`, `launch()`,
    `stop()` and `refresh_status()`; `error_field`/`message` show the first invalid field.
    """

    def __init__(self, config: RunConfig | None = None, start: Callable | None = None):
        self._start = start
        self.run = None
        self.error_field: str | None = None
        self.controls: dict[str, W.Widget] = {}
        self._leaves: dict[str, tuple[tuple[str, ...], object]] = {}
        self._template: dict = {}
        self._filling = False
        self._valid = False
        self.sections = W.Accordion()
        self.message = W.HTML()
        self.path = W.Text(placeholder="run.yaml", description="YAML", continuous_update=False)
        self.save_button = W.Button(description="Save", icon="save")
        self.load_button = W.Button(description="Load", icon="folder-open")
        self.launch_button = W.Button(description="Launch", icon="play", button_style="success")
        self.stop_button = W.Button(description="Stop", icon="stop", button_style="danger")
        self.status = W.HTML()
        self.output = W.Output()
        self.save_button.on_click(lambda _: self.save())
        self.load_button.on_click(lambda _: self.load())
        self.launch_button.on_click(lambda _: self.launch())
        self.stop_button.on_click(lambda _: self.stop())
        self.widget = W.VBox(
            [
                self.sections,
                self.message,
                W.HBox([self.path, self.save_button, self.load_button]),
                W.HBox([self.launch_button, self.stop_button]),
                self.status,
                self.output,
            ]
        )
        self.set_config(config or RunConfig())
        self.refresh_status()

    def show_error(self, message: str) -> None:
        self.message.value = error_html(message)

    # ---- config ↔ controls -------------------------------------------------------------------
    @property
    def config(self) -> RunConfig:
        """The config the controls describe (`ConfigError` when one cannot be parsed)."""
        d = copy.deepcopy(self._template)
        for path, (keys, hint) in self._leaves.items():
            node = d
            for key in keys[:-1]:
                node = node[key]
            node[keys[-1]] = _read(hint, self.controls[path], path)
        return RunConfig.from_dict(d)

    def set_config(self, cfg: RunConfig) -> None:
        """Fill the controls from `cfg`, rebuilding them when its data mix has other names."""
        if _shape(RunConfig, cfg) != [keys for keys, _ in self._leaves.values()]:
            self._build(cfg)
        self._template = cfg.to_dict()
        self._filling = True
        try:
            for path, (keys, hint) in self._leaves.items():
                value = self._template
                for key in keys:
                    value = value[key]
                _write(hint, self.controls[path], value)
        finally:
            self._filling = False
        self._check()

    def _build(self, cfg: RunConfig) -> None:
        self.controls, self._leaves = {}, {}
        run, sections, titles = [], [], []
        hints = get_type_hints(RunConfig)
        for f in fields(RunConfig):
            built = self._controls(hints[f.name], getattr(cfg, f.name), (f.name,))
            if is_dataclass(hints[f.name]):
                sections.append(W.VBox(built))
                titles.append(SECTION_TITLES.get(f.name, f.name.capitalize()))
            else:
                run += built
        self.sections.children = [W.VBox(run), *sections]
        self.sections.titles = ("Run", *titles)

    def _controls(self, hint, value, keys: tuple[str, ...]) -> list[W.Widget]:
        if is_dataclass(hint):
            hints = get_type_hints(hint)
            return [
                w
                for f in fields(hint)
                for w in self._controls(hints[f.name], getattr(value, f.name), (*keys, f.name))
            ]
        if get_origin(hint) is dict:
            inner = get_args(hint)[1]
            children = [w for k, v in value.items() for w in self._controls(inner, v, (*keys, k))]
            title = W.HTML(f"<b>{html.escape(keys[-1])}</b>")
            return [W.VBox([title, *children], layout=W.Layout(margin="0 0 0 1.5em"))]
        path = ".".join(keys)
        widget = _make(hint, path, keys[-1])
        for box in _inputs(widget):
            box.observe(self._changed, names="value")
        self.controls[path], self._leaves[path] = widget, (keys, hint)
        return [widget]

    # ---- validation --------------------------------------------------------------------------
    def _changed(self, _change) -> None:
        if not self._filling:
            self._check()

    @guarded
    def _check(self) -> RunConfig | None:
        """Validate the controls; mark the first wrong field and show its message."""
        self._mark(None)
        try:
            cfg = self.config.validate(check_paths=True)
        except ConfigError as err:
            self._mark(err.field)
            self.show_error(str(err))
            cfg = None
        else:
            self.message.value = ""
        self._valid = cfg is not None
        self._set_buttons()
        return cfg

    def _mark(self, field_name: str | None) -> None:
        if self.error_field is not None and (old := self._control_for(self.error_field)):
            old.layout.border = ""
        self.error_field = field_name
        if field_name is not None and (widget := self._control_for(field_name)):
            widget.layout.border = INVALID_BORDER

    def _control_for(self, field_name: str) -> W.Widget | None:
        """The control of `field_name`, of the field holding it, or the first one inside it."""
        parts = field_name.split(".")
        for n in range(len(parts), 0, -1):
            if (path := ".".join(parts[:n])) in self.controls:
                return self.controls[path]
        inside = [w for p, w in self.controls.items() if p.startswith(field_name + ".")]
        return inside[0] if inside else None

    # ---- YAML --------------------------------------------------------------------------------
    def _yaml_path(self, path: str | Path | None) -> Path:
        if path is not None:
            self.path.value = str(path)
        if not self.path.value.strip():
            raise VsmKitError("path: give the YAML file's path")
        return Path(self.path.value.strip()).expanduser()

    @guarded
    def save(self, path: str | Path | None = None) -> Path:
        """Write the form's config to `path` (default: the path box)."""
        written = self.config.save(self._yaml_path(path))
        if self._valid:
            self.message.value = f"saved {html.escape(str(written))}"
        return written

    @guarded
    def load(self, path: str | Path | None = None) -> RunConfig:
        """Fill the form from the YAML file at `path` (default: the path box)."""
        cfg = RunConfig.load(self._yaml_path(path))
        self.set_config(cfg)
        return cfg

    # ---- run ---------------------------------------------------------------------------------
    def _live(self) -> bool:
        return self.run is not None and self.run.status in LIVE

    @property
    def live_run(self):
        """The run Launch started, while it is starting or running; else None."""
        return self.run if self._live() else None

    def _set_buttons(self) -> None:
        self.launch_button.disabled = not self._valid or self._live()
        self.stop_button.disabled = not self._live()

    @guarded
    def launch(self):
        """Validate, then `start(config)`; the returned run is kept as `run`."""
        if self._live():
            raise VsmKitError(f"a run is {self.run.status} in {self.run.output_dir}; stop it first")
        cfg = self._check()
        if cfg is None:
            return None
        start = self._start or TrainingRun.start
        self.run = start(cfg)
        self.refresh_status()
        return self.run

    @guarded
    def stop(self) -> None:
        """Ask the current run to stop."""
        if self.run is None:
            raise VsmKitError("no run to stop")
        self.run.stop()
        self.refresh_status()

    def refresh_status(self) -> None:
        """Show the run's status (call it from a timer or after each step)."""
        if self.run is None:
            self.status.value = "no run launched"
        else:
            self.status.value = (
                f"run <b>{html.escape(self.run.status)}</b> · "
                f"{html.escape(str(self.run.output_dir))}"
            )
        self._set_buttons()


def _shape(hint, value, keys: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The key paths of the leaf fields of `value`, in form order."""
    if is_dataclass(hint):
        hints = get_type_hints(hint)
        return [
            leaf
            for f in fields(hint)
            for leaf in _shape(hints[f.name], getattr(value, f.name), (*keys, f.name))
        ]
    if get_origin(hint) is dict:
        inner = get_args(hint)[1]
        return [leaf for k, v in value.items() for leaf in _shape(inner, v, (*keys, k))]
    return [keys]


def _optional(hint):
    """`X` for `X | None`, else None."""
    args = get_args(hint)
    return next(a for a in args if a is not type(None)) if type(None) in args else None


def _make(hint, path: str, name: str) -> W.Widget:
    if path in CHOICES:
        return W.Dropdown(options=CHOICES[path], description=name, style=STYLE)
    if get_origin(hint) is tuple:
        label = W.Label(name, layout=W.Layout(width=STYLE["description_width"]))
        return W.HBox([label, *(W.FloatText(layout=W.Layout(width="8em")) for _ in get_args(hint))])
    if get_origin(hint) is list:
        return W.Text(description=name, placeholder="comma-separated", style=STYLE)
    if _optional(hint) is not None:
        return W.Text(description=name, placeholder="empty: none", style=STYLE)
    kind = {bool: W.Checkbox, int: W.IntText, float: W.FloatText}.get(hint, W.Text)
    return kind(description=name, style=STYLE)


def _inputs(widget: W.Widget) -> list[W.Widget]:
    return list(widget.children[1:]) if isinstance(widget, W.HBox) else [widget]


def _read(hint, widget: W.Widget, path: str):
    if get_origin(hint) is tuple:
        return [box.value for box in _inputs(widget)]
    if get_origin(hint) is list:
        return [s.strip() for s in widget.value.split(",") if s.strip()]
    if (inner := _optional(hint)) is not None:
        text = widget.value.strip()
        try:
            return None if not text else inner(text)
        except ValueError:
            raise ConfigError(path, f"expected {inner.__name__} or empty, got {text!r}") from None
    return widget.value


def _write(hint, widget: W.Widget, value) -> None:
    if get_origin(hint) is tuple:
        for box, v in zip(_inputs(widget), value, strict=False):
            box.value = v
    elif get_origin(hint) is list:
        widget.value = ", ".join(value)
    elif _optional(hint) is not None:
        widget.value = "" if value is None else str(value)
    else:
        if isinstance(widget, W.Dropdown) and value not in widget.options:
            widget.options = (*widget.options, value)  # shown, then flagged by validation
        widget.value = value
