"""The training data: layout check, one reader per source, box conventions, statistics."""

from . import tree
from .images import load_rgb
from .layout import GROUP_NAMES, LayoutReport, check_layout
from .records import BoxTable, Record, Target
from .sources import GROUPS, SOURCES, Source, open_source, open_sources
from .stats import STATS_COLUMNS, class_frequency, format_table, source_stats

__all__ = [
    "GROUPS",
    "GROUP_NAMES",
    "SOURCES",
    "STATS_COLUMNS",
    "BoxTable",
    "LayoutReport",
    "Record",
    "Source",
    "Target",
    "check_layout",
    "class_frequency",
    "format_table",
    "load_rgb",
    "open_source",
    "open_sources",
    "source_stats",
    "tree",
]
