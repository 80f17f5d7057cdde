"""Samples, the hybrid mix and the collate on real demo-world data."""

import dataclasses

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

from vsm_kit.data.masks import SummedParts
from vsm_kit.data.records import Target
from vsm_kit.data.sources import open_source
from vsm_kit.model.tokenizer import load_tokenizer
from vsm_kit.model.vsm import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vsm_kit.train import hybrid as hybrid_module
from vsm_kit.train.collate import Collator
from vsm_kit.train.config import ConfigError, GroupMix, RunConfig
from vsm_kit.train.hybrid import DataTreeError, HybridDataset, StepSampler
from vsm_kit.train.samples import ANSWER, MAX_BOXES, QUESTION, build_sample

from ..data.edits import drop_coco_boxes


@pytest.fixture(scope="module")
def tok(demo_world):
    return load_tokenizer(demo_world.weights / "llava-tiny")


@pytest.fixture(scope="module")
def dataset(demo_world):
    return HybridDataset(demo_world.dataset, RunConfig().data.mix, seed=0)


def _supervised_spans(ids, labels, tokenizer) -> list[str]:
    """The decoded runs of consecutive supervised positions without spaces (decoding puts one
    after an added token such as [LOC]), `</s>` spelled out (decoding drops it)."""
    on = (labels != IGNORE_INDEX).tolist() + [False]
    spans, start = [], None
    for k, flag in enumerate(on):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            run = ids[start:k].tolist()
            eos = "</s>" if run[-1] == tokenizer.eos_token_id else ""
            spans.append(tokenizer.decode(run[:-1] if eos else run).replace(" ", "") + eos)
            start = None
    return spans


def test_only_assistant_replies_are_supervised(dataset, tok):
    tokenizer, ids = tok
    samples = [dataset[i] for i in range(12)]
    batch = Collator(tokenizer, ids)(samples)
    messages = [m for s in samples for m in s.messages]
    assert len(messages) == len(batch["input_ids"])
    assert any(len(m) > 2 for m in messages)  # a multi-turn VQA conversation is among them
    for r, conv in enumerate(messages):
        ids, labels = batch["input_ids"][r], batch["labels"][r]
        replies = [a.replace(" ", "") + "</s>" for a in conv[1::2]]
        assert _supervised_spans(ids, labels, tokenizer) == replies
        assert labels[0] == IGNORE_INDEX  # BOS


def test_loc_positions_and_hidden_vqa_loc(dataset, tok):
    tokenizer, ids = tok
    samples = [dataset[i] for i in range(16)]
    assert {s.source for s in samples} & {"llava_instruct_80k", "possible_locations_conv_86k"}
    batch = Collator(tokenizer, ids)(samples)
    assert (batch["input_ids"] == ids.loc).sum() == len(batch["bboxes_labels_list"])
    for r, valid in enumerate(batch["bboxes_valid_list"].tolist()):
        row, att = batch["input_ids"][r], batch["attention_masks"][r]
        (loc,) = torch.nonzero(row == ids.loc)[:, 0].tolist()
        if valid:  # the answer's [LOC]: supervised and visible
            assert batch["labels"][r, loc] == ids.loc and att[loc]
        else:  # VQA: right after <im_start><image><im_end>, not supervised, hidden as a key
            image = torch.nonzero(row == IMAGE_TOKEN_INDEX)[0, 0]
            assert row[image + 1] == ids.im_end and loc == image + 2
            assert batch["labels"][r, loc] == IGNORE_INDEX and not att[loc]
            assert att[:loc].all()


