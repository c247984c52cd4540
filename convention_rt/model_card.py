"""The model card: everything that must travel with a model file.

Export writes it (beside the ONNX file as JSON, and inside the ONNX metadata);
the runtime reads it.  Nobody copies its numbers by hand: the classes, the band
order, the normalisation statistics and the sequence geometry all come from
here, so training and serving cannot disagree on preprocessing.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convention_rt.errors import ModelError

__all__ = ["CARD_FORMAT_VERSION", "MODEL_FIELDS", "BandStats", "ModelCard", "sha256_of"]

CARD_FORMAT_VERSION = 1

#: Card fields that determine what the model file computes or how its inputs are made.  The card
#: written beside a model must agree with the card export embedded in it on every one of them; the
#: other fields (name, version, metrics, provenance, checksum) describe the model and may be rewritten.
MODEL_FIELDS = ("preset", "classes", "bands", "normalisation", "stamp_size", "seq_len", "stem_window",
                "window", "time_encoding", "members")

#: Relative tolerance on normalisation statistics: room for a JSON writer's rounding, nothing more.
_STATS_RTOL = 1e-9


@dataclass(frozen=True)
class BandStats:
    """Normalisation statistics of one band, measured on the training set."""

    mean: float
    std: float


@dataclass(frozen=True)
class ModelCard:
    """Description of a trained model, validated on construction.

    Attributes
    ----------
    name, version : str
        Registry name and version, e.g. ``"convention-compact"``, ``"1.0.0"``.
    preset : str
        Architecture preset the model was built from.
    classes : tuple of str
        Output classes in logit order.
    bands : tuple of str
        Band names in id order: band id ``i + 1`` is ``bands[i]``; id 0 is padding.
    stamp_size : int
        Stamp side in pixels (stamps are ``stamp_size x stamp_size``).
    seq_len : int
        Sequence length M.
    stem_window : int
        Frames per stem window K.
    normalisation : dict of str to BandStats
        Per-band mean and standard deviation, one entry per band in ``bands``.
    window : str
        How inference picks frames from long series: ``"latest"``.
    time_encoding : bool
        Whether the model reads observation times (positional encoding from MJD).
    members : int
        Ensemble members in the model file (outputs are averaged by the runtime).
    model_file : str
        File name of the ONNX model, relative to the card.
    sha256 : str
        Hex digest of the model file.
    metrics : dict
        Metrics measured on held-out data, as written by training.
    provenance : dict
        Training data, command and software versions.
    """

    name: str
    version: str
    preset: str
    classes: tuple[str, ...]
    bands: tuple[str, ...]
    stamp_size: int
    seq_len: int
    stem_window: int
    normalisation: dict[str, BandStats]
    window: str = "latest"
    time_encoding: bool = False
    members: int = 1
    model_file: str = "model.onnx"
    sha256: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ModelError(f"model card {self.name!r}: {message}")

        if not self.name or not self.version:
            fail("name and version are required")
        if self.format_version != CARD_FORMAT_VERSION:
            fail(f"card format {self.format_version} is not supported (expected {CARD_FORMAT_VERSION})")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            fail(f"classes must be at least two distinct names, got {self.classes}")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            fail(f"bands must be distinct names, got {self.bands}")
        if self.stamp_size < 1 or self.seq_len < 1 or self.stem_window < 1:
            fail("stamp_size, seq_len and stem_window must be positive")
        if self.seq_len % self.stem_window:
            fail(f"seq_len {self.seq_len} is not a multiple of stem_window {self.stem_window}")
        if set(self.normalisation) != set(self.bands):
            fail(f"normalisation must cover exactly the bands {self.bands}")
        for band, stats in self.normalisation.items():
            if not (math.isfinite(stats.mean) and math.isfinite(stats.std) and stats.std > 0):
                fail(f"band {band!r}: mean must be finite and std positive, got {stats}")
        if self.window != "latest":
            fail(f"window {self.window!r} is not supported (expected 'latest')")
        if self.members < 1:
            fail("members must be at least 1")

    @property
    def n_band_ids(self) -> int:
        """Number of band ids including padding id 0."""
        return len(self.bands) + 1

    def band_id(self, band: str) -> int:
        """Model band id (1-based) of ``band``, or 0 when the model does not know it."""
        try:
            return self.bands.index(band) + 1
        except ValueError:
            return 0

    def stats_arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Mean and std indexed by band id, shape (n_band_ids,), float64.

        Entry 0 (padding) is mean 0, std 1.
        """
        mean = np.zeros(self.n_band_ids, dtype=np.float64)
        std = np.ones(self.n_band_ids, dtype=np.float64)
        for i, band in enumerate(self.bands, start=1):
            mean[i] = self.normalisation[band].mean
            std[i] = self.normalisation[band].std
        return mean, std

    def model_differences(self, other: ModelCard) -> list[tuple[str, Any, Any]]:
        """Where this card and ``other`` describe different models.

        Compares the :data:`MODEL_FIELDS`; normalisation statistics band by band,
        equal within a relative 1e-9.

        Parameters
        ----------
        other : ModelCard

        Returns
        -------
        list of (field, value here, value in ``other``)
            Empty when both cards describe the same model.  Normalisation
            differences are named ``normalisation.<band>.mean`` (or ``.std``);
            a band missing on one side has the value None there.
        """
        differences: list[tuple[str, Any, Any]] = []
        for name in MODEL_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name != "normalisation":
                if mine != theirs:
                    plain = (list(mine), list(theirs)) if isinstance(mine, tuple) else (mine, theirs)
                    differences.append((name, *plain))
                continue
            for band in [*mine, *(b for b in theirs if b not in mine)]:
                for stat in ("mean", "std"):
                    a = getattr(mine[band], stat) if band in mine else None
                    b = getattr(theirs[band], stat) if band in theirs else None
                    if a is None or b is None or not math.isclose(a, b, rel_tol=_STATS_RTOL, abs_tol=0.0):
                        differences.append((f"normalisation.{band}.{stat}", a, b))
        return differences

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary."""
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["bands"] = list(self.bands)
        return data

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ModelCard:
        """Build and validate a card from a dictionary (e.g. parsed JSON)."""
        try:
            values = dict(data)
            values["classes"] = tuple(values["classes"])
            values["bands"] = tuple(values["bands"])
            values["normalisation"] = {
                band: BandStats(float(s["mean"]), float(s["std"]))
                for band, s in values["normalisation"].items()
            }
            return cls(**values)
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{source}: not a valid model card: {exc}") from exc

    @classmethod
    def from_json(cls, text: str, source: str = "<json>") -> ModelCard:
        """Parse and validate a JSON card."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: model card is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"{source}: model card must be a JSON object")
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        """Read a card from a JSON file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(f"{path}: cannot read model card: {exc.strerror}") from exc
        return cls.from_json(text, str(path))


def sha256_of(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
