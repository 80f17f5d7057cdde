"""A live view of a training run: progress bar, status line and loss curves."""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as W

from vsm_kit.train import LIVE, TrainingRun, skipped_images
from vsm_kit.viz import latest_by_step, plot_training, render_png

from ._guard import Panel, error_html


class RunMonitor(Panel):
    """`RunMonitor(run)`; `watch()` refreshes from a background thread, leaving the kernel free
    for clicks (the form's Stop); `follow()` refreshes in the caller until the run ends; `wait()`
    blocks until it has ended (tests call `refresh()`).

    The status line follows every refresh; the figure is redrawn at most once per
    `PLOT_COST` × its last drawing time (and always once the run has ended), so that the
    kernel's plotting takes about 5 % of a core, not a third of one from the run it watches
    (0.7 s a figure against a 2 s poll, on 2 cores beside 2 training ranks)."""

    PLOT_COST = 20

    def __init__(self, run: TrainingRun):
        self.run = run
        self.progress = W.IntProgress(min=0, max=1, description="steps")
        self.status = W.HTML()
        self.plot = W.Image(format="png")
        self.widget = W.VBox([W.HBox([self.progress, self.status]), self.plot])
        self._seen = -1
        self._next_plot = 0.0  # time.monotonic() before which the figure is not redrawn
        self._watcher: threading.Thread | None = None
        self.refresh()

    def refresh(self) -> str:
        """Read the run's files once and update the view; returns the run's status."""
        status = self.run.status
        history = self.run.history()
        steps = latest_by_step(history, "step")
        total = self.run.config.total_steps
        self.progress.max = total
        self.progress.value = steps[-1]["step"] if steps else 0
        line = f"<b>{html.escape(status)}</b> · step {self.progress.value}/{total}"
        if steps:
            line += f" · loss {steps[-1]['loss']:.4f} · lr {steps[-1]['lr']:.2g}"
        if skipped := skipped_images(history):
            names = ", ".join(html.escape(p) for p in skipped[-3:])
            line += f" · <span title='{names}'>{len(skipped)} unreadable image(s) skipped</span>"
        self.status.value = line + (error_html(self.run.error) if self.run.error else "")
        due = time.monotonic() >= self._next_plot or status not in LIVE
        if len(history) != self._seen and steps and due:
            self._seen = len(history)
            start = time.monotonic()
            self.plot.value = render_png(plot_training(history), dpi=70)
            self._next_plot = start + self.PLOT_COST * (time.monotonic() - start)
        return status

    def follow(self, poll: float = 2.0) -> str:
        """Refresh every `poll` seconds until the run has ended; returns its final status."""
        while (status := self.refresh()) in LIVE:
            time.sleep(poll)
        return status

    def watch(self, poll: float = 2.0) -> None:
        """Follow the run from a background thread and return at once."""
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(
                target=self._watch, args=(poll,), name="run-monitor", daemon=True
            )
            self._watcher.start()

    def _watch(self, poll: float) -> None:
        try:
            self.follow(poll)
        except Exception as err:  # a thread's exception would vanish: show it on the panel
            self.status.value += error_html(f"monitor stopped: {type(err).__name__}: {err}")

    def wait(self, poll: float = 2.0) -> str:
        """Block until the run has ended (joining `watch`'s thread); returns its final status."""
        if self._watcher is not None:
            self._watcher.join()
            return self.refresh()
        return self.follow(poll)
