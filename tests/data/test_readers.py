"""Every reader returns exactly what the demo generator drew."""

import shutil

import numpy as np
import pytest

from vsm_kit.data import SOURCES, open_source
from vsm_kit.data.images import load_label_map, load_rgb
from vsm_kit.data.masks import decode_segmentation
from vsm_kit.errors import MissingDataError
from vsm_kit.jsonio import load_json
from vsm_kit.preprocess import preprocess

from .edits import drop_coco_boxes


def _key(record_or_truth, ds=None):
    path = record_or_truth.image_path.relative_to(ds).as_posix() if ds else record_or_truth.image
    return path, record_or_truth.caption


@pytest.mark.parametrize("name", [n for n in SOURCES if SOURCES[n].group == "vqa"])
def test_conversation_readers_match_in_file_order(demo_world, name):
    ds = demo_world.dataset
    src = open_source(name, ds)
    truth = demo_world.truth[name]
    assert len(src) == len(truth) > 0
    for rec, exp in zip(src, truth, strict=True):
        assert _key(rec, ds)[0] == exp.image
        assert list(rec.conversations) == exp.conversations and rec.targets == ()
        assert (rec.height, rec.width) == rec.load_image().shape[:2]


@pytest.fixture(scope="module")
def fixed_goldg(demo_world, tmp_path_factory):
    """A data tree whose goldG_train.json attaches each annotation to its own image, as the
    generator drew them (the original's rule moves the Flickr boxes)."""
    ds = tmp_path_factory.mktemp("fixed") / "dataset"
    shutil.copytree(demo_world.dataset, ds)
    preprocess(ds, only=["goldg"], fix_goldg_ids=True, progress=False)
    return ds


@pytest.mark.parametrize("name", [n for n in SOURCES if SOURCES[n].group != "vqa"])
def test_reader_matches_generator_truth(demo_world, fixed_goldg, name):
    ds = fixed_goldg if SOURCES[name].group == "mixed_grounding" else demo_world.dataset
    src = open_source(name, ds)
    truth = {_key(t): t for t in demo_world.truth[name]}
    got = {_key(r, ds): r for r in src}
    assert len(got) == len(src) == len(truth) > 0
    assert set(got) == set(truth)
    for key, rec in got.items():
        exp = truth[key]
        assert rec.source == name and rec.image_path.exists()
        assert rec.caption == exp.caption
        assert sorted(t.text for t in rec.targets) == sorted(t.text for t in exp.targets)
        by_text = {}
        for t in exp.targets:
            by_text.setdefault(t.text, []).append(t)
        for t in rec.targets:
            cands = by_text[t.text]
            match = [e for e in cands if np.array_equal(e.boxes_xyxy, t.boxes_xyxy)]
            assert match, f"{name} {key}: boxes of {t.text!r} differ"
            e = match[0]
            assert t.has_mask == (e.mask is not None)
            if e.mask is not None:
                m = t.mask()
                assert m.dtype == bool and m.shape == (rec.height, rec.width)
                assert np.array_equal(m, e.mask), f"{name} {key}: mask of {t.text!r} differs"
            cands.remove(e)


def test_coco_instance_masks_equal_the_painted_label_maps(demo_world):
    """Polygons, multi-part polygons and crowd RLE decode to exactly the pixels the generator
    painted (the label map is written independently of the annotations)."""
    ds = demo_world.dataset
    inst = load_json(ds / "coco2017/annotations/instances_train2017.json")
    images = {im["id"]: im for im in inst["images"]}
    per_image_cat = {}
    for a in inst["annotations"]:
        per_image_cat.setdefault((a["image_id"], a["category_id"]), []).append(a)
    kinds = set()
    for (image_id, cat), anns in per_image_cat.items():
        im = images[image_id]
        label = load_label_map(ds / "cocostuff/train2017" / im["file_name"].replace(".jpg", ".png"))
        union = np.zeros(label.shape, bool)
        for a in anns:
            union |= decode_segmentation(a["segmentation"], im["height"], im["width"])
            seg = a["segmentation"]
            kinds.add("crowd" if a["iscrowd"] else "multi" if len(seg) > 1 else "polygon")
        assert np.array_equal(union, label == cat - 1)
    assert kinds == {"crowd", "multi", "polygon"}


def test_drawn_colours_follow_the_masks(demo_world):
    """The image really shows the objects: a PACO part is painted in a colour distinct from the
    rest of its object."""
    rec = open_source("paco_lvis", demo_world.dataset)[0]
    img = load_rgb(rec.image_path).astype(float)
    obj, part = rec.targets[0].mask(), rec.targets[1].mask()
    inside = img[obj & ~part].mean(0)
    assert np.abs(img[part].mean(0) - inside).max() > 40
    # one flat colour and its name's texture marks (plus shading): two tones, each flat
    rest = img[obj & ~part]
    light = rest.sum(1) > rest.sum(1).mean()
    for tone in (rest[light], rest[~light]):
        assert tone.std(0).max() < 25


