"""Preprocessing: the three index files the training reads, streamed, atomic and fast."""

from ._common import StepResult
from .coco import build_coco_index
from .goldg import build_goldg
from .objects365 import build_objects365_index
from .outputs import open_output
from .run import STEPS, PreprocessSummary, preprocess

__all__ = [
    "STEPS",
    "PreprocessSummary",
    "StepResult",
    "build_coco_index",
    "build_goldg",
    "build_objects365_index",
    "open_output",
    "preprocess",
]
