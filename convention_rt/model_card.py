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
from convention_rt.photometry import Photometry
from convention_rt.preprocess import INFERENCE_WINDOWS
from convention_rt.status import Reason

__all__ = ["CARD_FORMAT_VERSION", "DEFAULT_MIN_UNIFORM_DISTANCE", "MODEL_FIELDS", "BandStats", "Domain",
           "ModelCard", "sha256_of"]

CARD_FORMAT_VERSION = 2
"""Format 2 adds the model's domain (:class:`Domain`); cards of format 1 (no domain) are still read."""
SUPPORTED_FORMATS = (1, 2)

DEFAULT_MIN_UNIFORM_DISTANCE = 0.1
"""Probabilities closer than this to uniform (normalised total variation distance) are low-information."""

#: Card fields that determine what the model file computes or how its inputs are made.  The card
#: written beside a model must agree with the card export embedded in it on every one of them; the
#: other fields (name, version, metrics, provenance, checksum) describe the model and may be rewritten.
MODEL_FIELDS = ("preset", "classes", "bands", "normalisation", "stamp_size", "seq_len", "stem_window",
                "window", "time_encoding", "members", "domain")

#: Relative tolerance on normalisation statistics: room for a JSON writer's rounding, nothing more.
_STATS_RTOL = 1e-9


@dataclass(frozen=True)
class BandStats:
    """Normalisation statistics of one band, measured on the training set."""

    mean: float
    std: float


