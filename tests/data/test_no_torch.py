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