def test_truncation_drops_queries_with_their_targets(demo_world, tok):
    tokenizer, ids = tok
    source = open_source("refclef", demo_world.dataset)
    rng = __import__("numpy").random.default_rng(0)
    sample = build_sample(source[0], source, rng, k=3)
    inputs = HybridDataset(demo_world.dataset, {"refer_seg": GroupMix(1, {"refclef": 1})}).inputs
    sample.images, sample.images_clip = inputs.both(
        torch.from_numpy(source[0].load_image()).permute(2, 0, 1)
    )
    long_text = "a " * 200 + "thing"
    sample.messages[1][0] = sample.messages[1][0].replace("in this image", long_text)
    full = Collator(tokenizer, ids, truncate=False)([sample])
    cut = Collator(tokenizer, ids, max_length=512)([sample])
    assert len(full["bboxes_labels_list"]) == len(sample.messages)
    kept = [0] + list(range(2, len(sample.messages)))
    assert len(cut["bboxes_labels_list"]) == len(kept)
    for box, j in zip(cut["bboxes_labels_list"], kept, strict=True):
        assert torch.equal(box, sample.boxes[j])
    assert torch.equal(cut["masks_list"][0], sample.masks[kept].float())
    assert (cut["input_ids"] == ids.loc).sum() == len(kept)
    assert cut["input_ids"].shape[1] <= 512 - 256 + 1
    for messages in sample.messages:  # every [LOC] cut: the batch is empty, the config to blame
        messages[0] = messages[0].replace("in this image", long_text)
    with pytest.raises(ConfigError, match=r"data.model_max_length: 512 tokens cut .*Fix: raise"):
        Collator(tokenizer, ids, max_length=512)([sample])


def test_samples_are_seeded_per_index_across_workers(demo_world, dataset):
    again = HybridDataset(demo_world.dataset, RunConfig().data.mix, seed=0)
    other = HybridDataset(demo_world.dataset, RunConfig().data.mix, seed=1)
    draws = [dataset.draw(i) for i in range(20)]
    assert [(s.image_path, s.texts) for s in draws] == [
        (s.image_path, s.texts) for s in map(again.draw, range(20))
    ]
    assert [s.texts for s in draws] != [s.texts for s in map(other.draw, range(20))]

    def paths(workers):
        loader = DataLoader(
            dataset,
            batch_sampler=StepSampler(2, rank=1, world_size=2, start=3, stop=6),
            num_workers=workers,
            collate_fn=lambda batch: [str(s.image_path) for s in batch],
        )
        return list(loader)

    expected = [[str(dataset.draw(i).image_path) for i in (k, k + 1)] for k in (14, 18, 22)]
    assert paths(0) == paths(2) == expected


def test_step_sampler_partitions_indices_between_ranks():
    ranks = [list(StepSampler(3, rank=r, world_size=2, stop=4)) for r in range(2)]
    flat = sorted(i for r in ranks for b in r for i in b)
    assert flat == list(range(24))
    resumed = list(StepSampler(3, rank=1, world_size=2, start=2, stop=4))
    assert resumed == ranks[1][2:]


def test_one_decode_per_sample_and_no_dummy_masks(demo_world, monkeypatch):
    calls = []
    real = hybrid_module.decode_rgb
    monkeypatch.setattr(hybrid_module, "decode_rgb", lambda p: calls.append(p) or real(p))
    ds = HybridDataset(demo_world.dataset, {"general_segdet": GroupMix(1, {"objects365": 1})})
    sample = ds[0]
    assert calls == [sample.image_path]
    assert sample.masks is None and sample.masks_valid == [0] * len(sample.messages)
    assert sample.images.shape == (3, 768, 768) and sample.images_clip.shape == (3, 224, 224)
    assert all(m[1] == ANSWER for m in sample.messages)


def test_missing_pieces_give_the_layout_report(world_copy):
    (world_copy / "refer_seg" / "refcoco" / "instances.json").unlink()
    with pytest.raises(DataTreeError) as err:
        HybridDataset(world_copy, RunConfig().data.mix)
    text = str(err.value)
    assert "refcoco" in text and "Dataset layout under" in text and "missing" in text


def _with_targets(source, targets, i=0):
    return dataclasses.replace(source[i], targets=tuple(targets))


