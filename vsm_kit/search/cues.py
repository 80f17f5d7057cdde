"""Context cues: the location phrase in the model's answer, reduced to a noun chunk (§10.5–10.6).

The phrase is kept exactly as the original cuts it, leading space included: the noun chunks
and `"region " + phrase` see it as is. With spaCy's `en_core_web_sm` (the `search` extra) the
phrase is split into noun chunks by the original rule; without it the search warns once per
process and takes the stripped phrase as the one chunk — it never fails for lack of spaCy, it
only loses the trimming of long answers.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

CONTEXT_QUESTION = (
    "According to the common sense knowledge and possible visual cues, what is the most likely "
    "location of the {} in the image?"
)
ANSWER_MARK = "most likely to appear"
SPACY_INSTALL = "pip install spacy && python -m spacy download en_core_web_sm"
_LEFT_DEPS = ("amod", "compound", "poss")
_RIGHT_DEPS = ("relcl", "prep")


@dataclass(frozen=True, eq=False)
class Cue(str):
    """What led a step into its sub-patches: kind "target" (the detection's own mask logits) or
    "context" (the `question` asked, the model's `answer`, the `phrase` segmented). It is also
    the original's packed text ("target", "context: <answer>#<phrase>"), so result.json, the
    step titles and comparisons keep their form; read the fields, never split the text."""

    kind: str
    question: str | None = None
    answer: str | None = None
    phrase: str | None = None

    def __new__(cls, kind: str, question=None, answer=None, phrase=None):
        return super().__new__(cls, kind if kind == "target" else f"context: {answer}#{phrase}")

    def __getnewargs__(self):  # pickling rebuilds it from its fields, not from its text
        return (self.kind, self.question, self.answer, self.phrase)


TARGET_CUE = Cue("target")


def location_phrase(answer: str, target: str) -> str:
    """`"The cup is most likely to appear on the kitchen table."` → `" on the kitchen table"`:
    the text after the last answer mark, stripped, without one final period, then after the
    last mention of the target (the whole text when there is none) — not stripped again."""
    text = answer.split(ANSWER_MARK)[-1].strip()
    text = text[:-1] if text.endswith(".") else text
    return text.split(target)[-1] if target else text  # "".split("") would raise


def context_phrase(answer: str, target: str) -> str:
    """The phrase to segment for a contextual cue: the single noun chunk of the location, or
    "region " + the location when there are none or several."""
    phrase = location_phrase(answer, target)
    chunks = noun_chunks(phrase)
    return chunks[0] if len(chunks) == 1 else f"region {phrase}"


def noun_chunks(text: str) -> list[str]:
    """The noun chunks of `text` in sentence order; without spaCy, the stripped text alone."""
    nlp = _load_spacy()
    if nlp is None:
        return [text.strip()] if text.strip() else []
    return _chunks(nlp(text))


@functools.cache
def _load_spacy():
    """spaCy's English pipeline, or None after a warning (once: the result is cached)."""
    try:
        import spacy
    except ImportError:
        missing = "spaCy is not installed"
    else:
        try:
            return spacy.load("en_core_web_sm")
        except OSError:
            missing = "spaCy's English model en_core_web_sm is not installed"
    warnings.warn(
        f"{missing}: context cues segment the whole location phrase instead of its noun chunk, "
        f"unlike the original. To match it: {SPACY_INSTALL}",
        UserWarning,
        stacklevel=2,
    )
    return None


def _chunks(doc) -> list[str]:
    """Nouns and pronouns grown left over amod/compound/poss children (nearest first) and right
    over relcl/prep children (in order) to the edge of each child's subtree; longest spans
    first, dropping a span that shares a token with a kept one (spans that only touch are both
    kept); in sentence order. Spans are (start, end) with the end inclusive."""
    spans = []
    for token in doc:
        if token.pos_ not in ("NOUN", "PRON"):
            continue
        start = end = token.i
        for child in reversed(list(token.lefts)):
            if child.dep_ not in _LEFT_DEPS:
                break
            start = child.left_edge.i
        for child in token.rights:
            if child.dep_ not in _RIGHT_DEPS:
                break
            end = child.right_edge.i
        spans.append((start, end))
    kept: list[tuple[int, int]] = []
    for s, e in sorted(spans, key=lambda span: span[1] - span[0], reverse=True):
        if all(min(e, ke) - max(s, ks) < 0 for ks, ke in kept):
            kept.append((s, e))
    return [doc[s : e + 1].text for s, e in sorted(kept)]
