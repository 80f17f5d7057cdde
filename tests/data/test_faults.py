"""Bad input to the data readers ends in one user-facing error naming the file and the fix:
every source's annotation files missing, empty, truncated, wrong-shaped or with a bad value,
16-bit and oversized images, mis-sized label maps, REFER pickles with bytes or Python 2 text,
and symbolic link loops."""

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from vsm_kit.cli import main
from vsm_kit.data import check_layout, open_source
from vsm_kit.data import images as images_mod
from vsm_kit.data.images import image_size, load_rgb, verify_image
from vsm_kit.errors import (
    AnnotationError,
    CorruptImageError,
    ImageTooLargeError,
    LabelMapSizeError,
    VsmKitError,
)
from vsm_kit.jsonio import load_json
from vsm_kit.model.image_inputs import decode_rgb
from vsm_kit.preprocess import preprocess

# --- annotation files: every source x {missing, empty, truncated, wrong-shaped, bad value} ---


def _edit_json(fn):
    def apply(path):
        data = load_json(path)
        path.write_text(json.dumps(fn(data)))

    return apply


def _edit_refs(fn):
    def apply(path):
        with open(path, "rb") as f:
            refs = pickle.load(f)
        path.write_bytes(pickle.dumps(fn(refs), protocol=2))

    return apply


def _each(items, fn):
    for item in items:
        fn(item)


def _set(key, value):
    return lambda d: d.__setitem__(key, value)


def _first_index_entry(fn):
    def edit(data):
        fn(data, next(iter(data)))
        return data

    return edit


def _coco(section, fn):
    def edit(data):
        _each(data[section], fn)
        return data

    return edit


def _wrap(data):
    return {"data": data} if isinstance(data, list) else [data]


def _number_at(section):
    def edit(data):
        (data if section is None else data[section])[0] = 7
        return data

    return edit


def _bbox(value):
    return lambda a: a.__setitem__("bbox", value(a["bbox"]))


BBOX_FAULTS = {
    "bbox_text": (lambda b: "abc", "bbox"),
    "bbox_nan": (lambda b: [None, *b[1:]], "bbox"),
    "bbox_length": (lambda b: b[:3], "bbox"),
}


def _coco_faults(section="annotations"):
    faults = {
        "wrong_top": (_edit_json(_wrap), "top level"),
        "record_number": (_edit_json(_number_at(section)), f"{section}[0]"),
        "no_annotations": (
            _edit_json(lambda d: (d.pop("annotations"), d)[1]),
            '"annotations" is missing',
        ),
    }
    for name, (value, hint) in BBOX_FAULTS.items():
        faults[name] = (_edit_json(_coco("annotations", _bbox(value))), hint)
    return faults


def _index_faults():
    faults = {
        "wrong_top": (_edit_json(_wrap), "top level"),
        "record_number": (
            _edit_json(_first_index_entry(lambda d, k: d.__setitem__(k, 7))),
            "not a list of boxes",
        ),
    }
    for name, (value, hint) in BBOX_FAULTS.items():
        edit = _first_index_entry(lambda d, k, value=value: _each(d[k], _bbox(value)))
        faults[name] = (_edit_json(edit), hint)
    return faults


def _refs_faults():
    def sent_number(refs):
        for ref in refs:
            _each(ref["sentences"], _set("sent", 5))
        return refs

    def record_number(refs):
        refs[0] = 7
        return refs

    return {
        "wrong_top": (_edit_refs(lambda refs: {"refs": refs}), "not a list"),
        "record_number": (_edit_refs(record_number), "refs[0]"),
        "sent_number": (_edit_refs(sent_number), "sent"),
    }