def _many_boxes(rec, n):
    x = np.arange(n, dtype=np.float32)[:, None] % (rec.width - 2)
    return np.concatenate([x, x * 0, x + 2, x * 0 + 2], 1)


@pytest.mark.parametrize(("name", "kept"), [("objects365", MAX_BOXES), ("paco_lvis", 150)])
def test_box_cap_applies_to_objects365_and_cocostuff_only(demo_world, name, kept):
    source = open_source(name, demo_world.dataset)
    t = source[0].targets[0]
    many = dataclasses.replace(t, boxes_xyxy=_many_boxes(source[0], 150))
    sample = build_sample(_with_targets(source, [many]), source, np.random.default_rng(0))
    assert len(sample.boxes[0]) == kept


def test_objects365_alternatives_keep_their_spaces(demo_world):
    source = open_source("objects365", demo_world.dataset)
    t = dataclasses.replace(source[0].targets[0], text="Tape Measur/ Ruler")
    record = _with_targets(source, [t])
    drawn = {}
    for seed in range(20):
        sample = build_sample(record, source, np.random.default_rng(seed))
        drawn[sample.texts[0]] = sample.messages[0][0]
    assert drawn == {
        "Tape Measur": QUESTION.format("tape measur"),
        " Ruler": QUESTION.format(" ruler"),  # "Please locate the  ruler in this image."
    }


def test_refer_masks_are_the_summed_parts_up_to_the_batch(demo_world, tok):
    """Overlapping segmentation parts give 2 in the training target, as the original trains
    (§3.4), while the target's display mask stays bool."""
    source = open_source("refcoco", demo_world.dataset)
    rec = source[0]
    h, w = rec.height, rec.width
    a, b = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    a[2:10, 2:10], b[6:14, 6:14] = 1, 1
    parts = [mask_utils.encode(np.asfortranarray(m)) for m in (a, b)]
    parts = [{"size": p["size"], "counts": p["counts"].decode()} for p in parts]
    t = Target(rec.targets[0].text, rec.targets[0].boxes_xyxy, mask_fn=SummedParts(parts, h, w))
    sample = build_sample(_with_targets(source, [t]), source, np.random.default_rng(0))
    assert sample.masks.dtype == torch.uint8
    assert torch.equal(sample.masks[0], torch.from_numpy(a + b)) and sample.masks.max() == 2
    assert t.mask().dtype == bool and t.mask().sum() == ((a + b) > 0).sum()
    inputs = HybridDataset(demo_world.dataset, {"refer_seg": GroupMix(1, {"refcoco": 1})}).inputs
    sample.images, sample.images_clip = inputs.both(
        torch.from_numpy(rec.load_image()).permute(2, 0, 1)
    )
    batch = Collator(*tok)([sample])
    assert batch["masks_list"][0].max() == 2.0 and batch["masks_valid_list"][0].tolist() == [1]
    paco = open_source("paco_lvis", demo_world.dataset)
    plain = build_sample(paco[0], paco, np.random.default_rng(0))
    assert plain.masks.dtype == torch.uint8 and plain.masks.max() == 1


def test_cocostuff_class_without_boxes_is_a_candidate_and_redraws(demo_world, world_copy):
    """The original samples among every class of the label map and asserts when a sampled one
    has no box: such draws are re-drawn, the others are the original's samples."""
    source = open_source("cocostuff", world_copy)
    others = tuple(sorted(t.text for t in source[7].targets if t.text != "chair"))
    drop_coco_boxes(world_copy, source[7].image_path.name, "chair")
    source = open_source("cocostuff", world_copy)
    record = source[7]
    assert len(record.targets) == 4 and len(others) == 3  # three classes and the box-less chair
    outcomes = [build_sample(record, source, np.random.default_rng(s)) for s in range(200)]
    drawn = [s for s in outcomes if s is not None]
    assert {tuple(sorted(s.texts)) for s in drawn} == {others}
    # 3 of 4 classes: the box-less one is among them in 3 draws of 4
    assert 0.6 < 1 - len(drawn) / len(outcomes) < 0.9


