import pytest

from vsm_kit.cli import main
from vsm_kit.data import check_layout

REQUIRED_FILES = [
    "coco2017/annotations/instances_train2017.json",
    "cocostuff/annotations/stuff_train2017.json",
    "object365/zhiyuan_objv2_train.json",
    "vlpart/paco/annotations/paco_lvis_v1_train.json",
    "refer_seg/refcocog/refs(umd).p",
    "refer_seg/refclef/instances.json",
    "MixedGrounding/final_flickr_separateGT_train.json",
    "vsm_vqa_data/possible_locations_conv_86k.json",
]


def test_check_passes_on_demo_world(demo_world, capsys):
    assert main(["check", str(demo_world.dataset)]) == 0
    out = capsys.readouterr().out
    assert "All required paths" in out and "not built" in out  # indexes come from preprocess
    assert "coco2017/train2017" in out and "16 files" in out


@pytest.mark.parametrize("rel", REQUIRED_FILES)
def test_deleting_a_required_file_fails_and_names_it(world_copy, rel, capsys):
    (world_copy / rel).unlink()
    assert main(["check", str(world_copy)]) == 1
    out = capsys.readouterr().out
    assert f"- missing: {world_copy / rel}" in out
    assert "comes from:" in out and "needed for:" in out


def test_empty_image_folder_and_corrupt_image(world_copy, capsys):
    for p in (world_copy / "MixedGrounding/GQA/images").iterdir():
        p.unlink()
    victim = sorted((world_copy / "coco2017/train2017").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated JPEG
    report = check_layout(world_copy)
    status = {r.entry.path: r.status for r in report.rows}
    assert status["MixedGrounding/GQA/images"] == "empty"
    assert status["coco2017/train2017"] == "corrupt"
    assert victim.name in str(report)
    assert main(["check", str(world_copy)]) == 1


def test_group_selection_limits_the_check(world_copy):
    (world_copy / "vsm_vqa_data/llava_instruct_80k.json").unlink()
    assert check_layout(world_copy, ["refer_seg"]).ok
    assert not check_layout(world_copy, ["vqa"]).ok
    assert main(["check", str(world_copy), "--datasets", "refer_seg,mixed_grounding"]) == 0
    with pytest.raises(ValueError, match="unknown dataset group"):
        check_layout(world_copy, ["coco"])


def test_report_can_leave_out_built_files(demo_world):
    report = check_layout(demo_world.dataset)
    full, raw = report.format(root="D"), report.format(root="D", built=False)
    assert "image2bboxes.json" in full and "image2bboxes.json" not in raw
    assert "Dataset layout under D" in raw and str(demo_world.dataset) not in raw


def test_unknown_names_are_user_errors_listing_the_known_ones(tmp_path):
    from vsm_kit.data import open_source
    from vsm_kit.demo import make_demo_world
    from vsm_kit.errors import BadArgumentError
    from vsm_kit.preprocess import preprocess

    with pytest.raises(BadArgumentError, match=r"unknown dataset group\(s\) \['nope'\]; choose"):
        check_layout(tmp_path, groups=["nope"])
    with pytest.raises(BadArgumentError, match="unknown source .nope.; choose from objects365, "):
        open_source("nope", tmp_path)
    with pytest.raises(BadArgumentError, match=r"unknown step\(s\) \['nope'\]; choose from "):
        preprocess(tmp_path, only=["nope"])
    with pytest.raises(BadArgumentError, match="scale must be a positive integer, got 0"):
        make_demo_world(tmp_path / "w", scale=0)
