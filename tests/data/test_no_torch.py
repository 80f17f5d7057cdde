"""Data-only work never loads the deep-learning stack: `vsm-kit check`, `vsm-kit preprocess`,
every reader (records, boxes, masks) and the overlays, in a fresh interpreter."""

import subprocess
import sys

SCRIPT = """
import sys
from vsm_kit.cli import main
from vsm_kit.data import SOURCES, open_source
from vsm_kit.viz import draw_record

data = sys.argv[1]
main(["check", data])
main(["preprocess", "--data-dir", data, "--force"])
for name in SOURCES:
    record = open_source(name, data)[0]
    [t.mask() for t in record.targets]
draw_record(open_source("refcoco", data)[0])
heavy = sorted({"torch", "torchvision", "transformers"} & set(sys.modules))
print("heavy:", heavy)
"""


def test_data_commands_never_import_torch(world_copy):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(world_copy)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []", done.stdout[-2000:]


HEAVY = {"torch", "torchvision", "transformers"}
FLOOR = """
import sys
import vsm_kit.cli, vsm_kit.data, vsm_kit.preprocess, vsm_kit.viz
print("heavy:", sorted({"torch", "torchvision", "transformers"} & set(sys.modules)))
"""


def test_data_floor_never_imports_torch():
    """The data packages and the CLI module (up to dispatching a command) stay off torch."""
    done = subprocess.run([sys.executable, "-c", FLOOR], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []", done.stdout[-2000:]


def test_help_never_imports_torch():
    """`python -m vsm_kit --help`, run as it is typed; `-X importtime` lists every module it
    imports (one per stderr line, the top-level package last on its line)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "vsm_kit", "--help"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usage:" in done.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "vsm_kit" in imported and "argparse" in imported  # the listing is real
    assert not HEAVY & imported, sorted(HEAVY & imported)
