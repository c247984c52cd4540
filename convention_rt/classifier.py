"""The Python API: load a model once, classify objects, batches and catalogs.

>>> from convention_rt import Classifier
>>> from convention_rt.catalog import Catalog
>>> from convention_rt.data import sample_catalog_path
>>> classifier = Classifier(device="cpu")           # the shipped default model; device="auto" tries CUDA
>>> classifier.classes
('AGN', 'SNIa', 'SNOther', 'Variable')

A catalog, chunk by chunk (one chunk here: the sample has 24 objects):

>>> table = next(classifier.predict_catalog(sample_catalog_path()))
>>> len(table), table.predicted[:4]
(24, ['SNIa', 'SNOther', 'SNIa', 'Variable'])

One object from its stamps (T, 32, 32), band names (T,) and MJDs (T,):

>>> with Catalog(sample_catalog_path()) as catalog:
...     chunk = next(catalog.iter_chunks(max_objects=1))
>>> bands = [chunk.bands[k] for k in chunk.band]
>>> result = classifier.predict_object(chunk.frames, bands, chunk.mjd)
>>> result.predicted == table.predicted[0], result.status
(True, 'ok')

A :class:`Classifier` holds one ONNX Runtime session and is safe to share
between threads: build it once per process and reuse it for every call
(building a session per alert costs far more than classifying the alert).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from convention_rt.catalog import Catalog, InvalidPolicy, ObjectChunk, StampPolicy, chunk_from_objects
from convention_rt.history import HistoryCache
from convention_rt.model_inputs import chunk_to_inputs
from convention_rt.predictions import Predictions
from convention_rt.preprocess import Sequences, allocate_sequences
from convention_rt.registry import resolve_model
from convention_rt.session import Device, ModelSession

__all__ = ["Classifier", "ObjectPrediction"]


@dataclass(frozen=True)
class ObjectPrediction:
    """The result for one object.

    Attributes
    ----------
    predicted : str
        Most probable class, "" when the object could not be classified.
    probabilities : dict of str to float
        Ensemble-mean probability per class (NaN when flagged).
    spread : float
        Standard deviation over ensemble members of the predicted class's probability.
    n_frames : int
        Frames the model saw.
    bands_used : str
        Comma-separated bands in the model's window.
    status : str
        ``ok`` or ``flagged:<why>``, then notes.
    """

    predicted: str
    probabilities: dict[str, float]
    spread: float
    n_frames: int
    bands_used: str
    status: str


class Classifier:
    """A ConvEntion model ready to classify.

    Parameters
    ----------
    model : str or Path, optional
        Shipped model ``NAME`` or ``NAME/VERSION``, or a path to a ``.onnx``
        file (with ``card.json`` beside it) or to its folder; default: the
        package's default model.
    device : {"auto", "cpu", "cuda"}
    threads : int, optional
        ONNX Runtime intra-op threads.
    batch_size : int
        Objects per ONNX Runtime call.
    """

    def __init__(self, model: str | Path | None = None, *, device: Device = "auto", threads: int | None = None,
                 batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        entry = resolve_model(model)
        card_path = entry.card_path if entry.card_path.is_file() else None
        self.session = ModelSession(entry.model_path, card_path, device=device, threads=threads)
        self.card = self.session.card
        self.batch_size = batch_size
        self.timings = {"preprocess": 0.0, "inference": 0.0}
        """Seconds spent so far in each stage of :meth:`predict_chunk` (for profiling)."""

    @property
    def classes(self) -> tuple[str, ...]:
        """Output classes in column order."""
        return self.card.classes

    @property
    def model(self) -> str:
        """``name/version`` of the model."""
        return f"{self.card.name}/{self.card.version}"

    # -- core ---------------------------------------------------------------------------------
    def predict_chunk(self, chunk: ObjectChunk, out: Sequences | None = None) -> Predictions:
        """Classify the objects of a reader chunk.

        Parameters
        ----------
        chunk : ObjectChunk
        out : Sequences, optional
            Reusable preprocessing buffers sized for this chunk.

        Returns
        -------
        Predictions
        """
        started = time.perf_counter()
        inputs = chunk_to_inputs(chunk, self.card, out=out)
        preprocessed = time.perf_counter()
        n = len(chunk)
        seq = inputs.sequences
        n_classes = len(self.card.classes)
        probabilities = np.full((n, n_classes), np.nan, dtype=np.float32)
        spread = np.full(n, np.nan, dtype=np.float32)
        valid = np.flatnonzero(inputs.valid)
        for start in range(0, valid.size, self.batch_size):
            rows = valid[start:start + self.batch_size]
            members = self.session.run(seq.stamps[rows], seq.band_ids[rows], inputs.times[rows])
            mean = members.mean(axis=1)
            best = mean.argmax(axis=1)
            probabilities[rows] = mean
            spread[rows] = members[np.arange(rows.size), :, best].std(axis=1)
        self.timings["preprocess"] += preprocessed - started
        self.timings["inference"] += time.perf_counter() - preprocessed
        status = [inputs.status(i) for i in range(n)]
        return Predictions(object_ids=chunk.object_ids, probabilities=probabilities, spread=spread,
                           n_frames=np.where(inputs.valid, seq.n_frames, 0), bands_used=inputs.bands_used,
                           status=status, classes=self.card.classes, model=self.model)

    # -- public entry points ---------------------------------------------------------------------
    def predict_batch(self, objects: Sequence[tuple[ArrayLike, Sequence[str], ArrayLike]],
                      object_ids: Sequence[Any] | None = None) -> Predictions:
        """Classify objects held in memory.

        Parameters
        ----------
        objects : sequence of (stamps, bands, mjd)
            Per object: stamps (T, H, W) float, band names (T,), times (T,) in MJD.
        object_ids : sequence, optional
            Ids carried into the result (default 0..n-1).

        Returns
        -------
        Predictions
        """
        # Every band name given is kept here; the model's band mapping then notes the unknown ones,
        # exactly as for catalogs.
        bands = tuple(dict.fromkeys(str(b) for _, names, _ in objects for b in names))
        chunk = chunk_from_objects(objects, bands, object_ids, stamp_size=self.card.stamp_size)
        return self.predict_chunk(chunk)

    def predict_object(self, stamps: ArrayLike, bands: Sequence[str], mjd: ArrayLike) -> ObjectPrediction:
        """Classify one object with low latency.

        Parameters
        ----------
        stamps : array_like, shape (T, H, W), float
            Single-band cut-outs (any order in time).
        bands : sequence of str, length T
            Band of each stamp; bands the model does not know are dropped (noted in the status).
        mjd : array_like, shape (T,), float64
            Observation times.

        Returns
        -------
        ObjectPrediction
        """
        result = self.predict_batch([(stamps, bands, mjd)])
        return ObjectPrediction(
            predicted=result.predicted[0],
            probabilities={c: float(p) for c, p in zip(self.classes, result.probabilities[0])},
            spread=float(result.spread[0]), n_frames=int(result.n_frames[0]),
            bands_used=result.bands_used[0], status=result.status[0],
        )

    def predict_alert(self, cache: HistoryCache, object_id: Any, stamps: ArrayLike, bands: Sequence[str],
                      mjd: ArrayLike) -> ObjectPrediction:
        """Add an alert's cut-outs to the object's history and classify the whole history."""
        history = cache.add(object_id, stamps, bands, mjd)
        return self.predict_object(*history)

    def predict_catalog(self, path: str | Path, *, stamp_policy: StampPolicy = "error",
                        on_invalid: InvalidPolicy = "flag", chunk_objects: int = 256) -> Iterator[Predictions]:
        """Classify a catalog chunk by chunk (memory bounded by the chunk size).

        Yields
        ------
        Predictions
            One per chunk of at most ``chunk_objects`` objects.
        """
        with Catalog(path, stamp_size=self.card.stamp_size, stamp_policy=stamp_policy,
                     on_invalid=on_invalid) as catalog:
            yield from self.predict_opened(catalog, chunk_objects=chunk_objects)

    def predict_opened(self, catalog: Catalog, *, chunk_objects: int = 256) -> Iterator[Predictions]:
        """:meth:`predict_catalog` for a catalog the caller has opened (and closes).

        Yields
        ------
        Predictions
            One per chunk of at most ``chunk_objects`` objects.
        """
        buffers: Sequences | None = None
        for chunk in catalog.iter_chunks(max_objects=chunk_objects):
            n = len(chunk)
            if buffers is None or buffers.stamps.shape[0] != n:
                buffers = allocate_sequences(n, self.card.seq_len, self.card.stamp_size, self.card.stamp_size)
            yield self.predict_chunk(chunk, out=buffers)
