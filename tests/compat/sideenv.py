"""The side environment with the original's pinned libraries, built once per machine and cached.

`~/.cache/vsm_kit/compat-<key>/` (or `$VSM_KIT_CACHE`), keyed by the pins and the Python
version: `transformers==4.31.0`, `tokenizers==0.13.3`, `sentencepiece==0.1.99`, `numpy<2`
(4.31 needs it) and this environment's Pillow, so pixel comparisons share one resize
implementation. Built in a temporary folder and renamed into place; a failure to build fails the
tests that need it (they are never skipped).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import PIL

PINS = ("transformers==4.31.0", "tokenizers==0.13.3", "sentencepiece==0.1.99", "numpy<2")
SIDE_SCRIPT = Path(__file__).with_name("side.py")


def pins() -> list[str]:
    return [*PINS, f"pillow=={PIL.__version__}"]


def side_python() -> Path:
    """The side environment's python, building the environment if this machine has none."""
    key = hashlib.sha1(" ".join([*pins(), sys.version]).encode()).hexdigest()[:12]
    root = Path(os.environ.get("VSM_KIT_CACHE", Path.home() / ".cache" / "vsm_kit"))
    env = root / f"compat-{key}"
    python = env / "bin" / "python"
    if (env / ".complete").exists():
        return python
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"compat-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per machine, also across test processes
        if not (env / ".complete").exists():
            _build(env)
    return python


def _build(env: Path) -> None:
    tmp = env.with_name(f".{env.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True)
    done = subprocess.run(
        [str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        + pins(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(
            f"could not build the compatibility environment ({' '.join(pins())}):\n"
            + done.stdout[-3000:]
            + done.stderr[-3000:]
        )
    (tmp / ".complete").write_text(" ".join(pins()))
    shutil.rmtree(env, ignore_errors=True)
    tmp.rename(env)


def run_side(request: dict) -> dict:
    """Send one request to `side.py` under the side environment; its JSON reply."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [str(side_python()), str(SIDE_SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if done.returncode != 0 or "\nREPLY " not in done.stdout:
        raise RuntimeError(f"side.py failed:\n{done.stdout[:2000]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.rsplit("\nREPLY ", 1)[1])