def _vqa(demo_world, turns):
    source = open_source("llava_instruct_80k", demo_world.dataset)
    record = dataclasses.replace(source[0], conversations=tuple(turns))
    return build_sample(record, source, np.random.default_rng(0))


def _turn(role, text):
    return {"from": role, "value": text}


def test_vqa_image_message_rewritten_wherever_it_is(demo_world):
    sample = _vqa(
        demo_world,
        [
            _turn("gpt", "Hello."),  # a first turn not from the human is dropped
            _turn("human", "Hi there."),
            _turn("gpt", "Look: \n<image> here "),
            _turn("human", "And?"),
            _turn("gpt", "That is all."),
        ],
    )
    # the image message is rebuilt as "<image>[LOC]\n" + its stripped text, even a reply
    assert sample.messages == [["Hi there.", "<image>[LOC]\nLook: \n here", "And?", "That is all."]]
    assert sample.bboxes_valid == [0] and sample.masks is None
    first = _vqa(demo_world, [_turn("human", "What is it?\n<image>"), _turn("gpt", "A cup.")])
    assert first.messages == [["<image>[LOC]\nWhat is it?", "A cup."]]


@pytest.mark.parametrize(
    "turns",
    [
        [_turn("human", "<image>\nA?"), _turn("human", "B?")],  # no alternation (asserts)
        [_turn("human", "<image>\nA?"), _turn("bot", "B.")],  # an unknown role
        [_turn("human", "<image>\nA?"), _turn("gpt", "B."), _turn("human", "<image> C?")],
        [_turn("human", "A?"), _turn("gpt", "B.")],  # no image
        [_turn("human", "<image>\nA?"), _turn("gpt", "B."), _turn("human", "C?")],  # no answer
        [_turn("gpt", "<image>\nA.")],  # nothing left once the first turn is dropped
    ],
)
def test_vqa_conversations_the_original_cannot_train_on_are_redrawn(demo_world, turns):
    assert _vqa(demo_world, turns) is None


def test_unusable_records_redraw_inside_their_group(demo_world, monkeypatch):
    """A group keeps its rate however often its records are unusable: the original re-draws a
    new image of the same group. Here every COCO-Stuff record is unusable."""
    real = hybrid_module.build_sample

    def no_cocostuff(record, source, rng, k):
        return None if source.name == "cocostuff" else real(record, source, rng, k)

    monkeypatch.setattr(hybrid_module, "build_sample", no_cocostuff)
    mix = {
        "general_segdet": GroupMix(1, {"cocostuff": 3, "objects365": 1}),
        "vqa": GroupMix(1, {"llava_instruct_80k": 1}),
    }
    ds = HybridDataset(demo_world.dataset, mix, seed=0)
    sources = [ds.draw(i).source for i in range(400)]
    assert "cocostuff" not in sources
    share = sources.count("objects365") / len(sources)
    assert 0.43 < share < 0.57  # re-drawing the group instead would give about 1/5


def test_a_target_outside_the_image_redraws_the_sample(demo_world):
    """The original re-draws the sample when a query loses every box to clamping; validation
    keeps the image's other queries."""
    source = open_source("objects365", demo_world.dataset)
    record = source[0]
    inside = next(t for t in record.targets if "/" not in t.text)  # asked as it is named
    outside = Target("ghost", np.array([[-50, -50, -10, -10]], np.float32), 999)
    record = dataclasses.replace(record, targets=(inside, outside))
    assert build_sample(record, source, np.random.default_rng(0)) is None
    kept = build_sample(record, source, np.random.default_rng(0), drop_empty_targets=True)
    assert kept is not None and kept.texts == [inside.text]