@dataclass(frozen=True)
class Domain:
    """What a model was trained on, and below what its outputs carry little information.

    The runtime compares a catalog's :class:`~convention_rt.photometry.Photometry`
    with :attr:`photometry` (flux units and zero points are converted, the rest
    flags objects ``out_of_domain:<what>``), and flags ``low_information`` an
    object the model saw fewer than :attr:`min_frames` frames of, or whose
    probabilities lie within :attr:`min_uniform_distance` of uniform.

    Attributes
    ----------
    photometry : Photometry
        The training stamps' survey profile, pixel scale, flux unit and zero
        point, sky treatment and stamp kind; every field declared.
    frames_range : (int, int)
        Fewest and most frames per object in the training windows (the most is
        at most ``seq_len``; training also dropped frames at random).
    min_frames : int
        The validated minimum of frames: fewer, and the status is
        ``low_information:few_frames``.  Export chooses it from the model's
        early-classification curve when one was measured, else it is the fewest
        frames of a training object (``frames_range[0]``); see ``train.domain``.
    min_frames_rule : str
        How :attr:`min_frames` was chosen (from which measurement, by which rule).
    min_uniform_distance : float
        Least distance from uniform of probabilities worth a class: the total
        variation distance ``0.5 * sum(|p - 1/K|)`` divided by its largest value
        ``1 - 1/K`` (0: uniform, 1: one class certain).  Closer, and the status
        is ``low_information:near_uniform``.
    """

    photometry: Photometry
    frames_range: tuple[int, int]
    min_frames: int
    min_frames_rule: str = ""
    min_uniform_distance: float = DEFAULT_MIN_UNIFORM_DISTANCE

    def __post_init__(self) -> None:
        if not isinstance(self.photometry, Photometry) or not self.photometry.complete \
                or self.photometry.zero_point is None:
            described = self.photometry.describe() if isinstance(self.photometry, Photometry) else self.photometry
            raise ModelError(f"domain: photometry must declare every field with one zero point, got {described}")
        low, high = (int(v) for v in self.frames_range)
        if not 1 <= low <= high:
            raise ModelError(f"domain: frames_range must be (fewest, most) with 1 <= fewest <= most, "
                             f"got {self.frames_range}")
        object.__setattr__(self, "frames_range", (low, high))
        if isinstance(self.min_frames, bool) or int(self.min_frames) != self.min_frames or self.min_frames < 1:
            raise ModelError(f"domain: min_frames must be a whole number of frames, at least 1, got "
                             f"{self.min_frames!r}")
        object.__setattr__(self, "min_frames", int(self.min_frames))
        if not (math.isfinite(self.min_uniform_distance) and 0.0 <= self.min_uniform_distance < 1.0):
            raise ModelError(f"domain: min_uniform_distance must lie in [0, 1), got {self.min_uniform_distance!r}")

    def few_frames(self, n_frames: NDArray[np.integer]) -> NDArray[np.bool_]:
        """Objects the model sees fewer than :attr:`min_frames` frames of, shape (n,), bool.

        Parameters
        ----------
        n_frames : ndarray, shape (n,), int
            Frames the model sees of each object.
        """
        return np.asarray(n_frames) < self.min_frames

    def near_uniform(self, probabilities: NDArray[np.floating]) -> NDArray[np.bool_]:
        """Objects whose probabilities lie within :attr:`min_uniform_distance` of uniform, shape (n,), bool.

        Parameters
        ----------
        probabilities : ndarray, shape (n, K), float
            Ensemble-mean probabilities; rows with NaN give False.
        """
        probabilities = np.asarray(probabilities, dtype=np.float64)
        k = probabilities.shape[1]
        with np.errstate(invalid="ignore"):
            distance = 0.5 * np.abs(probabilities - 1.0 / k).sum(axis=1) / (1.0 - 1.0 / k)
            return distance < self.min_uniform_distance

    def low_information(self, probabilities: NDArray[np.floating],
                        n_frames: NDArray[np.integer]) -> list[tuple[Reason, ...]]:
        """Why each object's classification carries little information (``()`` when it does not).

        Parameters
        ----------
        probabilities : ndarray, shape (n, K), float
            Ensemble-mean probabilities; rows with NaN (flagged objects) give ``()``.
        n_frames : ndarray, shape (n,), int
            Frames the model saw of each object.

        Returns
        -------
        list of tuple of Reason
            Per object: ``few_frames``, ``near_uniform``, both, or none.
        """
        probabilities = np.asarray(probabilities, dtype=np.float64)
        classified = np.isfinite(probabilities).all(axis=1)
        few, near = self.few_frames(n_frames), self.near_uniform(probabilities)
        return [((Reason.few_frames,) if few[i] else ()) + ((Reason.near_uniform,) if near[i] else ())
                if classified[i] else () for i in range(probabilities.shape[0])]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary."""
        return {"photometry": self.photometry.to_dict(), "frames_range": list(self.frames_range),
                "min_frames": self.min_frames, "min_frames_rule": self.min_frames_rule,
                "min_uniform_distance": self.min_uniform_distance}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Domain:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        try:
            values["photometry"] = Photometry.from_dict(values["photometry"])
        except ValueError as exc:
            raise ModelError(f"domain: photometry: {exc}") from exc
        values["frames_range"] = tuple(values["frames_range"])
        return cls(**values)


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
        How inference picks ``seq_len`` frames from a longer series: ``"latest"``
        (the last ones) or ``"event"`` (the run holding the most brightening,
        :mod:`convention_rt.event_window`).
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
    domain : Domain or None
        What the model was trained on (the photometric contract) and its
        low-information thresholds; None in cards of format 1, whose models
        declare nothing the runtime could check data against.
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
    domain: Domain | None = None
    format_version: int = CARD_FORMAT_VERSION

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ModelError(f"model card {self.name!r}: {message}")

        if not self.name or not self.version:
            fail("name and version are required")
        if self.format_version not in SUPPORTED_FORMATS:
            fail(f"card format {self.format_version} is not supported (this reads formats "
                 f"{', '.join(map(str, SUPPORTED_FORMATS))})")
        if self.domain is not None and not isinstance(self.domain, Domain):
            fail(f"domain must be a Domain, got {type(self.domain).__name__}")
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
        if self.window not in INFERENCE_WINDOWS:
            fail(f"window {self.window!r} is not supported (expected one of {', '.join(INFERENCE_WINDOWS)})")
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
            if name == "domain":
                plain = tuple(None if d is None else d.to_dict() for d in (mine, theirs))
                if plain[0] != plain[1]:
                    differences.append((name, *plain))
                continue
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
        data["domain"] = None if self.domain is None else self.domain.to_dict()
        if self.domain is None:
            del data["domain"]
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
            if values.get("domain") is not None:
                values["domain"] = Domain.from_dict(values["domain"])
            return cls(**values)
        except ModelError as exc:  # a field's check: name the card's file too
            raise ModelError(f"{source}: not a valid model card: {exc}") from exc
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