def _mdetr_faults(spans=True):
    faults = {
        "wrong_top": (_edit_json(_wrap), "top level"),
        "record_number": (_edit_json(_number_at("images")), "images[0]"),
        "caption_number": (_edit_json(_coco("images", _set("caption", 5))), "caption"),
        "bbox_text": (_edit_json(_coco("annotations", _set("bbox", "abc"))), "bbox"),
    }
    if spans:  # Flickr annotations land on mixed entries (the original's rule): goldg_mixed's
        faults["spans_text"] = (
            _edit_json(_coco("annotations", _set("tokens_positive", "x"))),
            "tokens_positive",
        )
    return faults


def _goldg_faults(with_boxes):
    def edit(fn):
        return _edit_json(lambda data: (_each(data, fn), data)[1])

    faults = {
        "wrong_top": (_edit_json(_wrap), "top level"),
        "record_number": (_edit_json(_number_at(None)), "[0]"),
        "caption_number": (edit(_set("caption", 5)), "caption"),
    }
    if with_boxes:  # the original's rule leaves Flickr entries without boxes
        faults["bbox_nan"] = (
            edit(lambda e: _each(e["instances"], _bbox(lambda b: [None]))),
            "bbox",
        )
    return faults


def _vqa_faults():
    def first(fn):
        return _edit_json(lambda data: (fn(data[0]), data)[1])

    return {
        "wrong_top": (_edit_json(_wrap), "top level"),
        "record_number": (_edit_json(_number_at(None)), "[0]"),
        "no_conversations": (first(lambda item: item.pop("conversations")), "conversations"),
        "value_number": (first(lambda item: item["conversations"][0].update(value=5)), "turns"),
    }


# (source, annotation file, faults beyond missing/empty/truncated, an index built by preprocess)
FILES = [
    ("objects365", "object365/zhiyuan_objv2_train.json", _coco_faults(), None),
    ("objects365", "object365/image2bboxes.json", _index_faults(), "objects365"),
    ("cocostuff", "coco2017/annotations/instances_train2017.json", _coco_faults(), None),
    ("cocostuff", "cocostuff/annotations/stuff_train2017.json", _coco_faults("images"), None),
    ("cocostuff", "cocostuff/annotations/image2bboxes.json", _index_faults(), "coco"),
    ("paco_lvis", "vlpart/paco/annotations/paco_lvis_v1_train.json", _coco_faults(), None),
    *[
        (ds, f"refer_seg/{ds}/{file}", faults, None)
        for ds, by in (
            ("refclef", "unc"),
            ("refcoco", "unc"),
            ("refcoco+", "unc"),
            ("refcocog", "umd"),
        )
        for file, faults in ((f"refs({by}).p", _refs_faults()), ("instances.json", _coco_faults()))
    ],
    ("goldg_mixed", "MixedGrounding/final_mixed_train.json", _mdetr_faults(), None),
    ("flickr", "MixedGrounding/final_flickr_separateGT_train.json", _mdetr_faults(False), None),
    ("goldg_mixed", "MixedGrounding/final_flickr_separateGT_train.json", _mdetr_faults(), None),
    ("goldg_mixed", "MixedGrounding/goldG_train.json", _goldg_faults(True), "goldg"),
    ("flickr", "MixedGrounding/goldG_train.json", _goldg_faults(False), "goldg"),
    ("llava_instruct_80k", "vsm_vqa_data/llava_instruct_80k.json", _vqa_faults(), None),
    (
        "possible_locations_conv_86k",
        "vsm_vqa_data/possible_locations_conv_86k.json",
        _vqa_faults(),
        None,
    ),
]


def _empty(path):
    path.write_bytes(b"")


