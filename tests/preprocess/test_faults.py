"""Bad preprocessing inputs: each ends in a counted, named skip (the output parses with orjson and
with the project's reader and lacks exactly the bad rows) or a one-line refusal naming the file,
with the previous output left as it was and no temporary file behind."""

import json
import os
import shutil

import orjson
import pytest

from vsm_kit.cli import main
from vsm_kit.data import tree
from vsm_kit.errors import MissingDataError, VsmKitError
from vsm_kit.preprocess import _common, _stream, open_output, preprocess
from vsm_kit.preprocess.run import STEPS, PreprocessInterrupted

MAIN_INPUT = {
    "coco": "coco2017/annotations/instances_train2017.json",
    "objects365": "object365/zhiyuan_objv2_train.json",
    "goldg": "MixedGrounding/final_mixed_train.json",
}
BAD_BOXES = ["abc", None, float("nan"), float("inf"), [1, 2, 3], [1, 2, 3, 4, 5], [1, "2", 3, 4], 7]


def edit(path, change):
    """Rewrite a JSON file after `change(doc)`; NaN/Infinity are written as Python's json does."""
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def run(ds, step, **kw):
    return preprocess(ds, only=[step], force=True, progress=False, **kw).steps[0]


def read_back(ds, step):
    """The output as orjson parses it, after the project's reader took it too."""
    out = tree.at(ds, *STEPS[step][1])
    open_output(step, ds).box_table()
    return orjson.loads(out.read_bytes())


def expected_without(ds, tmp_path, step, k):
    """The output built from the input with annotation k deleted (the reference for a skip)."""
    ref = tmp_path / "ref"
    shutil.copytree(ds, ref)
    edit(ref / MAIN_INPUT[step], lambda d: d["annotations"].pop(k))
    run(ref, step)
    return read_back(ref, step)


def old_output(ds, step, text):
    """An existing output older than the inputs (so the step runs)."""
    out = tree.at(ds, *STEPS[step][1])
    out.write_text(text)
    os.utime(out, (0, 0))
    return out


def no_temp_files(ds):
    return not [p for p in ds.rglob(".*.tmp")]


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("bad", BAD_BOXES, ids=repr)
def test_bad_bbox_is_left_out_counted_and_named(world_copy, tmp_path, step, bad):
    k = 3
    expected = expected_without(world_copy, tmp_path, step, k)

    def damage(doc):
        doc["annotations"][k]["bbox"] = bad

    edit(world_copy / MAIN_INPUT[step], damage)
    r = run(world_copy, step)
    assert r.malformed == 1
    (warning,) = [w for w in r.warnings if "left out" in w]
    assert f"1 annotations of {world_copy / MAIN_INPUT[step]}" in warning
    assert f"annotations[{k}]" in warning and "bbox" in warning
    assert read_back(world_copy, step) == expected


BAD_ROWS = {
    "image_id a string": lambda a: a.update(image_id=str(a["image_id"])),
    "image_id a float": lambda a: a.update(image_id=a["image_id"] + 0.5),
    "category_id null": lambda a: a.update(category_id=None),
    "no bbox": lambda a: a.pop("bbox"),
    "no tokens_positive": lambda a: a.pop("tokens_positive"),
    "a number": None,
}
# GoldG keeps annotations verbatim (category_id unused); its readers need the spans instead
ROW_CASES = [
    (step, case)
    for step in STEPS
    for case in BAD_ROWS
    if case not in (("category_id null",) if step == "goldg" else ("no tokens_positive",))
]


@pytest.mark.parametrize(("step", "case"), ROW_CASES)
def test_bad_annotation_values_and_shapes_are_counted_skips(world_copy, tmp_path, step, case):
    k = 5
    expected = expected_without(world_copy, tmp_path, step, k)

    def damage(doc):
        if BAD_ROWS[case] is None:
            doc["annotations"][k] = 12345
        else:
            BAD_ROWS[case](doc["annotations"][k])

    edit(world_copy / MAIN_INPUT[step], damage)
    r = run(world_copy, step)
    assert r.malformed == 1 and any(f"annotations[{k}]" in w for w in r.warnings)
    assert read_back(world_copy, step) == expected


@pytest.mark.parametrize("step", list(STEPS))
def test_bad_final_annotation_of_a_many_batch_file_is_caught(
    world_copy, tmp_path, step, monkeypatch
):
    monkeypatch.setattr(_stream, "CHUNK", 256)  # the demo files then span many batches
    doc = json.loads((world_copy / MAIN_INPUT[step]).read_text())
    assert len(json.dumps(doc["annotations"])) > 8 * 256
    last = len(doc["annotations"]) - 1
    expected = expected_without(world_copy, tmp_path, step, last)
    edit(world_copy / MAIN_INPUT[step], lambda d: d["annotations"][-1].pop("bbox"))
    r = run(world_copy, step)
    assert r.malformed == 1 and any(f"annotations[{last}]" in w for w in r.warnings)
    assert read_back(world_copy, step) == expected


def test_only_the_bad_rows_go_and_the_warning_shows_the_first_few(world_copy, tmp_path):
    src = world_copy / MAIN_INPUT["objects365"]
    doc = json.loads(src.read_text())
    n = len(doc["annotations"])
    for k in range(0, n, 2):
        doc["annotations"][k]["bbox"] = None
    src.write_text(json.dumps(doc))
    r = run(world_copy, "objects365")
    assert r.malformed == (n + 1) // 2
    (warning,) = [w for w in r.warnings if "left out" in w]
    assert "annotations[0]" in warning and "annotations[4]" in warning
    assert "annotations[6]" not in warning and warning.endswith("…")
    boxes = read_back(world_copy, "objects365")
    assert sum(len(v) for v in boxes.values()) == r.boxes
    assert all(b["bbox"] is not None for v in boxes.values() for b in v)


