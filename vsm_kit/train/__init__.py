"""Training: the run config, the hybrid data stream, the DeepSpeed + LoRA engine, the launcher
and the hardware probe."""

from .collate import Collator
from .config import ARCHS, GIOU_MODES, PRECISIONS, ConfigError, RunConfig
from .hardware import Hardware, probe, suggest
from .hybrid import HybridDataset, StepSampler
from .launch import TrainingRun, remove_run
from .runlog import LIVE, skipped_images
from .samples import Sample, build_sample

__all__ = [
    "ARCHS",
    "GIOU_MODES",
    "LIVE",
    "PRECISIONS",
    "Collator",
    "ConfigError",
    "Hardware",
    "HybridDataset",
    "RunConfig",
    "Sample",
    "StepSampler",
    "TrainingRun",
    "build_sample",
    "probe",
    "remove_run",
    "skipped_images",
    "suggest",
]
