"""Context cues: the location phrase cut as the original cuts it, the noun-chunk rule on
hand-built parses (tests/search/parse.py; no spaCy needed), and the warning without spaCy."""

import sys
import types
import warnings

import pytest

from vsm_kit.search.cues import SPACY_INSTALL, _chunks, context_phrase, location_phrase, noun_chunks

from .parse import Doc

SPACE = (" ", 1, "dep", "SPACE", "")  # spaCy's token for a leading space


@pytest.mark.parametrize(
    ("answer", "target", "phrase"),
    [
        ("The cup is most likely to appear on the kitchen table.", "cup", "on the kitchen table"),
        # after the last mention of the target, not stripped again
        ("It is most likely to appear next to the ball on the red mat.", "ball", " on the red mat"),
        ("The dog is most likely to appear by the dog.", "dog", ""),
        # the last answer mark counts; one final period goes, after the strip only
        (
            "most likely to appear here; most likely to appear  under the bed .",
            "cat",
            "under the bed ",
        ),
        ("It is most likely to appear on the shelf..", "cup", "on the shelf."),
        ("\n On the floor. \n", "cup", "On the floor"),  # no mark: the whole answer
    ],
)
def test_location_phrase(answer, target, phrase):
    assert location_phrase(answer, target) == phrase


def test_left_growth_over_amod_compound_and_poss_subtrees():
    doc = Doc(
        [
            ("my", 1, "poss", "PRON"),
            ("father", 5, "poss", "NOUN", ""),
            ("'s", 1, "case", "PART"),
            ("very", 4, "advmod", "ADV"),
            ("old", 5, "amod", "ADJ"),
            ("car", 5, "ROOT", "NOUN"),
        ]
    )
    # car takes old's subtree (very) and father's (my); the spans of my and father lie inside
    assert _chunks(doc) == ["my father's very old car"]
    kitchen = Doc(
        [("the", 2, "det", "DET"), ("kitchen", 2, "compound", "NOUN"), ("sink", 2, "ROOT", "NOUN")]
    )
    assert _chunks(kitchen) == ["kitchen sink"]  # a determiner is not taken


def test_left_growth_stops_at_the_first_other_dependency():
    doc = Doc(
        [("wooden", 2, "amod", "ADJ"), ("two", 2, "nummod", "NUM"), ("chairs", 2, "ROOT", "NOUN")]
    )
    assert _chunks(doc) == ["chairs"]  # nearest first: `two` stops it before `wooden`


def test_right_growth_over_prep_and_relcl_and_its_stop():
    prep = Doc(
        [
            ("the", 1, "det", "DET"),
            ("table", 1, "ROOT", "NOUN"),
            ("in", 1, "prep", "ADP"),
            ("the", 4, "det", "DET"),
            ("kitchen", 2, "pobj", "NOUN"),
        ]
    )
    # kitchen (4, 4) shares its one token with table's (1, 4): overlap 0 drops it
    assert _chunks(prep) == ["table in the kitchen"]
    relcl = Doc(
        [
            ("the", 1, "det", "DET"),
            ("box", 1, "ROOT", "NOUN"),
            ("that", 3, "nsubj", "PRON"),
            ("holds", 1, "relcl", "VERB"),
            ("the", 5, "det", "DET"),
            ("keys", 3, "dobj", "NOUN"),
        ]
    )
    assert _chunks(relcl) == ["box that holds the keys"]
    stop = Doc(
        [
            ("the", 1, "det", "DET"),
            ("cup", 1, "ROOT", "NOUN", ""),
            (",", 1, "punct", "PUNCT"),
            ("near", 1, "prep", "ADP"),
            ("the", 5, "det", "DET"),
            ("sink", 3, "pobj", "NOUN"),
        ]
    )
    assert _chunks(stop) == ["cup", "sink"]  # the comma stops cup before `near`


def test_longest_spans_are_kept_first():
    doc = Doc(
        [
            ("red", 1, "amod", "ADJ"),
            ("lamp", 2, "compound", "NOUN"),
            ("shade", 2, "ROOT", "NOUN"),
            ("on", 2, "prep", "ADP"),
            ("desk", 3, "pobj", "NOUN"),
        ]
    )
    # lamp's (0, 1) comes first in the sentence, but shade's (0, 4) is longer and wins
    assert _chunks(doc) == ["red lamp shade on desk"]


def test_spans_that_only_touch_are_both_kept():
    doc = Doc(
        [
            ("red", 1, "amod", "ADJ"),
            ("car", 1, "ROOT", "NOUN"),
            ("blue", 3, "amod", "ADJ"),
            ("truck", 1, "appos", "NOUN"),
        ]
    )
    assert _chunks(doc) == ["red car", "blue truck"]  # (0, 1) and (2, 3)


def test_one_chunk_is_the_phrase_else_region_and_the_phrase_as_cut(parses):
    mat = " on the red mat"
    parses[mat] = Doc(
        [SPACE, ("on", 1, "ROOT", "ADP"), ("the", 4, "det", "DET"), ("red", 4, "amod", "ADJ")]
        + [("mat", 1, "pobj", "NOUN")]
    )
    assert (
        context_phrase("It is most likely to appear beside the dog on the red mat.", "dog")
        == "red mat"
    )
    two = " between the sofa and the lamp"
    parses[two] = Doc(
        [
            SPACE,
            ("between", 1, "ROOT", "ADP"),
            ("the", 3, "det", "DET"),
            ("sofa", 1, "pobj", "NOUN"),
        ]
        + [("and", 3, "cc", "CCONJ"), ("the", 6, "det", "DET"), ("lamp", 3, "conj", "NOUN")]
    )
    assert noun_chunks(two) == ["sofa", "lamp"]
    answer = "The dog is most likely to appear next to the dog between the sofa and the lamp."
    assert context_phrase(answer, "dog") == "region  between the sofa and the lamp"  # two spaces
    parses[""] = Doc([])
    assert context_phrase("The dog is most likely to appear near the dog.", "dog") == "region "


def _no_english_model(name):
    raise OSError(f"[E050] Can't find model '{name}'")


@pytest.mark.parametrize(
    ("spacy", "says"),
    [
        (None, "spaCy is not installed"),  # the import fails
        (types.SimpleNamespace(load=_no_english_model), "en_core_web_sm is not installed"),
    ],
)
def test_without_spacy_it_warns_once_and_uses_the_whole_phrase(
    spacy, says, fresh_loader, monkeypatch
):
    monkeypatch.setitem(sys.modules, "spacy", spacy)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # once is the search's doing, not the filter's
        assert noun_chunks(" on the red mat") == ["on the red mat"]
        answer = "It is most likely to appear beside the dog on the mat."
        assert context_phrase(answer, "dog") == "on the mat"
        assert noun_chunks("  ") == []
    assert [w.category for w in caught] == [UserWarning]
    text = str(caught[0].message)
    assert says in text and SPACY_INSTALL in text
    assert SPACY_INSTALL == "pip install spacy && python -m spacy download en_core_web_sm"


def test_with_spacy_its_english_pipeline_is_loaded_once(fresh_loader, monkeypatch):
    loaded = []
    doc = Doc([("the", 1, "det", "DET"), ("mat", 1, "ROOT", "NOUN")])
    fake = types.SimpleNamespace(load=lambda name: loaded.append(name) or (lambda text: doc))
    monkeypatch.setitem(sys.modules, "spacy", fake)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning
        assert noun_chunks("the mat") == noun_chunks("the mat") == ["mat"]
    assert loaded == ["en_core_web_sm"]
