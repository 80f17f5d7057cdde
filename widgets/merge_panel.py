"""Convert a run's checkpoint and merge it into a verified Hugging Face folder."""

from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from vsm_kit.convert import BEST, DEFAULT_DTYPE, DTYPES, LAST, STAGES, MergeReport, convert_merge

from ._guard import Panel, guarded


class MergePanel(Panel):
    """Run folder, output folder, checkpoint, dtype and verify controls, one button, a
    three-stage progress bar and the verification table. Tests call `run()` instead of clicking.
    The defaults are the original's: the best checkpoint, LLM bf16 with fp32 heads."""

    def __init__(
        self,
        run_dir: str | Path = "",
        out: str | Path = "",
        dtype: str = DEFAULT_DTYPE,
        checkpoint: str = BEST,
    ):
        self.run_dir = W.Text(str(run_dir), description="run folder")
        self.out = W.Text(str(out), description="merged to")
        self.checkpoint = W.Dropdown(
            options=[("best (val det_acc)", BEST), ("last", LAST)],
            value=checkpoint,
            description="checkpoint",
        )
        self.dtype = W.Dropdown(
            options=[(_dtype_label(d), d) for d in DTYPES],
            value=dtype,
            description="dtype",
        )
        self.verify = W.Checkbox(value=True, description="verify", indent=False)
        self.button = W.Button(description="convert + merge", icon="compress")
        self.progress = W.IntProgress(min=0, max=STAGES, description="steps")
        self.status = W.HTML()
        self.report_html = W.HTML()
        self.output = W.Output()
        self.report: MergeReport | None = None
        self.button.on_click(lambda _: self.run())
        self.widget = W.VBox(
            [
                W.HBox([self.run_dir, self.out]),
                W.HBox([self.checkpoint, self.dtype, self.verify, self.button]),
                W.HBox([self.progress, self.status]),
                self.report_html,
                self.output,
            ]
        )

    def _stage(self, n: int, text: str) -> None:
        self.progress.value = n
        self.status.value = html.escape(text)

    @guarded
    def run(self) -> MergeReport:
        """Convert the chosen checkpoint of the run, merge, save and (optionally) verify."""
        self.report = None
        self.report_html.value = ""
        _, self.report = convert_merge(
            Path(self.run_dir.value),
            Path(self.out.value),
            tag=self.checkpoint.value,
            dtype=self.dtype.value,
            verify=self.verify.value,
            progress=self._stage,
        )
        self.report_html.value = _table(self.report)
        return self.report


def _dtype_label(name: str) -> str:
    llm, heads = (str(d).removeprefix("torch.") for d in DTYPES[name])
    return name if llm == heads else f"{name} (LLM {llm}, heads {heads})"


def _table(report: MergeReport) -> str:
    if not report.differences:
        return f"<p>merged in {report.seconds:.1f} s (not verified)</p>"
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.2e}</td></tr>" for k, v in report.differences.items()
    )
    verdict = "passed" if report.verified else "FAILED"
    return (
        f"<table><tr><th>output</th><th>max |Δ| / max |ref|</th></tr>{rows}</table>"
        f"<p>tolerance {report.tolerance:g} ({report.dtype}): <b>{verdict}</b>; "
        f"{report.seconds:.1f} s</p>"
    )
