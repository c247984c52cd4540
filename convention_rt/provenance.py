"""Where results come from, written from one place into every output that can hold it.

A :class:`Provenance` names the model (name, version, sha256), the convention-rt
version, the input file and the device.  :meth:`Classifier.provenance
<convention_rt.classifier.Classifier.provenance>` makes it; every result table
the classifier returns carries it (``Predictions.provenance``); the prediction
writers put it in the primary header of FITS files and in the key-value metadata
of Parquet files, and the Spark catalog job in the ``_common_metadata`` file of
its dataset.  CSV files have no place for it.

The keys are FITS keywords, the same in every format:

=========  ==========================================
``CATALOG``   name of the input file ("" for objects in memory: left out)
``MODEL``     model name
``MODELVER``  model version
``MODELSHA``  first 16 hex digits of the model file's sha256
``DEVICE``    ``cpu`` or ``cuda`` (left out when not known)
``CRTVERS``   convention-rt version
=========  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convention_rt._version import __version__
from convention_rt.model_card import ModelCard

__all__ = ["Provenance"]

SHA_DIGITS = 16


@dataclass(frozen=True)
class Provenance:
    """Where a table of results comes from.

    Attributes
    ----------
    model, model_version : str
        The model's name and version.
    model_sha256 : str
        The model file's sha256 as its card gives it ("" when the card has none).
    package_version : str
        The convention-rt version that classified.
    input : str
        Name of the input file ("" for objects held in memory).
    device : str
        Where the model ran ("" when not known).
    """

    model: str
    model_version: str
    model_sha256: str = ""
    package_version: str = __version__
    input: str = ""
    device: str = ""

    @classmethod
    def of(cls, card: ModelCard, *, source: str | Path | None = None, device: str = "") -> Provenance:
        """The provenance of results of the model of ``card`` on ``source`` (a file, or None)."""
        return cls(model=card.name, model_version=card.version, model_sha256=card.sha256 or "",
                   input=Path(source).name if source is not None else "", device=str(device or ""))

    def header(self) -> dict[str, Any]:
        """FITS primary-header keywords, in the order written (empty fields left out)."""
        cards: dict[str, Any] = {}
        if self.input:
            cards["CATALOG"] = self.input
        cards.update({"MODEL": self.model, "MODELVER": self.model_version,
                      "MODELSHA": self.model_sha256[:SHA_DIGITS]})
        if self.device:
            cards["DEVICE"] = self.device
        cards["CRTVERS"] = self.package_version
        return cards

    def metadata(self) -> dict[str, str]:
        """The same keys as :meth:`header`, as text (Parquet and Arrow key-value metadata)."""
        return {key: str(value) for key, value in self.header().items()}
