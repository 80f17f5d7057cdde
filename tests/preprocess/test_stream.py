import json
import random

import pytest

from vsm_kit.errors import MalformedJsonError
from vsm_kit.preprocess._stream import stream_arrays

TRICKY = ['a"b', "x\\", "{[", "]}", '\\"', "é漢", "\\\\", "", ",", '"]', "\n\t"]


def _value(rng, depth=0):
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.choice(TRICKY) + str(rng.random())
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return rng.choice([None, True, False, rng.randrange(10**12)])
    if kind == 3:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(TRICKY) + str(i): _value(rng, depth + 1) for i in range(rng.randrange(4))}


@pytest.mark.parametrize("seed", range(12))
def test_batches_equal_a_whole_parse(tmp_path, seed):
    rng = random.Random(seed)
    doc = {
        "info": {"a": "[not an array]", "images": "decoy"},
        "images": [_value(rng) for _ in range(rng.randrange(0, 60))],
        "annotations": [{"bbox": [1, 2], "s": rng.choice(TRICKY)} for _ in range(50)],
        "empty": [],
        "categories": [_value(rng) for _ in range(5)],
    }
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
    p = tmp_path / "x.json"
    p.write_text(text, encoding="utf-8")
    got = {}
    for batch in stream_arrays(
        p,
        {"images", "annotations", "empty", "categories"},
        chunk=rng.choice([7, 64, 1000, 1 << 20]),
    ):
        items = batch.parse()
        assert batch.count == sum(isinstance(x, (dict, list)) for x in items)
        got.setdefault(batch.key, []).extend(items)
    for key in ("images", "annotations", "categories"):
        assert got.get(key, []) == doc[key]
    assert "empty" not in got


@pytest.mark.parametrize("chunk", [5, 100, 1 << 20])
def test_truncated_file_reports_end_offset(tmp_path, chunk):
    p = tmp_path / "t.json"
    text = json.dumps({"images": [{"id": i} for i in range(100)]}).encode()
    p.write_bytes(text[:-40])
    with pytest.raises(MalformedJsonError) as err:
        for batch in stream_arrays(p, {"images"}, chunk=chunk):
            batch.parse()
    assert err.value.offset == len(text) - 40 and "t.json" in str(err.value)


def test_malformed_element_reports_its_byte_offset(tmp_path):
    p = tmp_path / "m.json"
    good = b'{"images": [{"id": 1}, {"id": 2}, {"id": 3}]}'
    bad = good.replace(b'{"id": 2}', b'{"id": 2x}')
    p.write_bytes(bad)
    with pytest.raises(MalformedJsonError) as err:
        [b.parse() for b in stream_arrays(p, {"images"})]
    assert err.value.offset == bad.index(b"x}")
    assert err.value.line == 1 and err.value.column == bad.index(b"x}") + 1


def test_top_level_must_be_an_object(tmp_path):
    p = tmp_path / "l.json"
    p.write_text("[1, 2]")
    with pytest.raises(MalformedJsonError, match="top level"):
        list(stream_arrays(p, {"images"}))
