"""One reader per source of the VSM training data, all returning `Record`s."""

from __future__ import annotations

from pathlib import Path

from ...errors import BadArgumentError, VsmKitError
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
        raise BadArgumentError(
            f"unknown source {name!r}; choose from {', '.join(SOURCES)}"
        ) from None
    return cls(data_dir, **options)


def open_sources(data_dir: str | Path, names=None) -> tuple[dict[str, Source], dict[str, str]]:
    """Open every named source (default: all) that can be read; the others map to the reason
    they cannot (a missing or malformed file), so one absent dataset does not stop the rest."""
    opened, failed = {}, {}
    for name in names or SOURCES:
        try:
            opened[name] = open_source(name, data_dir)
        except VsmKitError as err:
            failed[name] = str(err)
    return opened, failed


__all__ = [
    "GROUPS",
    "SOURCES",
    "Source",
    "load_refs",
    "open_source",
    "open_sources",
    "parse_paco_name",
]