def _truncated(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CASES = [
    pytest.param(name, rel, fault, edit, hint, built, id=f"{name}-{rel.split('/')[-1]}-{fault}")
    for name, rel, faults, built in FILES
    for fault, (edit, hint) in {
        # an index that is absent is simply not used: the reader takes the raw files
        **({} if built else {"missing": (lambda p: p.unlink(), "Missing")}),
        "empty": (_empty, "empty" if rel.endswith(".json") else "refs"),
        "truncated": (_truncated, "byte" if rel.endswith(".json") else "refs"),
        **faults,
    }.items()
]


@pytest.fixture(scope="module")
def built_world(demo_world, tmp_path_factory):
    """The demo data tree with every index `vsm-kit preprocess` writes."""
    ds = tmp_path_factory.mktemp("built") / "dataset"
    shutil.copytree(demo_world.dataset, ds)
    preprocess(ds, progress=False)
    return ds


def _read_everything(name, ds):
    src = open_source(name, ds)
    list(src)
    src.find("a")
    src.box_table()


@pytest.mark.parametrize(("name", "rel", "fault", "edit", "hint", "built"), CASES)
def test_bad_annotation_file_is_one_error_naming_it_and_the_fix(
    name, rel, fault, edit, hint, built, demo_world, built_world, tmp_path
):
    ds = tmp_path / "dataset"
    shutil.copytree(built_world if built else demo_world.dataset, ds)
    edit(ds / rel)
    with pytest.raises(VsmKitError) as err:
        _read_everything(name, ds)
    message = str(err.value)
    assert rel.split("/")[-1] in message and "Fix:" in message
    assert hint in message
    assert "Traceback" not in message and len(message.splitlines()) <= 2


def test_bad_elements_are_named_with_their_position(world_copy):
    path = world_copy / "vlpart/paco/annotations/paco_lvis_v1_train.json"
    data = load_json(path)
    data["annotations"][3]["bbox"] = [1, 2, "abc", 4]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"annotations\[3\] \(id \d+\) has \"bbox\""):
        open_source("paco_lvis", world_copy)
    vqa = world_copy / "vsm_vqa_data/llava_instruct_80k.json"
    items = load_json(vqa)
    del items[2]["conversations"]
    vqa.write_text(json.dumps(items))
    with pytest.raises(AnnotationError, match=r'\[2\] \(id .+\) has no "conversations"'):
        open_source("llava_instruct_80k", world_copy)


# --- REFER pickles: bytes sentences and Python 2 text ----------------------------------------


def _py2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 writes it: every str is a byte string (BINSTRING)."""

    def dump(o):
        if isinstance(o, str | bytes):
            b = o.encode("utf-8") if isinstance(o, str) else o
            return b"T" + struct.pack("<I", len(b)) + b
        if isinstance(o, bool | int):
            return b"J" + struct.pack("<i", int(o))
        if isinstance(o, list):
            return b"](" + b"".join(map(dump, o)) + b"e"
        if isinstance(o, dict):
            return b"}(" + b"".join(dump(k) + dump(v) for k, v in o.items()) + b"u"
        raise TypeError(type(o))

    return b"\x80\x02" + dump(obj) + b"."


def _refs(ds, name="refcoco"):
    path = ds / f"refer_seg/{name}/refs(unc).p"
    with open(path, "rb") as f:
        return path, pickle.load(f)


def _train_texts(ds):
    return sorted(t for r in open_source("refcoco", ds) for t in r.texts)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_bytes_sentences_are_decoded(world_copy, protocol):
    before = _train_texts(world_copy)
    path, refs = _refs(world_copy)
    train = [r for r in refs if r["split"] == "train"]
    for s in train[0]["sentences"]:
        s["sent"] = (s["sent"] + " café").encode("utf-8")
    for s in train[1]["sentences"]:
        s["sent"] = (s["sent"] + " café").encode("latin-1")
    path.write_bytes(pickle.dumps(refs, protocol=protocol))
    after = _train_texts(world_copy)
    assert len(after) == len(before) and all(isinstance(t, str) for t in after)
    assert not any(t.startswith("b'") for t in after)
    assert sum(t.endswith(" café") for t in after) == len(train[0]["sentences"]) + len(
        train[1]["sentences"]
    )


def test_python2_pickles_with_non_ascii_text_are_read(world_copy):
    before = _train_texts(world_copy)
    path, refs = _refs(world_copy)
    train = [r for r in refs if r["split"] == "train"]
    train[0]["sentences"][0]["sent"] += " naïve"
    train[1]["sentences"][0]["sent"] = (train[1]["sentences"][0]["sent"] + " é").encode("latin-1")
    path.write_bytes(_py2_pickle(refs))
    with pytest.raises(UnicodeDecodeError):  # what a plain pickle.load does with it
        pickle.loads(path.read_bytes())
    after = _train_texts(world_copy)
    assert len(after) == len(before)
    assert any(t.endswith(" naïve") for t in after) and any(t.endswith(" é") for t in after)
    assert {t for t in after if not t.endswith(("naïve", " é"))} <= set(before)


# --- images -----------------------------------------------------------------------------------


def _png(path, pixels: np.ndarray, color_type: int, bit_depth: int = 16, size=None):
    """Write a PNG with numpy + zlib (PIL cannot write 16-bit RGB); `size` (w, h) overrides the
    header's dimensions and writes no pixel data (a header-only bomb)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    h, w = pixels.shape[:2]
    if size is not None:
        w, h = size
    raw = b"" if size else b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


