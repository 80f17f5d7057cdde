"""The VSM model: LLaVA-LLaMA base, OWL-ViT detection and SAM-style mask heads, losses."""

from .losses import LossWeights, detection_losses, language_loss, mask_losses

__all__ = ["LossWeights", "detection_losses", "language_loss", "mask_losses"]
