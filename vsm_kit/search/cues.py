"""Context cues: the location phrase in the model's answer, reduced to a noun chunk.

With spaCy's `en_core_web_sm` installed the phrase is split into noun chunks by the original
rule (§10.6); without it the phrase itself is the one chunk — the search never fails for lack
of spaCy, it only loses the trimming of long answers.
"""

from __future__ import annotations

import functools

CONTEXT_QUESTION = (
    "According to the common sense knowledge and possible visual cues, what is the most likely "
    "location of the {} in the image?"
)
ANSWER_MARK = "most likely to appear"


def location_phrase(answer: str, target: str) -> str:
    """`"The cup is most likely to appear on the kitchen table."` → `"on the kitchen table"`:
    the text after the last answer mark, without a final period, after the last mention of the
    target."""
    text = answer.split(ANSWER_MARK)[-1].strip()
    text = text[:-1] if text.endswith(".") else text
    if target and target in text:
        text = text.split(target)[-1]
    return text.strip()


def context_phrase(answer: str, target: str) -> str:
    """The phrase to segment for a contextual cue: the single noun chunk of the location, or
    "region " + the location when there are none or several."""
    phrase = location_phrase(answer, target)
    chunks = noun_chunks(phrase)
    return chunks[0] if len(chunks) == 1 else f"region {phrase}"


def noun_chunks(text: str) -> list[str]:
    nlp = _spacy()
    if nlp is None:
        return [text] if text else []
    return _chunks(nlp(text))


@functools.cache
def _spacy():
    try:
        import spacy

        return spacy.load("en_core_web_sm")
    except (ImportError, OSError):
        return None


def _chunks(doc) -> list[str]:
    """Nouns and pronouns grown left over amod/compound/poss children and right over
    relcl/prep children; longest spans first, dropping spans that touch a kept one."""
    spans = []
    for token in doc:
        if token.pos_ not in ("NOUN", "PRON"):
            continue
        start, end = token.i, token.i + 1
        for child in reversed(list(token.lefts)):
            if child.dep_ not in ("amod", "compound", "poss"):
                break
            start = min(start, child.left_edge.i)
        for child in token.rights:
            if child.dep_ not in ("relcl", "prep"):
                break
            end = max(end, child.right_edge.i + 1)
        spans.append((start, end))
    kept: list[tuple[int, int]] = []
    for s, e in sorted(spans, key=lambda se: se[1] - se[0], reverse=True):
        if all(e < ks or s > ke for ks, ke in kept):  # touching counts as overlapping
            kept.append((s, e))
    return [doc[s:e].text for s, e in sorted(kept)]
