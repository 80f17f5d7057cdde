"""The panels' error guard under a real IPython kernel, where `Output.__exit__` would swallow an
exception: a button click that hits a bug leaves its traceback in the panel's Output area, a
user error leaves one line there, and neither is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parents[2]

SESSION = """
import json
import numpy as np
from vsm_kit.errors import VsmKitError
from widgets import SearchPreview

class Model:  # a SearchModel whose first call fails: a bug, or a user error
    def __init__(self, error):
        self.error = error
    def set_image(self, image):
        raise self.error

report = {}
for name, error in [("bug", RuntimeError("internal boom")),
                    ("user", VsmKitError("field x is bad. Fix: give y"))]:
    panel = SearchPreview(Model(error))
    panel.load_array(np.zeros((64, 64, 3), np.uint8))
    panel.target.value = "dog"
    panel.button.click()
    report[name] = {"output": "".join(o.get("text", "") for o in panel.output.outputs),
                    "status": panel.status.value, "disabled": panel.button.disabled}
print("REPORT" + json.dumps(report))
"""


@pytest.fixture(scope="module")
def kernel_report():
    manager, client = start_new_kernel(
        kernel_name="python3", cwd=str(ROOT), extra_arguments=[], startup_timeout=60
    )
    chunks = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            chunks.append(msg["content"]["text"])

    try:
        reply = client.execute_interactive(SESSION, timeout=120, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    line = next(x for x in "".join(chunks).splitlines() if x.startswith("REPORT"))
    return json.loads(line.removeprefix("REPORT"))


def test_an_internal_error_keeps_its_traceback_in_the_panel(kernel_report):
    bug = kernel_report["bug"]
    assert "Traceback (most recent call last)" in bug["output"]
    assert "RuntimeError: internal boom" in bug["output"]
    assert "set_image" in bug["output"]  # the frame that failed, not only the message
    assert "internal error" in bug["status"] and "internal boom" in bug["status"]
    assert not bug["disabled"]  # the panel stays usable


def test_a_user_error_is_one_line_without_traceback(kernel_report):
    user = kernel_report["user"]
    assert user["output"] == "error: field x is bad. Fix: give y\n"
    assert "field x is bad" in user["status"] and "internal" not in user["status"]
