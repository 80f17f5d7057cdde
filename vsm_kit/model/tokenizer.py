"""The LLaMA tokenizer as the VSM uses it: [LOC] added as a normal token, image markers special."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

LOC_TOKEN = "[LOC]"
IM_START, IM_END, IM_PATCH = "<im_start>", "<im_end>", "<im_patch>"


@dataclass(frozen=True)
class SpecialIds:
    loc: int
    im_start: int
    im_end: int
    pad: int
    bos: int
    eos: int


def load_tokenizer(path: str | Path, model_max_length: int = 512):
    """(tokenizer, SpecialIds) from a local folder (a SentencePiece `tokenizer.model` with its
    configs, as LLaVA ships it). Adding tokens that exist already is a no-op, so a merged VSM
    folder (which has [LOC]) gives the same ids as its base."""
    tok = AutoTokenizer.from_pretrained(
        str(path), model_max_length=model_max_length, padding_side="right", use_fast=False
    )
    tok.pad_token = tok.unk_token
    tok.add_tokens(LOC_TOKEN)
    tok.add_tokens([IM_START, IM_END], special_tokens=True)
    # by token, not by encoding "[LOC]": some tokenizers put a "▁" piece first
    ids = SpecialIds(
        loc=tok.convert_tokens_to_ids(LOC_TOKEN),
        im_start=tok.convert_tokens_to_ids(IM_START),
        im_end=tok.convert_tokens_to_ids(IM_END),
        pad=tok.pad_token_id,
        bos=tok.bos_token_id,
        eos=tok.eos_token_id,
    )
    return tok, ids


TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer",
    "bos_token": "<s>",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "model_max_length": 2048,
    "add_bos_token": True,
    "add_eos_token": False,
    "legacy": False,
    "clean_up_tokenization_spaces": False,
}


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """Write the tokenizer as LLaVA ships it: the SentencePiece `tokenizer.model`, its configs and
    `added_tokens.json` with every token added past the SentencePiece vocabulary (the image
    markers, [LOC]), so a saved model loads through the same path as the real base."""
    import json
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer.vocab_file, folder / "tokenizer.model")
    special = {"<unk>", "<s>", "</s>"}
    added = {t: i for t, i in tokenizer.get_added_vocab().items() if t not in special}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIG, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )
