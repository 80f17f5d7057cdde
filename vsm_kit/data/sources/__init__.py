"""One reader per source of the VSM training data, all returning `Record`s."""

from __future__ import annotations

from pathlib import Path

from ._base import Source
from .cocostuff import CocoStuff
from .grounding import FlickrEntities, GoldGMixed
from .objects365 import Objects365
from .paco import PacoLvis, parse_paco_name
from .refer import RefClef, RefCoco, RefCocog, RefCocoPlus, load_refs
from .vqa import LlavaInstruct80k, PossibleLocations

SOURCES: dict[str, type[Source]] = {
    cls.name: cls
    for cls in (
        Objects365,
        CocoStuff,
        PacoLvis,
        RefClef,
        RefCoco,
        RefCocoPlus,
        RefCocog,
        GoldGMixed,
        FlickrEntities,
        PossibleLocations,
        LlavaInstruct80k,
    )
}
# the original tool's --dataset names → their sources, in its default order
GROUPS: dict[str, tuple[str, ...]] = {
    group: tuple(n for n, c in SOURCES.items() if c.group == group)
    for group in dict.fromkeys(c.group for c in SOURCES.values())
}


def open_source(name: str, data_dir: str | Path, **options) -> Source:
    """The reader for source `name` (see `SOURCES`) over the data tree at `data_dir`."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join(SOURCES)}") from None
    return cls(data_dir, **options)


__all__ = ["GROUPS", "SOURCES", "Source", "load_refs", "open_source", "parse_paco_name"]
