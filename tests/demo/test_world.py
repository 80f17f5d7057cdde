import hashlib
import pickle
import stat

import numpy as np
import pytest
from pycocotools.coco import COCO

from vsm_kit import fsutil
from vsm_kit.demo import ensure_demo_world, make_demo_world
from vsm_kit.jsonio import load_json

COCO_FORMAT = [
    "coco2017/annotations/instances_train2017.json",
    "cocostuff/annotations/stuff_train2017.json",
    "vlpart/paco/annotations/paco_lvis_v1_train.json",
    "object365/zhiyuan_objv2_train.json",
    "refer_seg/refclef/instances.json",
    "refer_seg/refcoco/instances.json",
    "refer_seg/refcoco+/instances.json",
    "refer_seg/refcocog/instances.json",
    "MixedGrounding/final_mixed_train.json",
    "MixedGrounding/final_flickr_separateGT_train.json",
]


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_tree_has_every_release_folder(demo_world):
    ds = demo_world.dataset
    for rel in [
        "coco2017/train2017",
        "cocostuff/train2017",
        "object365/images/train/patch0",
        "object365/images/train/patch16",
        "refer_seg/images/saiapr_tc-12",
        "refer_seg/images/mscoco/images/train2014",
        "MixedGrounding/flickr30k-images",
        "MixedGrounding/GQA/images",
        "coco2014/train2014",
        "vsm_vqa_data",
        "vlpart/paco/annotations",
    ]:
        assert any((ds / rel).iterdir()), rel


def test_same_seed_same_bytes_other_seed_differs(demo_world, tmp_path):
    again = make_demo_world(tmp_path / "a", seed=0, progress=False, bases="random")
    assert _digest(again.dataset) == _digest(demo_world.dataset)
    assert _digest(again.weights) == _digest(demo_world.weights)
    other = make_demo_world(tmp_path / "b", seed=1, progress=False, bases="random")
    assert _digest(other.dataset) != _digest(demo_world.dataset)


def test_default_size_and_scale(demo_world, tmp_path):
    size = sum(p.stat().st_size for p in demo_world.root.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    for name in ("llava-tiny", "clip-tiny", "owlvit-tiny", "vsm-tiny"):
        assert (demo_world.weights / name / "config.json").exists()
    assert (demo_world.weights / "llava-tiny/tokenizer.model").exists()
    big = make_demo_world(tmp_path / "big", seed=0, scale=2, progress=False, bases="random")
    assert len(big.truth["cocostuff"]) == 2 * len(demo_world.truth["cocostuff"])


def test_regenerating_replaces_the_tree_whole(tmp_path):
    w = make_demo_world(tmp_path, seed=0, progress=False, bases="random")
    (w.dataset / "stray.txt").write_text("left over")
    make_demo_world(tmp_path, seed=0, progress=False, bases="random")
    assert not (w.dataset / "stray.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert ensure_demo_world(tmp_path, seed=0, bases="random").truth is None  # reused
    assert ensure_demo_world(tmp_path, seed=3, bases="random").truth is not None  # rebuilt


@pytest.mark.parametrize("rel", COCO_FORMAT)
def test_pycocotools_loads_every_coco_format_json(demo_world, rel):
    coco = COCO(str(demo_world.dataset / rel))
    assert coco.getImgIds() and coco.getAnnIds()
    for ann in coco.loadAnns(coco.getAnnIds()):
        seg = ann.get("segmentation")
        # refCLEF's empty and RLE-list segmentations are beyond annToMask, as in the release
        if seg and not _is_rle_list(seg):
            im = coco.imgs[ann["image_id"]]
            assert coco.annToMask(ann).shape == (int(im["height"]), int(im["width"]))


def _is_rle_list(seg):
    return isinstance(seg, list) and seg and isinstance(seg[0], dict)


def test_real_format_quirks_present(demo_world):
    ds = demo_world.dataset
    inst = load_json(ds / COCO_FORMAT[0])
    segs = [a["segmentation"] for a in inst["annotations"]]
    assert any(isinstance(s, dict) and isinstance(s["counts"], list) for s in segs)  # crowd RLE
    assert any(isinstance(s, list) and len(s) > 1 for s in segs)  # multi-part polygon
    assert any(isinstance(s, list) and len(s[0]) == 6 for s in segs)  # 3-point polygon
    assert len({im["id"] for im in inst["images"]} - {a["image_id"] for a in inst["annotations"]})
    stuff = load_json(ds / COCO_FORMAT[1])
    assert all(isinstance(a["segmentation"]["counts"], str) for a in stuff["annotations"])
    clef = load_json(ds / "refer_seg/refclef/instances.json")
    assert any(a["segmentation"] == [] for a in clef["annotations"])
    assert any(_is_rle_list(a["segmentation"]) for a in clef["annotations"])
    flickr = load_json(ds / COCO_FORMAT[-1])
    assert flickr["images"][0]["id"] == 0 and isinstance(flickr["images"][0]["height"], str)
    o365 = load_json(ds / "object365/zhiyuan_objv2_train.json")
    assert all(im["file_name"].startswith("images/v") for im in o365["images"])
    boxes = np.array([a["bbox"] for a in o365["annotations"]])
    assert (boxes[:, 2] == 0).any() and (boxes[:, 0] < 0).any()


def test_files_and_folders_get_the_umasks_permissions(demo_world):
    """safetensors writes 0600 and temporary folders are 0700: the world's outputs must not."""
    mask = fsutil.umask()
    wrong = [
        (str(p), oct(stat.S_IMODE(p.stat().st_mode)))
        for p in demo_world.root.rglob("*")
        if stat.S_IMODE(p.stat().st_mode) != (0o777 if p.is_dir() else 0o666) & ~mask
    ]
    assert not wrong, wrong[:5]


def test_refcoco_val_has_enough_expressions_to_measure_learning(demo_world):
    refs = pickle.loads((demo_world.dataset / "refer_seg/refcoco/refs(unc).p").read_bytes())
    val = [s["sent"] for r in refs if r["split"] == "val" for s in r["sentences"]]
    assert len(val) >= 20 and len(set(val)) >= 10
