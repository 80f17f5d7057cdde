"""From a training run to a verified Hugging Face folder: ZeRO → fp32, LoRA merge, checks."""

from .merge import MergeError, MergeReport, convert_merge, merge, ram_needed
from .zero import WEIGHTS_FILE, ConvertError, ConvertReport, convert

__all__ = [
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
