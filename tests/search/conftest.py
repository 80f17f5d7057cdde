"""Fixtures that decide what the noun-chunk step sees, whether or not spaCy is installed."""

import pytest

from vsm_kit.search import cues


@pytest.fixture
def no_spacy(monkeypatch):
    """The search without spaCy, and without its warning (tested in test_cues.py)."""
    monkeypatch.setattr(cues, "_load_spacy", lambda: None)


@pytest.fixture
def parses(monkeypatch):
    """A stand-in pipeline: fill the returned dict with text → `parse.Doc`."""
    table: dict = {}
    monkeypatch.setattr(cues, "_load_spacy", lambda: table.__getitem__)
    return table


@pytest.fixture
def fresh_loader():
    """`_load_spacy` forgets its answer before and after the test (it warns once per process)."""
    cues._load_spacy.cache_clear()
    yield cues._load_spacy
    cues._load_spacy.cache_clear()