def test_stored_pixel_grid_grayscale_and_exif(demo_world):
    src = open_source("cocostuff", demo_world.dataset)
    for rec in src:
        img = rec.load_image()
        assert img.shape == (rec.height, rec.width, 3) and img.dtype == np.uint8


def test_refer_split_selection(demo_world):
    train = open_source("refcoco", demo_world.dataset)
    val = open_source("refcoco", demo_world.dataset, split="val")
    assert len(val) > 0
    assert not {r.image_id for r in train} & {r.image_id for r in val}


def test_find_filters_by_text(demo_world):
    src = open_source("refcocog", demo_world.dataset)
    hits = src.find("NEXT TO")
    assert hits and all(any("next to" in t for t in src[i].texts) for i in hits)
    assert src.find("no such words") == []
    assert src.find("") == list(range(len(src)))


def test_objects365_skips_known_missing_images(demo_world):
    src = open_source("objects365", demo_world.dataset)
    assert all(r.image_path.exists() for r in src)
    raw = load_json(demo_world.dataset / "object365/zhiyuan_objv2_train.json")
    assert len(raw["images"]) == len(src) + 3


def test_missing_annotation_file_names_path_and_fix(world_copy):
    (world_copy / "vlpart/paco/annotations/paco_lvis_v1_train.json").unlink()
    with pytest.raises(MissingDataError) as err:
        open_source("paco_lvis", world_copy)
    assert "paco_lvis_v1_train.json" in str(err.value) and "Fix:" in str(err.value)


def test_missing_data_dir(tmp_path):
    with pytest.raises(MissingDataError, match="demo-world"):
        open_source("refcoco", tmp_path / "nowhere")


def test_box_tables_cover_records(demo_world):
    for name in SOURCES:
        src = open_source(name, demo_world.dataset)
        table = src.box_table()
        if name.startswith(("llava", "possible", "flickr")):  # Flickr: the original's GoldG rule
            assert len(table) == 0
            continue
        assert len(table) > 0 and table.record.max() < len(src)
        assert table.label.max() < len(table.labels)


def test_open_sources_reports_what_cannot_be_read(world_copy):
    from vsm_kit.data import open_sources

    (world_copy / "MixedGrounding/final_mixed_train.json").write_text('{"images": [')
    opened, failed = open_sources(world_copy)
    assert set(failed) == {"goldg_mixed", "flickr"}  # both read the combined GoldG list
    assert all("byte 12" in why for why in failed.values())
    assert len(opened) == len(SOURCES) - 2


def test_goldg_readers_follow_the_originals_combined_list(demo_world, world_copy):
    """Without goldG_train.json the readers build the original's list from the MDETR files
    (Flickr ids restart at 0: their boxes sit on mixed entries, Flickr entries keep none), the
    same records as from the file `vsm-kit preprocess` writes by default."""
    raw = {n: list(open_source(n, demo_world.dataset)) for n in ("goldg_mixed", "flickr")}
    truth = demo_world.truth
    assert not any(r.targets for r in raw["flickr"])
    n_boxes = sum(len(r.targets) for r in raw["goldg_mixed"])
    assert n_boxes == sum(len(t.targets) for k in ("goldg_mixed", "flickr") for t in truth[k])
    preprocess(world_copy, only=["goldg"], progress=False)
    for name, records in raw.items():
        from_file = list(open_source(name, world_copy))
        assert len(from_file) == len(records)
        for a, b in zip(records, from_file, strict=True):
            assert (a.image_path.name, a.caption, a.height, a.width) == (
                b.image_path.name,
                b.caption,
                b.height,
                b.width,
            )
            assert [t.text for t in a.targets] == [t.text for t in b.targets]
            assert all(
                np.array_equal(s.boxes_xyxy, t.boxes_xyxy)
                for s, t in zip(a.targets, b.targets, strict=True)
            )


def test_cocostuff_keeps_classes_without_boxes_as_candidates(world_copy):
    """Every class of the label map is a target, as the original samples them, even one whose
    boxes are missing (no boxes, the label-map mask)."""
    rec = open_source("cocostuff", world_copy)[7]
    name = rec.image_path.name
    texts = [t.text for t in rec.targets]
    assert "chair" in texts
    drop_coco_boxes(world_copy, name, "chair")
    again = open_source("cocostuff", world_copy)[7]
    assert [t.text for t in again.targets] == texts
    chair = again.targets[texts.index("chair")]
    assert chair.boxes_xyxy.shape == (0, 4) and chair.mask().any()


@pytest.mark.parametrize("name", ["refclef", "refcoco", "refcoco+", "refcocog"])
def test_refer_targets_hold_the_summed_training_mask(demo_world, name):
    for rec in open_source(name, demo_world.dataset)[:3]:
        for t in rec.targets:
            summed = t.mask_fn.summed()
            assert summed.dtype == np.uint8 and np.array_equal(summed > 0, t.mask())
