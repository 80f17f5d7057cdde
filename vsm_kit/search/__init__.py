"""V*'s guided visual search over large images."""

from .config import SearchConfig
from .cues import context_phrase, noun_chunks
from .guided import SearchModel, SearchResult, Step, split, visual_search

__all__ = [
    "SearchConfig",
    "SearchModel",
    "SearchResult",
    "Step",
    "context_phrase",
    "noun_chunks",
    "split",
    "visual_search",
]
