"""The three index files against a straightforward whole-file implementation written here."""

import json
import os
from collections import defaultdict

import numpy as np
import pytest

from vsm_kit.cli import main
from vsm_kit.data import open_source
from vsm_kit.errors import MalformedJsonError, MissingDataError
from vsm_kit.preprocess import _common, preprocess

SKIP = {
    "patch16/objects365_v2_00908726.jpg",
    "patch6/objects365_v1_00320532.jpg",
    "patch6/objects365_v1_00320534.jpg",
}


def reference_coco(ds):
    out = defaultdict(list)
    names = {}
    files = [
        "coco2017/annotations/instances_train2017.json",
        "cocostuff/annotations/stuff_train2017.json",
    ]
    docs = [json.load(open(ds / f)) for f in files]
    for d in docs:
        for im in d["images"]:
            names[im["id"]] = im["file_name"]
    for d in docs:
        for a in d["annotations"]:
            out[names[a["image_id"]]].append({"category_id": a["category_id"], "bbox": a["bbox"]})
    return dict(out)


def reference_objects365(ds):
    d = json.load(open(ds / "object365/zhiyuan_objv2_train.json"))
    names = {im["id"]: "/".join(im["file_name"].split("/")[2:]) for im in d["images"]}
    out = defaultdict(list)
    for a in d["annotations"]:
        name = names[a["image_id"]]
        if name not in SKIP:
            out[name].append({"category_id": a["category_id"], "bbox": a["bbox"]})
    return dict(out)


def reference_goldg(ds, original_rule):
    mixed = json.load(open(ds / "MixedGrounding/final_mixed_train.json"))
    flickr = json.load(open(ds / "MixedGrounding/final_flickr_separateGT_train.json"))
    records = []
    for doc, source in ((mixed, None), (flickr, "flickr")):
        start = len(records)
        pos = {}
        for im in doc["images"]:
            pos[im["id"]] = len(records)
            records.append(
                {
                    "file_name": im["file_name"],
                    "caption": im["caption"],
                    "data_source": source or im["data_source"],
                    "instances": [],
                }
            )
        for a in doc["annotations"]:
            target = a["image_id"] if original_rule else pos[a["image_id"]]
            records[target]["instances"].append(a)
        assert start <= len(records)
    return records


def load(path):
    return json.loads(path.read_text())


def test_outputs_equal_the_reference(world_copy):
    summary = preprocess(world_copy, progress=False)
    assert [r.status for r in summary.steps] == ["built"] * 3
    assert load(world_copy / "cocostuff/annotations/image2bboxes.json") == reference_coco(
        world_copy
    )
    o365 = load(world_copy / "object365/image2bboxes.json")
    assert o365 == reference_objects365(world_copy)
    assert not SKIP & set(o365)
    assert load(world_copy / "MixedGrounding/goldG_train.json") == reference_goldg(world_copy, True)
    by_step = {r.step: r for r in summary.steps}
    assert by_step["objects365"].skipped == 3
    assert by_step["coco"].boxes == sum(len(v) for v in reference_coco(world_copy).values())


def test_goldg_default_is_the_original_and_the_fix_differs_where_ids_restart(world_copy):
    default = preprocess(world_copy, only=["goldg"], progress=False).steps[0]
    theirs = load(world_copy / "MixedGrounding/goldG_train.json")
    assert any("--fix-goldg-ids" in w for w in default.warnings)
    preprocess(world_copy, only=["goldg"], force=True, fix_goldg_ids=True, progress=False)
    ours = load(world_copy / "MixedGrounding/goldG_train.json")
    assert theirs == reference_goldg(world_copy, True)
    assert ours != theirs
    # ours: every Flickr record holds its own boxes; theirs: Flickr boxes sit on mixed records
    assert all(r["instances"] for r in ours if r["data_source"] == "flickr")
    assert not any(r["instances"] for r in theirs if r["data_source"] == "flickr")


