"""The LLaMA tokenizer exactly as the original VSM code runs it: transformers 4.31's slow
`LlamaTokenizer` in its legacy mode, over the folder's SentencePiece model.

seal_vsm_7b was trained on those ids, and transformers 5 no longer produces them (it keeps the
whitespace around added tokens and drops SentencePiece's dummy prefix after them: 3–4 extra or
different tokens per prompt). The rule, checked against 4.31 itself in `tests/compat/`:
- the text is split on the no-split tokens — the special tokens (`<s>`, `</s>`, `<unk>`) and every
  added token (`<im_patch>`, `<im_start>`, `<im_end>`, `[LOC]`) — longest match first;
- whitespace (spaces and newlines) next to a no-split token is stripped from its neighbours: on
  both sides for a plain token, as the token's `lstrip`/`rstrip` flags say for a special token
  declared as an `AddedToken` (LlamaTokenizer declares string specials with both flags off,
  unless `special_tokens_map.json` names them as plain strings);
- every remaining chunk is encoded by SentencePiece on its own, dummy prefix included
  (`<im_end>` "Please" → `<im_end> ▁Please`), and a BOS starts the ids.
A config's `legacy` key is not read: the original's base folders predate it (4.31 then runs the
legacy rule) and its merge writes `true`; older vsm_kit saves wrote `false` by mistake.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from ..errors import MissingDataError

LOC_TOKEN = "[LOC]"
IM_START, IM_END, IM_PATCH = "<im_start>", "<im_end>", "<im_patch>"
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token")
DEFAULT_SPECIALS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
# `clean_up_tokenization_spaces`: transformers' English clean-up of decoded text, in its order
CLEAN_UP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)


@dataclass(frozen=True)
class SpecialIds:
    loc: int
    im_start: int
    im_end: int
    pad: int
    bos: int
    eos: int


@dataclass(frozen=True)
class _Strip:
    left: bool  # strip whitespace at the end of the chunk before the token
    right: bool  # … and at the start of the chunk after it


class Tokenizer:
    """A LLaMA tokenizer folder (`tokenizer.model`, `tokenizer_config.json`,
    `special_tokens_map.json`, `added_tokens.json`, as LLaVA ships it), encoding as the original.

    `encode(text)` gives the ids with a BOS; `decode(ids)` the text; `add_tokens` appends tokens
    past the SentencePiece vocabulary; `save(folder)` writes the folder back as the original's
    merge does (the same special-token declarations, `legacy: true`, the added tokens)."""

    def __init__(self, folder: str | Path, model_max_length: int = 512):
        folder = Path(folder)
        model = folder / "tokenizer.model"
        if not model.exists():
            raise MissingDataError(
                model,
                "SentencePiece tokenizer model",
                "point at the LLaVA/VSM folder that holds tokenizer.model (a folder with only "
                "tokenizer.json cannot reproduce the original's ids)",
            )
        self.vocab_file = str(model)
        self.sp = spm.SentencePieceProcessor(model_file=self.vocab_file)
        self.model_max_length = model_max_length
        self._configs = {name: _read_json(folder / name) for name in FILES}
        self.added: dict[str, int] = dict(self._configs["added_tokens.json"] or {})
        config = self._configs["tokenizer_config.json"] or {}
        specials = self._configs["special_tokens_map.json"] or {}
        self._strip: dict[str, _Strip] = {}
        for key in SPECIAL_KEYS:
            value, plain = _special(key, config, specials)
            setattr(self, key, value["content"] if isinstance(value, dict) else value)
            self._strip[getattr(self, key)] = (
                _Strip(True, True)
                if plain
                else _Strip(bool(value.get("lstrip")), bool(value.get("rstrip")))
            )
        self.pad_token = self.unk_token
        self.add_bos = bool(config.get("add_bos_token", True))
        self.add_eos = bool(config.get("add_eos_token", False))
        self.clean_up_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self._split = None

    # ---- vocabulary ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.sp.get_piece_size() + sum(
            i >= self.sp.get_piece_size() for i in self.added.values()
        )

    def add_tokens(self, tokens: str | list[str]) -> int:
        """Add tokens at the end of the vocabulary (no-op for known ones); returns how many."""
        new = 0
        for token in [tokens] if isinstance(tokens, str) else tokens:
            if token not in self.added and self.sp.piece_to_id(token) == self.sp.unk_id():
                self.added[token] = len(self)
                new += 1
        self._split = None
        return new

    def token_id(self, token: str) -> int:
        return self.added[token] if token in self.added else self.sp.piece_to_id(token)

    @property
    def bos_token_id(self) -> int:
        return self.token_id(self.bos_token)

    @property
    def eos_token_id(self) -> int:
        return self.token_id(self.eos_token)

    @property
    def pad_token_id(self) -> int:
        return self.token_id(self.pad_token)

    def get_added_vocab(self) -> dict[str, int]:
        return dict(self.added)

    # ---- encoding -----------------------------------------------------------------------------
    def no_split_tokens(self) -> list[str]:
        return list(dict.fromkeys([*self._strip, *self.added]))

    def tokenize(self, text: str) -> list[str]:
        """Pieces and no-split tokens of `text` (no BOS), by the rule in the module docstring."""
        if self._split is None:
            tokens = sorted(self.no_split_tokens(), key=len, reverse=True)
            self._split = re.compile("(" + "|".join(map(re.escape, tokens)) + ")")
        parts = self._split.split(text)  # odd positions hold the no-split tokens
        for i in range(1, len(parts), 2):
            strip = self._strip.get(parts[i], _Strip(True, True))
            if strip.left:
                parts[i - 1] = parts[i - 1].rstrip()
            if strip.right:
                parts[i + 1] = parts[i + 1].lstrip()
        pieces: list[str] = []
        for i, part in enumerate(parts):
            if i % 2:
                pieces.append(part)
            elif part:
                pieces.extend(self.sp.encode(part, out_type=str))
        return pieces

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.token_id(p) for p in self.tokenize(text)]
        if add_special_tokens:
            ids = [self.bos_token_id] * self.add_bos + ids + [self.eos_token_id] * self.add_eos
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of `ids`: SentencePiece decodes each run of pieces; added tokens stand between
        runs, separated by spaces (as 4.31's slow tokenizer joins them)."""
        skip = {self.bos_token_id, self.eos_token_id, self.pad_token_id}
        by_id = {i: t for t, i in self.added.items()}
        out, run = [], []
        for i in (int(i) for i in ids):
            if skip_special_tokens and i in skip:
                continue
            if i in by_id:
                out += [self.sp.decode(run)] if run else []
                out.append(by_id[i])
                run = []
            else:
                run.append(i)
        out += [self.sp.decode(run)] if run else []
        text = " ".join(out)
        if self.clean_up_spaces:  # the folder asks for transformers' English clean-up
            for before, after in CLEAN_UP:
                text = text.replace(before, after)
        return text

    # ---- saving -------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """The folder as the original's merge (transformers 4.31) writes it: the SentencePiece
        model, the special tokens as declared, `legacy: true`, every added token."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.vocab_file, folder / "tokenizer.model")
        config = dict(self._configs["tokenizer_config.json"] or {})
        config.setdefault("tokenizer_class", "LlamaTokenizer")
        config["legacy"] = True
        specials = self._configs["special_tokens_map.json"] or {
            k: getattr(self, k) for k in SPECIAL_KEYS
        }
        for name, value in (
            ("tokenizer_config.json", config),
            ("special_tokens_map.json", specials),
            ("added_tokens.json", self.added),
        ):
            (folder / name).write_text(json.dumps(value, indent=2))


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _special(key: str, config: dict, specials: dict) -> tuple[str | dict, bool]:
    """(declaration, plain) of one special token, resolved as 4.31 loads a LLaMA folder:
    `special_tokens_map.json` wins over `tokenizer_config.json`; a plain string there stays a
    plain token (stripped on both sides), while LlamaTokenizer turns a string from the config
    (or its default) into an AddedToken with both strip flags off."""
    if specials.get(key) is not None:
        value = specials[key]
        return value, isinstance(value, str)
    value = config.get(key) or DEFAULT_SPECIALS[key]
    return (value if isinstance(value, dict) else {"content": value}), False


def load_tokenizer(path: str | Path, model_max_length: int = 512) -> tuple[Tokenizer, SpecialIds]:
    """(tokenizer, SpecialIds) of a local folder, set up as the original's training: pad = unk,
    `[LOC]` added, the image markers added (a no-op where the base has them, as LLaVA-Lightning
    does), so a merged VSM folder gives the same ids as its base."""
    tok = Tokenizer(path, model_max_length)
    tok.add_tokens(LOC_TOKEN)
    tok.add_tokens([IM_START, IM_END])
    ids = SpecialIds(
        loc=tok.token_id(LOC_TOKEN),
        im_start=tok.token_id(IM_START),
        im_end=tok.token_id(IM_END),
        pad=tok.pad_token_id,
        bos=tok.bos_token_id,
        eos=tok.eos_token_id,
    )
    return tok, ids


def save_tokenizer(tokenizer: Tokenizer, folder: str | Path) -> None:
    tokenizer.save(folder)
