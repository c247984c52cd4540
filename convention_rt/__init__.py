"""convention-rt: classify astronomical objects from image time series (ConvEntion).

The runtime needs only numpy, astropy, ONNX Runtime and typer/rich; it never
imports torch.
"""

from convention_rt._version import __version__
from convention_rt.classifier import Classifier, ObjectPrediction
from convention_rt.history import HistoryCache
from convention_rt.errors import (
    BadInputError,
    CatalogError,
    ConventionError,
    ModelError,
    UsageError,
)

__all__ = [
    "__version__",
    "Classifier",
    "HistoryCache",
    "ObjectPrediction",
    "BadInputError",
    "CatalogError",
    "ConventionError",
    "ModelError",
    "UsageError",
]
