"""Samples, the hybrid mix and the collate on real demo-world data."""

import pytest
import torch
from torch.utils.data import DataLoader

from vsm_kit.data.sources import open_source
from vsm_kit.model.tokenizer import load_tokenizer
from vsm_kit.model.vsm import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from vsm_kit.train import hybrid as hybrid_module
from vsm_kit.train.collate import Collator
from vsm_kit.train.config import GroupMix, RunConfig
from vsm_kit.train.hybrid import DataTreeError, HybridDataset, StepSampler
from vsm_kit.train.samples import ANSWER, build_sample


@pytest.fixture(scope="module")
def tok(demo_world):
    return load_tokenizer(demo_world.weights / "llava-tiny")


@pytest.fixture(scope="module")
def dataset(demo_world):
    return HybridDataset(demo_world.dataset, RunConfig().data.mix, seed=0)


def _supervised_spans(ids, labels, tokenizer) -> list[str]:
    """The decoded runs of consecutive supervised positions."""
    on = (labels != IGNORE_INDEX).tolist() + [False]
    spans, start = [], None
    for k, flag in enumerate(on):
        if flag and start is None:
            start = k
        elif not flag and start is not None:
            spans.append(tokenizer.decode(ids[start:k]))
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
        assert _supervised_spans(ids, labels, tokenizer) == [f"{a}</s>" for a in conv[1::2]]
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