def test_readers_give_the_same_records_from_the_index(demo_world, world_copy):
    preprocess(world_copy, only=["coco", "objects365"], progress=False)
    for name in ("cocostuff", "objects365"):
        raw, indexed = open_source(name, demo_world.dataset), open_source(name, world_copy)
        assert len(raw) == len(indexed)
        for a, b in zip(raw, indexed, strict=True):
            assert a.image_path.name == b.image_path.name and (a.height, a.width) == (
                b.height,
                b.width,
            )
            assert [t.text for t in a.targets] == [t.text for t in b.targets]
            for ta, tb in zip(a.targets, b.targets, strict=True):
                assert np.array_equal(ta.boxes_xyxy, tb.boxes_xyxy)


def test_interrupted_write_leaves_previous_output_and_no_temp(world_copy, monkeypatch):
    out = world_copy / "object365/image2bboxes.json"
    out.write_text('{"previous": []}')
    os.utime(out, (0, 0))  # older than the inputs: the step will run
    monkeypatch.setattr(_common, "GROUPS_PER_WRITE", 2)
    real, calls = _common._write_chunk, []

    def crash_after_first(f, body, first):
        real(f, body, first)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(_common, "_write_chunk", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        preprocess(world_copy, only=["objects365"], progress=False)
    assert out.read_text() == '{"previous": []}'
    assert [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("cut", [0.5, 0.999])
def test_truncated_input_names_file_and_offset_and_keeps_output(world_copy, cut):
    src = world_copy / "coco2017/annotations/instances_train2017.json"
    out = world_copy / "cocostuff/annotations/image2bboxes.json"
    out.write_text("{}")
    os.utime(out, (0, 0))
    data = src.read_bytes()
    src.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(MalformedJsonError) as err:
        preprocess(world_copy, only=["coco"], progress=False)
    assert err.value.path == src and 0 < err.value.offset <= int(len(data) * cut)
    assert out.read_text() == "{}"


def test_malformed_input_points_at_the_bad_byte(world_copy):
    src = world_copy / "object365/zhiyuan_objv2_train.json"
    data = src.read_bytes()
    at = data.index(b'"category_id"', data.index(b'"annotations"') + 500)
    src.write_bytes(data[:at] + b"@" + data[at + 1 :])
    with pytest.raises(MalformedJsonError) as err:
        preprocess(world_copy, only=["objects365"], progress=False)
    assert err.value.offset == at and f"byte {at}" in str(err.value)


def test_missing_input_names_file_step_and_origin(world_copy):
    (world_copy / "MixedGrounding/final_flickr_separateGT_train.json").unlink()
    with pytest.raises(MissingDataError) as err:
        preprocess(world_copy, only=["goldg"], progress=False)
    msg = str(err.value)
    assert "final_flickr_separateGT_train.json" in msg and "goldg" in msg and "MDETR" in msg


def test_second_run_skips_and_force_rebuilds(world_copy):
    preprocess(world_copy, progress=False)
    again = preprocess(world_copy, progress=False)
    assert [r.status for r in again.steps] == ["up to date"] * 3
    forced = preprocess(world_copy, only=["coco"], force=True, progress=False)
    assert forced.steps[0].status == "built"
    src = world_copy / "object365/zhiyuan_objv2_train.json"
    os.utime(src)  # a newer input makes the step stale
    stale = preprocess(world_copy, progress=False)
    assert [r.status for r in stale.steps] == ["up to date", "built", "up to date"]


def test_objects365_unknown_ids_and_missing_images_are_reported(world_copy):
    src = world_copy / "object365/zhiyuan_objv2_train.json"
    doc = json.loads(src.read_text())
    doc["annotations"].append(
        {"id": 99999, "image_id": 424242, "category_id": 1, "bbox": [1, 2, 3, 4]}
    )
    src.write_text(json.dumps(doc))
    victim = next((world_copy / "object365/images/train/patch1").iterdir())
    victim.unlink()
    r = preprocess(world_copy, only=["objects365"], check_images=True, progress=False).steps[0]
    assert r.unknown_image_ids == 1 and any("424242" not in w and "do" in w for w in r.warnings)
    assert r.missing_images == [f"patch1/{victim.name}"]


def test_cli_preprocess(world_copy, capsys):
    assert main(["preprocess", "--data-dir", str(world_copy), "--only", "coco,goldg"]) == 0
    out = capsys.readouterr().out
    assert "coco" in out and "goldg" in out and "objects365" not in out.split("\n")[2]
    assert main(["preprocess", "--data-dir", str(world_copy), "--only", "nope"]) == 2
