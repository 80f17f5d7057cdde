"""The notebooks in JupyterLab, driven through Chromium: widgets render, react to clicks and
update live, and a widget that fails makes its scenario fail with the error in the report."""

from __future__ import annotations

import re

import nbformat
import pytest

from vsm_kit.search import load_bench

from .labpage import (
    RUN_TIMEOUT,
    enter,
    move_slider,
    open_notebook,
    output_of,
    run_all,
    run_all_above,
    run_cell,
    wait_until,
    widget_images,
)

INSPECT = "01_inspect_datasets.ipynb"
TRAIN = "03_train.ipynb"
SEARCH = "05_visual_search.ipynb"
# a source dropdown whose callback raises once a source is shown; either inside the browser's
# guard (the traceback shows in its Output area) or without it (it shows in the Log Console)
BROKEN_CALLBACK = {
    "guarded": """from widgets._guard import guarded

select = DatasetBrowser.select


@guarded
def select_then_fail(self, name):
    if self._open:
        raise RuntimeError("deliberately broken source callback")
    select(self, name)


DatasetBrowser.select = select_then_fail
""",
    "unguarded": """select = DatasetBrowser.select


def select_then_fail(self, name):
    if self._open:
        raise RuntimeError("deliberately broken source callback")
    select(self, name)


DatasetBrowser.select = select_then_fail
""",
}


def cell_index(lab, notebook: str, code: str) -> int:
    """The index of the first cell of `notebook` whose source contains `code`."""
    nb = nbformat.read(lab.root / "notebooks" / notebook, as_version=4)
    return next(i for i, c in enumerate(nb.cells) if code in c.source)


def check_dataset_browser(page, lab, notebook: str) -> None:
    """Run all of `notebook` (01 or a variant); its dataset browser shows a picture, choosing
    another source in the dropdown shows another picture, and so does moving the sample
    slider."""
    open_notebook(page, lab, notebook)
    run_all(page)
    browser = output_of(page, cell_index(lab, notebook, "DatasetBrowser(data_dir)"))

    def picture() -> str:
        return "".join(widget_images(page, browser))

    first = wait_until(page, picture, "the dataset browser shows a picture")
    source = browser.get_by_label("source", exact=True)
    other = "refclef" if source.input_value() != "refclef" else "refcoco"
    source.select_option(other)
    named = browser.get_by_text(f"{other} record")
    wait_until(
        page,
        lambda: picture() not in ("", first) and named.is_visible(),
        f"choosing source {other!r} shows another picture",
    )
    shown = picture()
    move_slider(browser.locator(".widget-slider").filter(has_text="sample"), 1)
    second = browser.get_by_text(re.compile(r"\(2/\d+ shown\)"))
    wait_until(
        page,
        lambda: picture() not in ("", shown) and second.is_visible(),
        "moving the sample slider shows the second match",
    )


def test_dataset_browser_follows_its_dropdown_and_slider(page, lab):
    check_dataset_browser(page, lab, INSPECT)


@pytest.mark.parametrize("variant", sorted(BROKEN_CALLBACK))
def test_a_failing_widget_callback_fails_its_scenario_with_the_error(page, lab, variant):
    nb = nbformat.read(lab.root / "notebooks" / INSPECT, as_version=4)
    after_imports = cell_index(lab, INSPECT, "from widgets import DatasetBrowser") + 1
    nb.cells.insert(after_imports, nbformat.v4.new_code_cell(BROKEN_CALLBACK[variant]))
    broken = f"01_broken_{variant}.ipynb"
    nbformat.write(nb, lab.root / "notebooks" / broken)
    with pytest.raises(AssertionError, match="deliberately broken source callback") as failure:
        check_dataset_browser(page, lab, broken)
    assert "shows another picture" in str(failure.value)


def test_run_form_validates_launches_monitors_and_stops(page, lab):
    open_notebook(page, lab, TRAIN)
    at = cell_index(lab, TRAIN, "form = RunForm(")
    run_all_above(page, at + 1)
    form = output_of(page, at)
    launch = form.get_by_role("button", name="Launch")
    launch.wait_for()

    form.get_by_text("Optimiser", exact=True).click()
    lr = form.get_by_label("lr", exact=True)
    enter(lr, "-0.5")
    message = form.get_by_text(re.compile(r"^optim\.lr: "))
    wait_until(
        page,
        lambda: message.is_visible() and launch.is_disabled(),
        "a negative learning rate is named inline and blocks Launch",
    )
    enter(lr, "0.001")
    wait_until(page, launch.is_enabled, "a valid learning rate enables Launch")
    assert not message.is_visible()

    # 200 steps, far more than the test waits for, so that Stop ends a running run
    enter(form.get_by_label("epochs", exact=True), "40")
    form.get_by_text("Run", exact=True).click()
    enter(form.get_by_label("max_steps", exact=True), "200")
    launch.click()
    wait_until(
        page,
        form.get_by_text(re.compile(r"^run (starting|running) ")).is_visible,
        "Launch starts a run",
    )

    # the notebook's monitor cell takes the run Launch started and follows it in the background,
    # so the kernel is idle and Stop acts while the run goes on
    watch = cell_index(lab, TRAIN, "monitor.watch()")
    run_cell(page, watch)
    monitor = output_of(page, watch)
    status = monitor.locator(".widget-html").first

    def plot() -> str:
        if "failed" in status.inner_text():
            raise AssertionError(f"the run failed: {status.inner_text()}")
        return "".join(widget_images(page, monitor))

    first = wait_until(page, plot, "the monitor draws the loss plot", RUN_TIMEOUT)
    wait_until(page, lambda: plot() not in ("", first), "the loss plot updates", RUN_TIMEOUT)

    def progressed() -> bool:
        step = re.search(r"step (\d+)/200", status.inner_text())
        return bool(step) and int(step[1]) >= 3

    wait_until(page, progressed, "the progress follows the run", RUN_TIMEOUT)
    form.get_by_role("button", name="Stop").click()
    wait_until(page, form.get_by_text(re.compile(r"^run stopped ")).is_visible, "Stop stops it")
    wait_until(page, lambda: "stopped" in status.inner_text(), "the monitor shows it stopped")


def test_search_preview_runs_a_search_and_steps_through_it(page, lab):
    open_notebook(page, lab, SEARCH)
    run_all(page)
    preview = output_of(page, cell_index(lab, SEARCH, "preview = SearchPreview("))
    # another target than the notebook's own search of the first bench image, whose summary is
    # on screen already: the one awaited below is then this click's
    searched = load_bench(lab.root / "runs/demo/world/dataset/vstar_bench").samples[0].target
    target = next(t for t in ("kite", "cup") if t != searched)
    preview.get_by_label("target", exact=True).fill(target)
    preview.get_by_role("button", name="search").click()
    summary = preview.get_by_text(re.compile(rf"^{target}: (found|not found) "))
    wait_until(page, summary.is_visible, "clicking search runs a search and sums it up")
    cue = preview.get_by_text(re.compile(r"^step \d+ · level "))
    last = int(re.match(r"step (\d+)", cue.inner_text())[1])
    assert last >= 1, f"the search visits several patches: {summary.inner_text()}"
    path, heatmap = widget_images(page, preview)
    move_slider(preview.locator(".widget-slider").filter(has_text="step"), -1)

    def moved() -> bool:
        now_path, now_heatmap = widget_images(page, preview)
        shown = cue.inner_text().startswith(f"step {last - 1} ")
        return shown and now_path not in ("", path) and now_heatmap not in ("", heatmap)

    wait_until(page, moved, "moving the step slider shows the step before, its patch and heatmap")
