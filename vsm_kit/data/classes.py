"""Class-name tables shipped with the original tool (`"<idx>: <name>"` per line)."""

from __future__ import annotations

import functools
from importlib import resources


def _read_table(name: str) -> list[str]:
    text = resources.files("vsm_kit.data").joinpath("classes", name).read_text("utf-8")
    return [line.split(": ", 1)[1].strip() if ": " in line else "" for line in text.splitlines()]


@functools.cache
def cocostuff_classes() -> tuple[str, ...]:
    """The 182 COCO-Stuff names; list index == label-map pixel value == COCO category id - 1."""
    return tuple(_read_table("cocostuff.txt")[1:])


@functools.cache
def cocostuff_ignored() -> frozenset[int]:
    """Label values the original tool remaps to 255 (unlabeled): every name containing '-'."""
    return frozenset(i for i, name in enumerate(cocostuff_classes()) if "-" in name)


@functools.cache
def objects365_classes() -> tuple[str, ...]:
    """366 names; index == Objects365 category id (index 0 is 'None'). Names are stripped."""
    return tuple(_read_table("objects365.txt"))