GREY16 = np.array([[0, 255, 256, 65535], [4660, 32768, 511, 40000]], np.uint16)


def _both_decoders(path) -> tuple[np.ndarray, np.ndarray]:
    return load_rgb(path), decode_rgb(path).permute(1, 2, 0).numpy()


def test_16_bit_grey_png_keeps_its_high_byte(tmp_path):
    Image.fromarray(GREY16).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    expected = np.repeat((GREY16 >> 8).astype(np.uint8)[:, :, None], 3, axis=2)
    for got in _both_decoders(tmp_path / "grey16.png"):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, expected)
    assert expected[0, 3, 0] == 255 and expected[0, 1, 0] == 0  # not all 255


def test_16_bit_rgb_png_keeps_its_high_byte(tmp_path):
    rgb = (np.arange(2 * 3 * 3, dtype=np.uint32).reshape(2, 3, 3) * 3851).astype(np.uint16)
    _png(tmp_path / "rgb16.png", rgb, color_type=2)
    for got in _both_decoders(tmp_path / "rgb16.png"):
        np.testing.assert_array_equal(got, (rgb >> 8).astype(np.uint8))


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_16_and_32_bit_integer_tiffs_follow_the_same_rule(tmp_path, mode):
    values = np.array([[-5, 0, 300, 65535, 70000, 1000]], np.int32)
    if mode == "I;16B":
        values = values.clip(0, 65535)
        im = Image.frombytes(mode, (6, 1), values.astype(">u2").tobytes())
    else:
        im = Image.fromarray(values)  # mode "I"
    im.save(tmp_path / "x.tif")
    assert Image.open(tmp_path / "x.tif").mode == mode
    expected = (values.clip(0, 65535) >> 8).astype(np.uint8)
    for got in _both_decoders(tmp_path / "x.tif"):
        np.testing.assert_array_equal(got[..., 1], expected)


def test_oversized_image_names_file_size_limit_and_how_to_raise_it(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    _png(bomb, np.zeros((1, 1), np.uint16), color_type=0, bit_depth=8, size=(20000, 20000))
    for read in (load_rgb, image_size, decode_rgb):
        with pytest.raises(ImageTooLargeError) as err:
            read(bomb)
        message = str(err.value)
        assert "bomb.png" in message and "20000x20000" in message
        assert str(images_mod.max_image_pixels()) in message
        assert "VSM_KIT_MAX_IMAGE_PIXELS=400000000" in message and "set_max_image_pixels" in message
    assert "20000x20000" in verify_image(bomb)
    monkeypatch.setattr(images_mod, "_max_pixels", images_mod.max_image_pixels())
    images_mod.set_max_image_pixels(None)
    assert image_size(bomb) == (20000, 20000)  # the limit is raised: only the header is read
    images_mod.set_max_image_pixels(4 * 4 - 1)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ImageTooLargeError, match="4x4 = 16 pixels, over the limit of 15"):
        load_rgb(tmp_path / "small.png")


