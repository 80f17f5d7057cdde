"""One table holds the data tree: renaming an entry of `tree.PATHS` is followed, at call time,
by the readers, `check` and preprocessing alike."""

import dataclasses
import os

import pytest

from vsm_kit.data import check_layout, open_source, tree
from vsm_kit.data.layout import GROUP_NAMES
from vsm_kit.data.sources import GROUPS
from vsm_kit.errors import MissingDataError
from vsm_kit.preprocess import preprocess

# (entry renamed, a reader of it, the preprocessing step that reads it, that step's output)
CASES = [
    (("objects365", "annotations"), "objects365", "objects365", ("objects365", "index")),
    (("cocostuff", "annotations"), "cocostuff", "coco", ("cocostuff", "index")),
]


@pytest.mark.parametrize(("key", "source", "step", "built"), CASES, ids=lambda c: str(c))
def test_renaming_one_entry_is_followed_everywhere(
    world_copy, monkeypatch, key, source, step, built
):
    old = tree.at(world_copy, *key)
    tree.at(world_copy, *built).unlink(missing_ok=True)  # readers then read the renamed file
    n_records = len(open_source(source, world_copy))
    new_rel = tree.path(*key).replace(".json", "_renamed.json")
    monkeypatch.setitem(tree.PATHS, key, dataclasses.replace(tree.entry(*key), path=new_rel))
    new = world_copy / new_rel
    assert tree.at(world_copy, *key) == new

    # the old name only: each reports the file missing, under its new name
    row = next(r for r in check_layout(world_copy, verify_images=0).rows if r.entry.path == new_rel)
    assert row.status == "missing"
    with pytest.raises(MissingDataError, match=os.path.basename(new_rel)):
        open_source(source, world_copy)
    with pytest.raises(MissingDataError, match=os.path.basename(new_rel)):
        preprocess(world_copy, only=[step], progress=False)
    assert not tree.at(world_copy, *built).exists()

    # renamed on disk: each finds it
    old.rename(new)
    report = check_layout(world_copy, verify_images=0)
    assert next(r for r in report.rows if r.entry.path == new_rel).status == "ok"
    assert str(old.relative_to(world_copy)) not in report.format()
    assert len(open_source(source, world_copy)) == n_records
    (result,) = preprocess(world_copy, only=[step], progress=False).steps
    assert result.status == "built" and result.boxes > 0
    assert tree.at(world_copy, *built).is_file()


def test_group_names_follow_the_readers_groups():
    assert GROUP_NAMES == tuple(GROUPS)
    assert {g for e in tree.PATHS.values() for g in e.groups} == set(GROUP_NAMES)
