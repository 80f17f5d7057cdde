"""Every prompt vsm_kit builds tokenizes to the ids the original produces with transformers
4.31's slow LLaMA tokenizer on the same files; the collate's labels and attention masks match
the original collate's; a tokenizer folder vsm_kit saves loads back to the same ids in both.

Run on the demo tokenizer and on a LLaMA-shaped one (special tokens declared as AddedToken
records, as LLaMA conversions ship them), both with LLaMA's SentencePiece settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsm_kit.data.sources import SOURCES, open_source
from vsm_kit.demo._weights import _corpus, write_tokenizer
from vsm_kit.model.conversation import image_prompt, render, tokenize_with_image
from vsm_kit.model.predictor import LOCATE
from vsm_kit.model.tokenizer import load_tokenizer
from vsm_kit.search.cues import CONTEXT_QUESTION
from vsm_kit.train.collate import Collator
from vsm_kit.train.samples import build_sample
from vsm_kit.train.validate import ValidationSet

from .sideenv import run_side

TARGETS = ["dog", "red cup", "the man on the left", "Tape Measur/ Ruler", "cat  2", " sofa "]
EXTRA_LINES = [
    "Where is the clock?  It is most likely to appear on the wall, near the window.",
    "Line one.\nLine two:\n\n- item 1\n- item 22",
]


def _folders(demo_world, tmp_path_factory):
    llama = tmp_path_factory.mktemp("llama-tokenizer")
    write_tokenizer(llama, _corpus().splitlines() + EXTRA_LINES * 3, 1200, as_added_tokens=True)
    return {"demo": demo_world.weights / "llava-tiny", "llama": llama}


@pytest.fixture(scope="module", params=["demo", "llama"])
def case(request, demo_world, tmp_path_factory):
    """(ours: tokenizer and ids, prompts, batches, the side environment's reply)."""
    folder = _folders(demo_world, tmp_path_factory)[request.param]
    tokenizer, ids = load_tokenizer(folder)
    prompts = [image_prompt(LOCATE.format(t), "Sure, [LOC].") for t in TARGETS]
    prompts += [image_prompt(LOCATE.format(t)) for t in TARGETS]
    prompts += [image_prompt(CONTEXT_QUESTION.format(t)) for t in TARGETS]
    prompts += [image_prompt(line) for line in EXTRA_LINES]
    batches = _batches(demo_world.dataset)
    saved = tmp_path_factory.mktemp("saved") / "tokenizer"
    tokenizer.save(saved)
    decode = [tokenize_with_image(p, tokenizer)[1:] for p in prompts[:4]]
    decode = [[i for i in d if i >= 0] for d in decode]
    request_ = {
        "texts": prompts,
        "batches": [
            {
                "conversations": [render(m) for s in samples for m in s.messages],
                "bboxes_valid": [v for s in samples for v in s.bboxes_valid],
                "inference": inference,
            }
            for _, samples, inference in batches
        ],
        "decode": decode,
    }
    base = run_side({"tokenizer": str(folder), **request_})
    again = run_side({"tokenizer": str(saved), **request_})
    return tokenizer, ids, prompts, batches, base, again, saved, decode


def _batches(dataset):
    """(name, samples, inference) per training source (a few samples each, the sampler's way)
    and for the validation set."""
    out = []
    for name in SOURCES:
        source = open_source(name, dataset)
        rng = np.random.default_rng(7)
        samples = [build_sample(source[i], source, rng) for i in range(min(4, len(source)))]
        samples = [s for s in samples if s is not None]
        if samples:
            out.append((name, samples, False))
    val = ValidationSet(dataset, limit=3)
    out.append(("validation", [val[k] for k in range(len(val))], True))
    for _, samples, _ in out:  # pixels play no part here
        for s in samples:
            s.images = s.images_clip = torch.zeros((3, 2, 2), dtype=torch.uint8)
    return out


def test_special_ids_and_vocabulary_match(case):
    tokenizer, ids, *_, base, again, _, _ = case
    assert base["transformers"] == "4.31.0"
    assert ids.loc == base["loc"] == again["loc"]
    assert len(tokenizer) == base["vocab"] == again["vocab"]


def test_prompts_tokenize_to_the_original_ids(case):
    tokenizer, _, prompts, _, base, _, _, _ = case
    for prompt, expected in zip(prompts, base["ids"], strict=True):
        assert tokenize_with_image(prompt, tokenizer) == expected, prompt


def test_detection_prompt_is_the_generation_prompt_plus_the_trained_answer(case):
    """The predictor reads [LOC] from "Sure, [LOC]." given as the answer; the original generates
    it after "ASSISTANT:". Same ids up to the answer, and no `▁` between "," and [LOC]."""
    tokenizer, ids, _, _, base, _, _, _ = case
    n = len(TARGETS)
    for full, open_ in zip(base["ids"][:n], base["ids"][n : 2 * n], strict=True):
        assert full[: len(open_)] == open_
        loc = full.index(ids.loc)
        assert tokenizer.tokenize(",")[-1] == "," and full[loc - 1] == tokenizer.token_id(",")


@pytest.mark.parametrize("name", [*SOURCES, "validation"])
def test_collate_ids_labels_attention_match(case, name):
    tokenizer, ids, _, batches, base, _, _, _ = case
    names = [b[0] for b in batches]
    if name not in names:  # the original's GoldG rule leaves Flickr entries without boxes
        assert name == "flickr", f"the demo world gives no {name} sample"
        return
    k = names.index(name)
    _, samples, inference = batches[k]
    batch = Collator(tokenizer, ids, truncate=not inference)(samples)
    expected = base["batches"][k]
    assert batch["input_ids"].tolist() == expected["input_ids"], name
    assert batch["labels"].tolist() == expected["labels"], name
    assert batch["attention_masks"].tolist() == expected["attention"], name
    assert (batch["labels"] != -100).any(), name


def test_saved_folder_loads_back_to_the_same_ids(case):
    tokenizer, _, prompts, _, base, again, saved, _ = case
    reloaded, _ = load_tokenizer(saved)
    assert again["ids"] == base["ids"]
    assert again["batches"] == base["batches"]
    assert [tokenize_with_image(p, reloaded) for p in prompts] == base["ids"]


def test_decode_matches(case):
    tokenizer, *_, base, _, _, decode = case
    assert [tokenizer.decode(d, skip_special_tokens=True) for d in decode] == base["decoded"]


def test_vqa_rows_hide_their_loc_from_attention(case):
    """A VQA sample carries [LOC] after the image, masked as a key but still in the ids."""
    tokenizer, ids, _, batches, _, _, _, _ = case
    name, samples, _ = next(b for b in batches if b[0] == "llava_instruct_80k")
    batch = Collator(tokenizer, ids)(samples)
    loc = batch["input_ids"] == ids.loc
    assert loc.any(), name
    assert not batch["attention_masks"][loc].any()
    assert torch.equal(batch["bboxes_valid_list"], torch.zeros(len(samples), dtype=torch.long))
