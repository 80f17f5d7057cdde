"""The data tree in one table: every path the tool reads or writes under the dataset root.

Each entry is keyed by (source, role); readers, preprocessing, `vsm-kit check` and the demo
generator look paths up here when they run (`path`, `at`), so renaming a dataset file is a change
of one line of `PATHS`. An entry also says where the file comes from (`origin`), what needs it
(`used_by`), the `--dataset` groups it belongs to, whether it is a folder of images (counting
files ending with `suffix`) and whether `vsm-kit preprocess` builds it (optional for `check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

_COCO17 = "COCO-2017 (cocodataset.org): annotations_trainval2017.zip → coco2017/annotations/"
_REFER = "REFER annotations (refer_seg release used by LISA/V*) → refer_seg/{}/"
_MDETR = "MDETR pre-processed annotations (mdetr_annotations) → MixedGrounding/"
_VQA = "Hugging Face dataset craigwu/vsm_vqa_data → vsm_vqa_data/"


@dataclass(frozen=True)
class Entry:
    """One path under the dataset root. Folders count files whose names end with `suffix`."""

    path: str
    groups: tuple[str, ...]
    origin: str
    used_by: str
    folder: bool = False
    suffix: str = ".jpg"
    recursive: bool = False
    built: bool = False  # produced by `vsm-kit preprocess`, not downloaded (so optional)


def _refer(ds: str, by: str) -> dict[tuple[str, str], Entry]:
    return {
        (ds, "instances"): Entry(
            f"refer_seg/{ds}/instances.json",
            ("refer_seg",),
            _REFER.format(ds),
            f"{ds} reader: boxes and masks",
        ),
        (ds, "refs"): Entry(
            f"refer_seg/{ds}/refs({by}).p",
            ("refer_seg",),
            _REFER.format(ds),
            f"{ds} reader: referring expressions and splits",
        ),
    }


# (source, role) → entry, in the order `vsm-kit check` lists them
PATHS: dict[tuple[str, str], Entry] = {
    ("coco", "instances"): Entry(
        "coco2017/annotations/instances_train2017.json",
        ("general_segdet",),
        _COCO17,
        "preprocess (COCO step) → COCO-Stuff boxes",
    ),
    ("coco", "images"): Entry(
        "coco2017/train2017",
        ("general_segdet", "vqa"),
        "COCO-2017 train2017.zip → coco2017/train2017/",
        "COCO-Stuff, PACO-LVIS and VQA images",
        folder=True,
    ),
    ("cocostuff", "annotations"): Entry(
        "cocostuff/annotations/stuff_train2017.json",
        ("general_segdet",),
        "COCO-Stuff stuff_trainval2017.zip → cocostuff/annotations/",
        "preprocess (COCO step) → COCO-Stuff boxes",
    ),
    ("cocostuff", "label_maps"): Entry(
        "cocostuff/train2017",
        ("general_segdet",),
        "COCO-Stuff stuffthingmaps_trainval2017.zip (train2017/) → cocostuff/train2017/",
        "COCO-Stuff label maps (masks)",
        folder=True,
        suffix=".png",
    ),
    ("cocostuff", "index"): Entry(
        "cocostuff/annotations/image2bboxes.json",
        ("general_segdet",),
        "`vsm-kit preprocess --only coco`",
        "training: COCO-Stuff boxes",
        built=True,
    ),
    ("objects365", "annotations"): Entry(
        "object365/zhiyuan_objv2_train.json",
        ("general_segdet",),
        "Objects365-v2 train annotations → object365/",
        "preprocess (Objects365 step)",
    ),
    ("objects365", "images"): Entry(
        "object365/images/train",
        ("general_segdet",),
        "Objects365-v2 train image patches → object365/images/train/patchN/",
        "Objects365 images",
        folder=True,
        recursive=True,
    ),
    ("objects365", "index"): Entry(
        "object365/image2bboxes.json",
        ("general_segdet",),
        "`vsm-kit preprocess --only objects365`",
        "training: Objects365 boxes",
        built=True,
    ),
    ("paco_lvis", "annotations"): Entry(
        "vlpart/paco/annotations/paco_lvis_v1_train.json",
        ("general_segdet",),
        "PACO release (paco_lvis_v1 annotations) → vlpart/paco/annotations/",
        "PACO-LVIS reader: object and part masks",
    ),
    **_refer("refclef", "unc"),
    **_refer("refcoco", "unc"),
    **_refer("refcoco+", "unc"),
    **_refer("refcocog", "umd"),
    ("refclef", "images"): Entry(
        "refer_seg/images/saiapr_tc-12",
        ("refer_seg",),
        "ImageCLEF saiapr_tc-12 images → refer_seg/images/saiapr_tc-12/",
        "refCLEF images",
        folder=True,
        recursive=True,
    ),
    ("refcoco", "images"): Entry(  # shared by refCOCO+ and refCOCOg
        "refer_seg/images/mscoco/images/train2014",
        ("refer_seg",),
        "COCO-2014 train2014.zip → refer_seg/images/mscoco/images/train2014/",
        "refCOCO/refCOCO+/refCOCOg images",
        folder=True,
    ),
    ("goldg", "mixed"): Entry(
        "MixedGrounding/final_mixed_train.json",
        ("mixed_grounding",),
        _MDETR,
        "preprocess (GoldG step): COCO and VG captions",
    ),
    ("goldg", "flickr"): Entry(
        "MixedGrounding/final_flickr_separateGT_train.json",
        ("mixed_grounding",),
        _MDETR,
        "preprocess (GoldG step): Flickr30k-entities captions",
    ),
    ("goldg", "combined"): Entry(
        "MixedGrounding/goldG_train.json",
        ("mixed_grounding",),
        "`vsm-kit preprocess --only goldg`",
        "training: grounding records",
        built=True,
    ),
    ("goldg", "flickr_images"): Entry(
        "MixedGrounding/flickr30k-images",
        ("mixed_grounding",),
        "Flickr30k images → MixedGrounding/flickr30k-images/",
        "GoldG flickr images",
        folder=True,
    ),
    ("goldg", "vg_images"): Entry(
        "MixedGrounding/GQA/images",
        ("mixed_grounding",),
        "GQA images (images.zip) → MixedGrounding/GQA/images/",
        "GoldG vg images",
        folder=True,
    ),
    ("goldg", "coco_images"): Entry(
        "coco2014/train2014",
        ("mixed_grounding",),
        "COCO-2014 train2014.zip → coco2014/train2014/ (a link to the refer_seg copy works)",
        "GoldG coco images",
        folder=True,
    ),
    ("llava_instruct_80k", "annotations"): Entry(
        "vsm_vqa_data/llava_instruct_80k.json", ("vqa",), _VQA, "VQA: LLaVA-Instruct-80k"
    ),
    ("possible_locations_conv_86k", "annotations"): Entry(
        "vsm_vqa_data/possible_locations_conv_86k.json",
        ("vqa",),
        _VQA,
        "VQA: possible-locations questions",
    ),
}


def entry(source: str, role: str) -> Entry:
    """The table's entry for (source, role), looked up now (so a patched table is followed)."""
    return PATHS[source, role]


def path(source: str, role: str) -> str:
    """The path of (source, role), relative to the dataset root."""
    return PATHS[source, role].path


def at(data_dir: str | Path, source: str, role: str) -> Path:
    """The path of (source, role) under the dataset root `data_dir`."""
    return Path(data_dir) / PATHS[source, role].path
