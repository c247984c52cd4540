"""convention-rt: classify astronomical objects from image time series (ConvEntion).

The runtime needs only numpy, astropy, ONNX Runtime and typer/rich; it never
imports torch.  ``Classifier``, ``ObjectPrediction`` and ``HistoryCache`` are
loaded on first use, so that importing the package (e.g. for its version) stays
cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from convention_rt._version import __version__
from convention_rt.errors import (
    BadInputError,
    CatalogError,
    ConventionError,
    ModelError,
    UsageError,
)

if TYPE_CHECKING:
    from convention_rt.classifier import Classifier, ObjectPrediction
    from convention_rt.history import HistoryCache

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

_LAZY = {"Classifier": "convention_rt.classifier", "ObjectPrediction": "convention_rt.classifier",
         "HistoryCache": "convention_rt.history"}


def __getattr__(name: str) -> Any:
    """The public classes that need the runtime, imported when first asked for."""
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convention_rt' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
