"""V*'s guided visual search over large images."""

from .bench import BenchReport, evaluate_bench, load_bench, summary_table, write_log
from .config import SearchConfig
from .cues import Cue, context_phrase, noun_chunks
from .guided import SearchModel, SearchResult, Step, split, visual_search

__all__ = [
    "BenchReport",
    "Cue",
    "SearchConfig",
    "SearchModel",
    "SearchResult",
    "Step",
    "context_phrase",
    "evaluate_bench",
    "load_bench",
    "noun_chunks",
    "split",
    "summary_table",
    "visual_search",
    "write_log",
]
