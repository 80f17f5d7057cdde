"""Boxes, masks, JSON errors and pickle safety on small hand-made inputs."""

import os
import pickle

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from vsm_kit.data import boxes
from vsm_kit.data.masks import SummedParts, decode_segmentation, sum_segmentation_parts
from vsm_kit.data.sources import load_refs
from vsm_kit.demo._draw import uncompressed_rle
from vsm_kit.errors import MalformedJsonError, UnsafePickleError
from vsm_kit.jsonio import load_json, load_json_shared


def test_box_pipeline_clamps_and_drops_like_the_original():
    xywh = [[10, 20, 30, 40], [-5, -5, 10, 10], [90, 0, 0, 10], [95, 95, 20, 20]]
    xyxy = boxes.xywh_to_xyxy(xywh)
    assert xyxy.tolist() == [[10, 20, 40, 60], [-5, -5, 5, 5], [90, 0, 90, 10], [95, 95, 115, 115]]
    out = boxes.training_targets(xywh, width=100, height=100)
    # the zero-width box goes; the others are clamped to the image, then normalised
    expected = [[0.25, 0.4, 0.3, 0.4], [0.025, 0.025, 0.05, 0.05], [0.975, 0.975, 0.05, 0.05]]
    assert np.allclose(out, expected)
    assert np.allclose(boxes.xyxy_to_xywh(xyxy), xywh)


def test_polygon_parts_union_and_empty():
    square = [0, 0, 4, 0, 4, 4, 0, 4]
    far = [6, 6, 9, 6, 9, 9, 6, 9]
    m = decode_segmentation([square, far], 10, 10)
    assert m.dtype == bool and m[1, 1] and m[7, 7] and not m[5, 5]
    assert not decode_segmentation([], 10, 10).any()


def test_rle_forms_decode_identically():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 5)) > 0.5
    mask[0, 0] = True  # a run of ones first: the encoding starts with a zero-length run
    rle = uncompressed_rle(mask)
    assert rle["counts"][0] == 0 and sum(rle["counts"]) == mask.size
    assert np.array_equal(decode_segmentation(rle, 7, 5), mask)
    comp = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    as_str = {"size": comp["size"], "counts": comp["counts"].decode()}
    assert np.array_equal(decode_segmentation(as_str, 7, 5), mask)
    # refCLEF: a list of compressed RLEs, OR-ed (overlap stays 1, never 2)
    assert np.array_equal(decode_segmentation([as_str, as_str], 7, 5), mask)


def _compressed(mask: np.ndarray, as_str: bool = True) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode() if as_str else rle["counts"]}


def test_refer_parts_are_summed_as_the_original_composes_them():
    """The original's refer training mask: decoded parts summed and cast to uint8, so overlaps
    hold 2 (§3.4); the bool union stays what `Target.mask()` shows."""
    a = np.zeros((6, 8), bool)
    a[1:4, 1:5] = True
    b = np.zeros((6, 8), bool)
    b[2:5, 3:7] = True
    expected = a.astype(np.uint8) + b.astype(np.uint8)  # 2 on rows 2-3, columns 3-4
    seg = [_compressed(a), _compressed(b, as_str=False)]  # str counts are encoded to bytes
    summed = sum_segmentation_parts(seg, 6, 8)
    assert summed.dtype == np.uint8 and np.array_equal(summed, expected)
    assert summed.max() == 2 and (summed == 2).sum() == 4
    lazy = SummedParts(seg, 6, 8)
    assert np.array_equal(lazy.summed(), expected)
    assert lazy().dtype == bool and np.array_equal(lazy(), a | b)
    assert np.array_equal(lazy(), decode_segmentation(seg, 6, 8))
    # polygons go through frPyObjects with the image size: the same polygon twice sums to 2
    square = [1, 1, 5, 1, 5, 4, 1, 4]
    once = decode_segmentation([square], 6, 8)
    assert np.array_equal(sum_segmentation_parts([square, square], 6, 8), 2 * once)
    empty = sum_segmentation_parts([], 6, 8)
    assert empty.dtype == np.uint8 and empty.shape == (6, 8) and not empty.any()


@pytest.mark.parametrize(
    "text, offset",
    [(b'{"images": [1, 2', 16), (b'{"a": 1,, "b": 2}', 8), ('{"é": x}'.encode(), 7)],
)
def test_malformed_json_names_file_and_byte_offset(tmp_path, text, offset):
    p = tmp_path / "bad.json"
    p.write_bytes(text)
    with pytest.raises(MalformedJsonError) as err:
        load_json(p)
    assert err.value.offset == offset
    assert str(p) in str(err.value) and f"byte {offset}" in str(err.value)


def test_shared_parse_is_reused_until_the_file_changes(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1}')
    first = load_json_shared(p)
    assert load_json_shared(p) is first
    p.write_text('{"a": 22}')
    os.utime(p, ns=(1, 1))
    assert load_json_shared(p) == {"a": 22}


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_refs_pickle_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "refs(unc).p"
    p.write_bytes(pickle.dumps([{"ref_id": 1, "x": _Evil()}], protocol=2))
    with pytest.raises(UnsafePickleError, match="refuses"):
        load_refs(p)
    assert not (tmp_path / "pwned").exists()
    good = tmp_path / "ok.p"
    good.write_bytes(pickle.dumps([{"ref_id": 1, "sentences": [{"sent": "a"}]}], protocol=2))
    assert load_refs(good)[0]["ref_id"] == 1
