"""Every benchmark at `--smoke` size: it runs, exits 0 (in a race: its two sides agreed) and
prints its table. The GPU benchmarks run on the CPU; each runs as its own process, as by hand.
`pillow_versions.py` builds its Pillow 9.4.0 venv the first time on a machine (~40 s)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}

# script, extra arguments, a line of its table
CASES = [
    ("bench_preprocess.py", [], "outputs identical: True"),
    ("bench_dataloader.py", [], "baseline/s  ours/s  ratio"),
    ("bench_search.py", [], "calls/search  encodes/search  LM fwd/search"),
    ("bench_model_gpu.py", ["--device", "cpu"], "fwd+bwd"),
    ("bench_train_gpu.py", ["--device", "cpu"], "seconds/step"),
    ("pillow_versions.py", [], "group     input  images  values differing"),
]


@pytest.mark.parametrize(("script", "extra", "table"), CASES, ids=[c[0] for c in CASES])
def test_benchmark_smoke(script, extra, table):
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--smoke", *extra],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert table in proc.stdout, proc.stdout[-2000:]