@pytest.mark.parametrize("step", ["coco", "objects365"])
def test_bad_image_entry_is_left_out_and_counted(world_copy, step):
    src = world_copy / MAIN_INPUT[step]
    doc = json.loads(src.read_text())
    first = doc["annotations"][0]["image_id"]
    at, victim = next((k, im) for k, im in enumerate(doc["images"]) if im["id"] == first)
    n_boxes = sum(a["image_id"] == victim["id"] for a in doc["annotations"])
    victim["file_name"] = 17
    src.write_text(json.dumps(doc))
    r = run(world_copy, step)
    assert r.malformed == 1 and any(f"images[{at}]" in w and "file_name" in w for w in r.warnings)
    if step == "objects365":  # (COCO-Stuff lists the same image ids: there it keeps its name)
        assert r.unknown_image_ids == n_boxes > 0
    read_back(world_copy, step)


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [("caption", None, "None"), ("file_name", 5, "5"), ("id", "7", "'7'"), ("data_source", 1, "1")],
)
def test_goldg_refuses_a_bad_image_entry(world_copy, field, value, shown):
    src = world_copy / MAIN_INPUT["goldg"]
    edit(src, lambda d: d["images"][4].update({field: value}))
    out = old_output(world_copy, "goldg", "[]")
    with pytest.raises(VsmKitError, match=rf"images\[4\] has {field} {shown}") as err:
        run(world_copy, "goldg")
    assert str(src) in str(err.value) and "Fix:" in str(err.value)
    assert out.read_text() == "[]"


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


DAMAGE = {
    "missing": lambda p: p.unlink(),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": _truncate,
    "a list at top level": lambda p: p.write_text("[1, 2]"),
    "annotations an object": lambda p: edit(p, lambda d: d.update(annotations={"a": 1})),
    "no annotations": lambda p: edit(p, lambda d: d.pop("annotations")),
    "no images": lambda p: edit(p, lambda d: d.pop("images")),
    "annotations empty": lambda p: edit(p, lambda d: d.update(annotations=[])),
    "every bbox bad": lambda p: edit(p, lambda d: [a.update(bbox="abc") for a in d["annotations"]]),
}


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("case", list(DAMAGE))
def test_unusable_input_is_refused_naming_it_and_keeps_the_output(world_copy, step, case):
    src = world_copy / MAIN_INPUT[step]
    out = old_output(world_copy, step, '{"previous": []}')
    DAMAGE[case](src)
    with pytest.raises(VsmKitError) as err:
        preprocess(world_copy, only=[step], progress=False)
    msg = str(err.value)
    assert str(src) in msg and "Fix:" in msg
    if case == "missing":
        assert isinstance(err.value, MissingDataError)
    assert out.read_text() == '{"previous": []}' and no_temp_files(world_copy)


def test_missing_input_with_an_up_to_date_output_is_a_message(world_copy, capsys):
    preprocess(world_copy, only=["coco"], progress=False)
    out = tree.at(world_copy, *STEPS["coco"][1])
    before = out.read_bytes()
    (world_copy / "cocostuff/annotations/stuff_train2017.json").unlink()
    assert main(["preprocess", "--data-dir", str(world_copy), "--only", "coco"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "stuff_train2017.json" in err and "Fix:" in err
    assert out.read_bytes() == before


def test_cli_refusal_is_one_error_line(world_copy, capsys):
    edit(world_copy / MAIN_INPUT["objects365"], lambda d: d.pop("annotations"))
    assert main(["preprocess", "--data-dir", str(world_copy), "--only", "objects365"]) == 2
    captured = capsys.readouterr()
    (line,) = [line for line in captured.err.splitlines() if "error" in line]  # and progress
    assert line.startswith("error: ") and "Fix:" in line
    assert "zhiyuan_objv2_train.json" in line and "'annotations'" in line
    assert "Traceback" not in captured.out + captured.err


def test_skips_are_reported_by_the_cli(world_copy, capsys):
    edit(world_copy / MAIN_INPUT["coco"], lambda d: d["annotations"][0].update(bbox=[1, 2]))
    assert main(["preprocess", "--data-dir", str(world_copy), "--only", "coco"]) == 0
    out = capsys.readouterr().out
    assert "coco: 1 annotations of" in out and "annotations[0]" in out


@pytest.mark.parametrize("cli", [False, True])
def test_ctrl_c_says_what_was_kept_and_leaves_no_temp(world_copy, monkeypatch, capsys, cli):
    olds = {s: old_output(world_copy, s, f'["old {s}"]') for s in STEPS}
    real = _common._write_chunk

    def interrupt_objects365(f, body, first):
        if "object365" in f.name:
            raise KeyboardInterrupt
        real(f, body, first)

    monkeypatch.setattr(_common, "_write_chunk", interrupt_objects365)
    if cli:
        assert main(["preprocess", "--data-dir", str(world_copy)]) == 130  # 128 + SIGINT
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("error:") == 1
        msg = err
    else:
        with pytest.raises(PreprocessInterrupted) as info:
            preprocess(world_copy, progress=False)
        assert isinstance(info.value, KeyboardInterrupt)
        msg = str(info.value)
    assert olds["coco"].read_text() != '["old coco"]'  # built before the interruption
    for s in ("objects365", "goldg"):
        assert olds[s].read_text() == f'["old {s}"]'
    kept, left = msg.split("left as they were")
    assert "during the objects365 step" in kept and str(olds["coco"]) in kept
    assert str(olds["objects365"]) in left and str(olds["goldg"]) in left
    assert no_temp_files(world_copy)
