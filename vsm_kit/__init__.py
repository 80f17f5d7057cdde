"""vsm_kit: inspect, preprocess, train, merge and search with the V* visual search model."""

from .errors import MalformedJsonError, MissingDataError, VsmKitError

__version__ = "0.1.0"
__all__ = ["MalformedJsonError", "MissingDataError", "VsmKitError", "__version__"]
