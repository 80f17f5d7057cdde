"""A JupyterLab server on a copy of the notebooks and a demo world, and Chromium driven by
Playwright, for the tests that check what a user sees in the browser.

The browser tests skip, with the reason, only when Chromium (`make browser-deps` installs it) or
the Playwright package is missing, and only outside CI: with `CI=true` (as `.ci/run` runs) a
missing browser fails them, so a machine without one cannot pass green. A failed test leaves a
screenshot in `runs/browser/`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "runs" / "browser"
START_TIMEOUT = 90.0  # seconds for JupyterLab to answer; the 2-core machines are slow to import
ACTION_TIMEOUT_MS = 30_000  # Playwright's default wait for a click, a selector, a page load
# Chromium runs as root only without its sandbox; the rest keep it off the network
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    *(["--no-sandbox"] if os.geteuid() == 0 else []),
]
# every cell in the DOM (no windowing), and no news or update prompts over the page
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "checkForUpdates": False,
        "fetchNews": "false",
    },
}


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"browser tests need Chromium at {CHROMIUM}: run `make browser-deps`"
    if importlib.util.find_spec("playwright") is None:
        return "browser tests need the Playwright package: run `make venv`"
    return None


@dataclass
class Lab:
    """A running JupyterLab: `url` (with a trailing slash), its `token`, its `process`, its
    `log` (the kernels' own stderr lands there too), and `root`, the folder it serves
    (`notebooks/`, and `runs/demo/world/` where the notebooks' default WORK_DIR finds the demo
    world)."""

    url: str
    token: str
    root: Path
    process: subprocess.Popen
    log: Path

    def api(self, path: str, method: str = "GET"):
        """Call the REST API; the decoded JSON answer, or None when it is empty."""
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def notebook_url(self, name: str) -> str:
        """The notebook alone in a reset workspace (not beside those earlier tests opened)."""
        return f"{self.url}lab/tree/notebooks/{name}?reset&token={self.token}"

    def shutdown_kernels(self) -> None:
        """Shut down every kernel through the REST API, then end whatever they started that
        still runs: training launchers and their ranks run in sessions of their own, so they
        outlive the kernel that started them."""
        try:
            started = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            started = []
        try:
            for kernel in self.api("api/kernels"):
                self.api(f"api/kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass  # the server is gone: the kernels end with the processes below
        for proc in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.terminate()
        for proc in psutil.wait_procs(started, timeout=10)[1]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

    def stop(self) -> None:
        """Shut down the kernels, then the server (SIGTERM, SIGKILL after a while)."""
        self.shutdown_kernels()
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(self.process.pid, sig)
                self.process.wait(wait)


def _copy_notebook(src: Path, dst: Path) -> None:
    """Copy a notebook without its stored outputs, so everything the page shows comes from
    this run."""
    nb = nbformat.read(src, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, dst)


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _isolated_jupyter(home: Path) -> dict[str, str]:
    """Environment for a server that reads no user config: its own config, data, runtime,
    settings and workspace folders; kernel specs from this environment first, so `python3` is
    ipykernel's spec here, which runs the server's interpreter."""
    dirs = {name: home / name for name in ("config", "data", "runtime", "settings", "workspaces")}
    for name, settings in LAB_SETTINGS.items():
        path = dirs["settings"] / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(settings))
    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_PATH"}
    return {
        **env,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "JUPYTER_PREFER_ENV_PATH": "1",
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
    }


def _start_lab(root: Path, home: Path) -> Lab:
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.allow_root=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = home / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_isolated_jupyter(home),
            start_new_session=True,  # stopping it signals the server's group and nothing else
        )
    lab = Lab(f"http://127.0.0.1:{port}/", token, root, process, log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        with contextlib.suppress(OSError):
            lab.api("api/status")
            return lab
        if process.poll() is not None or time.monotonic() > deadline:
            lab.stop()
            pytest.fail(
                f"JupyterLab did not answer on {lab.url} within {START_TIMEOUT}s:\n{_tail(log)}"
            )
        time.sleep(0.5)


@pytest.fixture(scope="session")
def lab(request, tmp_path_factory):
    """JupyterLab on 127.0.0.1 (random port and token) serving a copy of `notebooks/`; the demo
    world lies in `runs/demo/world/` beside it, where the notebooks' default WORK_DIR finds it."""
    if reason := _missing():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    world = request.getfixturevalue("pretrained_world")  # the notebooks default; once they can run
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    (root / "notebooks").mkdir(parents=True)
    for src in sorted((REPO / "notebooks").glob("*.ipynb")):
        _copy_notebook(src, root / "notebooks" / src.name)
    shutil.copytree(world.root, root / "runs" / "demo" / "world")
    (base / "jupyter").mkdir()
    server = _start_lab(root, base / "jupyter")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def chromium(lab):
    """Debian's Chromium under Playwright (its own browser download is not available here),
    with a fresh temporary profile. Set up after `lab`: skipped with it, closed before it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(lab, chromium):
    """A fresh browser context and page; `page.errors` collects the page's uncaught
    JavaScript errors. Afterwards the kernels the test started are shut down."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    try:
        yield page
    finally:
        context.close()
        lab.shutdown_kernels()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """For a test whose body failed: a screenshot of its page, to
    `runs/browser/<test name>.png`, and the end of the server's log in the report (a kernel
    logs there what a widget callback raised outside the widget's Output area)."""
    report = yield
    fixtures = getattr(item, "funcargs", {})
    page = fixtures.get("page")
    if report.when == "call" and report.failed and page is not None:
        report.sections.append(("jupyter server log (end)", _tail(fixtures["lab"].log)))
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{item.name}.png"
        try:
            page.screenshot(path=path, full_page=True)
            report.sections.append(("browser", f"screenshot: {path}"))
        except Exception as err:  # a dead page must not hide the test's own failure
            report.sections.append(("browser", f"no screenshot: {err}"))
    return report
