"""The VSM model: LLaVA-LLaMA base, OWL-ViT detection and SAM-style mask heads, losses,
weights in and out, and the predictor."""

from .architecture import VSMArch, vsm_7b, vsm_tiny
from .delta import apply_delta
from .losses import LossWeights, detection_losses, language_loss, mask_losses
from .predictor import Detections, VSMPredictor
from .tokenizer import load_tokenizer
from .vsm import VSMForCausalLM
from .weights import init_vsm_from_base, load_vsm, save_vsm

__all__ = [
    "Detections",
    "LossWeights",
    "VSMArch",
    "VSMForCausalLM",
    "VSMPredictor",
    "apply_delta",
    "detection_losses",
    "init_vsm_from_base",
    "language_loss",
    "load_tokenizer",
    "load_vsm",
    "mask_losses",
    "save_vsm",
    "vsm_7b",
    "vsm_tiny",
]
