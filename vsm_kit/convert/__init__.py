"""From a training run to a verified Hugging Face folder: ZeRO → fp32, LoRA merge, checks."""

from .merge import (
    DEFAULT_DTYPE,
    DTYPES,
    STAGES,
    MergeError,
    MergeReport,
    convert_merge,
    merge,
    ram_needed,
)
from .zero import BEST, LAST, WEIGHTS_FILE, ConvertError, ConvertReport, convert

__all__ = [
    "BEST",
    "DEFAULT_DTYPE",
    "DTYPES",
    "LAST",
    "STAGES",
    "WEIGHTS_FILE",
    "ConvertError",
    "ConvertReport",
    "MergeError",
    "MergeReport",
    "convert",
    "convert_merge",
    "merge",
    "ram_needed",
]