def test_limit_from_the_environment(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "small.png")
    code = "import sys; from vsm_kit.data.images import image_size; print(image_size(sys.argv[1]))"

    def run(value):
        env = {**os.environ, "VSM_KIT_MAX_IMAGE_PIXELS": value}
        return subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "small.png")],
            env=env,
            capture_output=True,
            text=True,
        )

    assert "over the limit of 15 pixels" in run("15").stderr
    assert run("16").stdout.strip() == "(4, 4)" and run("0").stdout.strip() == "(4, 4)"
    assert "is not a whole number" in run("lots").stderr


def test_label_map_of_the_wrong_size_names_both_files_and_sizes(world_copy):
    label_dir = world_copy / "cocostuff/train2017"
    png = sorted(label_dir.iterdir())[0]
    label = np.asarray(Image.open(png))
    h, w = label.shape
    Image.fromarray(label[: h // 2, : w - 3]).save(png)
    src = open_source("cocostuff", world_copy)
    with pytest.raises(LabelMapSizeError) as err:
        list(src)
    message = str(err.value)
    assert png.name in message and png.stem + ".jpg" in message
    assert f"{w - 3}x{h // 2}" in message and f"{w}x{h}" in message and "Fix:" in message
    assert isinstance(err.value, CorruptImageError)  # training re-draws it and counts it


# --- symbolic link loops ------------------------------------------------------------------------


def _loop(path):
    """Replace `path` by a link loop: path -> path.loop -> path."""
    if path.exists():
        path.unlink()
    twin = path.with_name(path.name + ".loop")
    path.symlink_to(twin.name)
    twin.symlink_to(path.name)


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        ("refcoco", "refer_seg/refcoco/refs(unc).p"),
        ("refcoco", "refer_seg/refcoco/instances.json"),
        ("paco_lvis", "vlpart/paco/annotations/paco_lvis_v1_train.json"),
        ("llava_instruct_80k", "vsm_vqa_data/llava_instruct_80k.json"),
        ("cocostuff", "cocostuff/train2017"),
    ],
)
def test_readers_name_a_link_loop(world_copy, name, rel):
    if (world_copy / rel).is_dir():
        shutil.rmtree(world_copy / rel)
    _loop(world_copy / rel)
    with pytest.raises(AnnotationError, match="symbolic link loop") as err:
        open_source(name, world_copy)
    assert str(world_copy / rel) in str(err.value) and "Fix:" in str(err.value)


def test_an_image_that_is_a_link_loop(world_copy):
    image = sorted((world_copy / "coco2017/train2017").iterdir())[0]
    _loop(image)
    for read in (load_rgb, image_size, decode_rgb):
        with pytest.raises(CorruptImageError, match="symbolic link loop"):
            read(image)


def test_check_names_link_loops_and_does_not_hang(world_copy, capsys):
    _loop(world_copy / "refer_seg/refcoco/refs(unc).p")
    _loop(sorted((world_copy / "coco2017/train2017").iterdir())[0])
    patch = next((world_copy / "object365/images/train").iterdir())
    (patch / "again").symlink_to("..")  # a folder link back up the tree
    report = check_layout(world_copy)
    status = {r.entry.path: r.status for r in report.rows}
    assert status["refer_seg/refcoco/refs(unc).p"] == "bad link"
    assert status["coco2017/train2017"] == "bad link"
    assert status["object365/images/train"] == "bad link"
    assert main(["check", str(world_copy)]) == 1
    out = capsys.readouterr().out
    assert out.count("symbolic link loop") >= 2 and "already listed" in out
    assert f"- bad link: {world_copy}/refer_seg/refcoco/refs(unc).p" in out
