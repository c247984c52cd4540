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
(24, ['SNOther', 'SNOther', 'SNIa', 'Variable'])

One object from its stamps (T, 32, 32), band names (T,) and MJDs (T,):

>>> with Catalog(sample_catalog_path()) as catalog:
...     chunk = next(catalog.iter_chunks(max_objects=1))
>>> bands = [chunk.bands[k] for k in chunk.band]
>>> result = classifier.predict_object(chunk.frames, bands, chunk.mjd)
>>> result.predicted == table.predicted[0], result.status == table.status[0]
(True, True)

Objects the model saw too few frames of, or whose probabilities are close to
uniform, keep their probabilities with a ``low_information`` status; objects
whose stamps are not like the model's training stamps are flagged
``out_of_domain`` and get none (see ``docs/usage.md``).

A :class:`Classifier` holds one ONNX Runtime session and is safe to share
between threads: build it once per process and reuse it for every call
(building a session per alert costs far more than classifying the alert).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from convention_rt.catalog import Catalog
from convention_rt.chunks import ObjectChunk
from convention_rt.errors import BadInputError, InputTypeError, ModelError, UsageError
from convention_rt.history import HistoryCache, check_object_id
from convention_rt.model_card import ModelCard
from convention_rt.object_arrays import check_object, check_objects
from convention_rt.photometry import Photometry, compare
from convention_rt.policies import OnInvalid, StampPolicy, apply_on_invalid
from convention_rt.predictions import Predictions
from convention_rt.provenance import Provenance
from convention_rt.preprocess import Sequences, allocate_sequences
from convention_rt.registry import ModelEntry, resolve_model
from convention_rt.session import Device, ModelSession
from convention_rt.status import Reason
from convention_rt.transform import epochs_from_objects, frames_problem, to_frames, to_inputs

__all__ = ["Classifier", "ObjectPrediction"]

log = logging.getLogger(__name__)


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
        ``ok``, ``low_information:<why>`` or ``flagged:<why>``, then notes.
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
    model : str, Path or ModelEntry, optional
        Shipped model ``NAME`` or ``NAME/VERSION``, or a path to a ``.onnx``
        file (with ``card.json`` beside it) or to its folder, or a model
        :func:`~convention_rt.registry.resolve_model` found; default: the
        package's default model.
    device : {"auto", "cpu", "cuda"}
    threads : int, optional
        ONNX Runtime intra-op threads.
    batch_size : int
        Objects per ONNX Runtime call.
    card : ModelCard, optional
        The model's card, when the caller has loaded it already
        (:func:`~convention_rt.registry.open_card`); it is checked against the model.
    """

    def __init__(self, model: str | Path | ModelEntry | None = None, *, device: Device = "auto",
                 threads: int | None = None, batch_size: int = 64, card: ModelCard | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise UsageError(f"batch_size must be a whole number of objects, at least 1, got {batch_size!r}")
        entry = model if isinstance(model, ModelEntry) else resolve_model(model)
        if card is None:
            card = entry.card_path if entry.card_path.is_file() else None
        self.session = ModelSession(entry.model_path, card, device=device, threads=threads)
        self.card = self.session.card
        self.batch_size = int(batch_size)
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

    def provenance(self, source: str | Path | None = None) -> Provenance:
        """Where this classifier's results on ``source`` (a file, or None for objects in memory) come from."""
        return Provenance.of(self.card, source=source, device=self.session.device)

    # -- core ---------------------------------------------------------------------------------
    def predict_chunk(self, chunk: ObjectChunk, out: Sequences | None = None, *,
                      on_invalid: OnInvalid | str = OnInvalid.flag, source: str | Path | None = None) -> Predictions:
        """Classify the objects of a chunk of clean frames (:func:`convention_rt.transform.to_frames`).

        Parameters
        ----------
        chunk : ObjectChunk
        out : Sequences, optional
            Reusable preprocessing buffers sized for this chunk.
        on_invalid : {"flag", "warn", "raise"}
            For every object flagged (when read or here: no frame in the model's
            bands, a non-finite model output) or of low information, once it is
            classified: keep the status only, also warn (:class:`~convention_rt.policies.InvalidObjectWarning`),
            or raise.
        source : str or Path, optional
            The catalog the chunk comes from, named in warnings and errors.

        Returns
        -------
        Predictions

        Raises
        ------
        CatalogError
            Under ``on_invalid="raise"`` (a :class:`BadInputError` without ``source``),
            at the first object flagged or of low information.
        """
        return self._classify(chunk, out, OnInvalid.parse(on_invalid, "on_invalid"), source)

    def _classify(self, chunk: ObjectChunk, out: Sequences | None, on_invalid: OnInvalid,
                  source: str | Path | None, said: tuple[Reason, str] | None = None) -> Predictions:
        """:meth:`predict_chunk`; ``said`` is a flag of the whole source said already (skipped by the policy)."""
        started = time.perf_counter()
        inputs = to_inputs(chunk, self.card, out=out)
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
            if members.shape != (rows.size, self.card.members, n_classes):
                raise ModelError(f"{self.session.model_path}: output of shape {members.shape} for {rows.size} "
                                 f"objects, the card says ({rows.size}, {self.card.members}, {n_classes})")
            finite = np.isfinite(members).all(axis=(1, 2))
            for i in rows[~finite]:  # never a class made up from NaN or inf: flagged, NaN probabilities
                inputs.statuses[i].flag_as(Reason.non_finite_output)
            rows, members = rows[finite], members[finite]
            mean = members.mean(axis=1)
            best = mean.argmax(axis=1)
            probabilities[rows] = mean
            spread[rows] = members[np.arange(rows.size), :, best].std(axis=1)
        self.timings["preprocess"] += preprocessed - started
        self.timings["inference"] += time.perf_counter() - preprocessed
        n_frames = np.where(inputs.valid, seq.n_frames, 0).astype(np.int32)  # as written (schema)
        if self.card.domain is not None:
            inputs.low_information = self.card.domain.low_information(probabilities, n_frames)
        apply_on_invalid(on_invalid, inputs.statuses, chunk.object_ids, source=source, said=said,
                         low_information=lambda i: inputs.why_low_information(i, self.card.domain))
        return Predictions(object_ids=chunk.object_ids, probabilities=probabilities, spread=spread,
                           n_frames=n_frames, bands_used=inputs.bands_used,
                           statuses=inputs.statuses,
                           classes=self.card.classes, model=self.model, provenance=self.provenance(source))

    # -- public entry points ---------------------------------------------------------------------
    def predict_batch(self, objects: Iterable[tuple[ArrayLike, Sequence[str], ArrayLike]],
                      object_ids: Sequence[Any] | None = None, *, photometry: Photometry | None = None,
                      on_invalid: OnInvalid | str = OnInvalid.flag) -> Predictions:
        """Classify objects held in memory.

        Objects go through the model ``batch_size`` at a time, so memory stays
        bounded by the batch size (about 0.4 MB of model inputs per object),
        however long the list.

        Parameters
        ----------
        objects : iterable of (stamps, bands, mjd)
            Per object: stamps (T, H, W) float (the model's H = W), band names (T,),
            times (T,) in MJD.
        object_ids : sequence, optional
            One id per object, carried into the result (default 0..n-1).
        photometry : Photometry, optional
            What the stamps are.  Given, they are converted to the model's flux
            unit (one zero point for all stamps: convert counts of per-epoch zero
            points first, with :func:`convention_rt.photometry.counts_to_fluxcal`)
            and, if they differ from the model's domain in what cannot be
            converted, flagged ``out_of_domain:<what>``.  None: the stamps are
            taken to be like the model's training stamps (``card.domain``).
        on_invalid : {"flag", "warn", "raise"}
            For objects flagged or of low information, as for catalogs: keep the
            status only (default), also warn (:class:`~convention_rt.policies.InvalidObjectWarning`), or
            raise a :class:`BadInputError` naming the first one.

        Returns
        -------
        Predictions

        Raises
        ------
        BadInputError
            A call that cannot be meant (wrong ranks, stamp size, lengths that
            disagree, one id per object not given); an ``InputTypeError`` (also a
            ``TypeError``) for values of the wrong kind.  Problems of the data
            (non-finite times, no frames, unknown bands, bad pixels, stamps out
            of the model's domain) flag the object instead: NaN probabilities
            and a status saying why (under ``on_invalid="raise"``, the first one
            raises).
        UsageError
            ``photometry`` is not a :class:`Photometry`, or has a zero point per epoch.
        """
        on_invalid = OnInvalid.parse(on_invalid, "on_invalid")
        flag, scale = self._in_memory_domain(photometry)
        checked, ids = check_objects(objects, object_ids, stamp_size=self.card.stamp_size)
        if scale != 1.0:  # in float64, then rounded once
            checked = [(np.multiply(stamps, scale, dtype=np.float64).astype(np.float32), names, mjd)
                       for stamps, names, mjd in checked]
        # Every band name given is kept here; the model's band mapping then notes the unknown ones,
        # exactly as for catalogs.
        bands = tuple(dict.fromkeys(b for _, names, _ in checked for b in names))
        size = self.card.stamp_size
        buffers = allocate_sequences(min(self.batch_size, len(checked)), self.card.seq_len, size, size)
        parts = []
        for start in range(0, len(checked), self.batch_size):
            batch = checked[start:start + self.batch_size]
            epochs = epochs_from_objects(batch, bands, ids[start:start + self.batch_size], stamp_size=size)
            if flag is not None:  # as a catalog out of the model's domain: every object, when read
                for status in epochs.statuses:
                    status.flag_as(*flag)
            if len(batch) != buffers.stamps.shape[0]:  # the last, shorter batch
                buffers = allocate_sequences(len(batch), self.card.seq_len, size, size)
            parts.append(self._classify(to_frames(epochs), buffers, on_invalid, None))
        if len(parts) == 1:
            return parts[0]
        return Predictions(
            object_ids=ids,
            probabilities=np.concatenate([p.probabilities for p in parts]) if parts
            else np.zeros((0, len(self.classes)), dtype=np.float32),
            spread=np.concatenate([p.spread for p in parts]) if parts else np.zeros(0, dtype=np.float32),
            n_frames=np.concatenate([p.n_frames for p in parts]) if parts else np.zeros(0, dtype=np.int32),
            bands_used=[b for p in parts for b in p.bands_used], statuses=[s for p in parts for s in p.statuses],
            classes=self.card.classes, model=self.model, provenance=self.provenance())

    def _in_memory_domain(self, photometry: Photometry | None) -> tuple[tuple[Reason, str] | None, float]:
        """(flag (reason, fields) or None, flux scale) of in-memory stamps declared as ``photometry``."""
        if photometry is None:
            return None, 1.0
        if not isinstance(photometry, Photometry):
            raise UsageError(f"photometry must be a convention_rt.photometry.Photometry, got {photometry!r}")
        if photometry.zero_point_per_epoch:
            raise UsageError("photometry: in-memory stamps need one zero point for all of them; convert counts of "
                             "per-epoch zero points first (convention_rt.photometry.counts_to_fluxcal) and declare "
                             "FLUXCAL")
        if self.card.domain is None:
            log.warning("%s declares no training domain: the photometry given is neither checked nor converted",
                        self.model)
            return None, 1.0
        check = compare(photometry, self.card.domain.photometry)
        return check.flag, check.scale if check.scale is not None else 1.0

    def predict_object(self, stamps: ArrayLike, bands: Sequence[str], mjd: ArrayLike, *,
                       photometry: Photometry | None = None,
                       on_invalid: OnInvalid | str = OnInvalid.flag) -> ObjectPrediction:
        """Classify one object with low latency.

        Parameters
        ----------
        stamps : array_like, shape (T, H, W), float
            Single-band cut-outs (any order in time), H = W = the model's stamp size.
        bands : sequence of str, length T
            Band of each stamp; bands the model does not know are dropped (noted in the status).
        mjd : array_like, shape (T,), float64
            Observation times.
        photometry : Photometry, optional
            What the stamps are, as in :meth:`predict_batch`.
        on_invalid : {"flag", "warn", "raise"}
            As in :meth:`predict_batch`.

        Returns
        -------
        ObjectPrediction

        Raises
        ------
        BadInputError
            As :meth:`predict_batch`.
        """
        result = self.predict_batch([(stamps, bands, mjd)], photometry=photometry, on_invalid=on_invalid)
        return ObjectPrediction(
            predicted=result.predicted[0],
            probabilities={c: float(p) for c, p in zip(self.classes, result.probabilities[0])},
            spread=float(result.spread[0]), n_frames=int(result.n_frames[0]),
            bands_used=result.bands_used[0], status=result.status[0],
        )

    def predict_alert(self, cache: HistoryCache, object_id: Any, stamps: ArrayLike, bands: Sequence[str] | str,
                      mjd: ArrayLike, *, photometry: Photometry | None = None,
                      on_invalid: OnInvalid | str = OnInvalid.flag) -> ObjectPrediction:
        """Add an alert's cut-outs to the object's history and classify the whole history.

        The alert is checked against the model before it touches ``cache``:
        one the model could never use is refused with an error and the
        object's history stays as it was, so a bad alert neither erases nor
        blocks nor poisons the ones that follow.

        Parameters
        ----------
        cache : HistoryCache
        object_id : hashable
        stamps : array_like, shape (T, H, W) or (H, W), float
            H = W = the model's stamp size.
        bands : sequence of str, length T (or one str for one stamp)
        mjd : array_like, shape (T,) or scalar, float64
        photometry : Photometry, optional
            What the stamps of the object's history are, as in :meth:`predict_batch`
            (the history is stored as given and converted when classified).
        on_invalid : {"flag", "warn", "raise"}
            For the object's history, as in :meth:`predict_batch`.

        Returns
        -------
        ObjectPrediction
            Of the object's history, this alert included.

        Raises
        ------
        BadInputError
            The alert is refused, and the history unchanged: arrays that disagree
            or of another stamp size than the model's, no stamps, a non-finite
            time, a band the model does not know, or a stamp more than half bad
            pixels (NaN, inf or beyond ``MAX_PIXEL_MAGNITUDE``).
        """
        if not isinstance(cache, HistoryCache):
            raise InputTypeError(f"cache must be a HistoryCache, got {type(cache).__name__}; build one with "
                                 f"HistoryCache(max_frames=classifier.card.seq_len) and pass it to every call")
        check_object_id(object_id)
        what = f"object {object_id}"
        new_stamps, new_bands, new_mjd = check_object(stamps, bands, mjd, what=what,
                                                      stamp_size=self.card.stamp_size)
        problem = frames_problem(new_stamps, new_bands, self.card)  # the transform stage's rules, written once
        if problem:
            raise BadInputError(f"{what}: {problem}; alert refused, history unchanged")
        self._in_memory_domain(photometry)  # a photometry that cannot be used is refused before storing
        history = cache.add(object_id, new_stamps, new_bands, new_mjd)  # checks the times, refuses before storing
        return self.predict_object(*history, photometry=photometry, on_invalid=on_invalid)

    def open_catalog(self, path: str | Path, *, stamp_policy: StampPolicy | str = StampPolicy.error,
                     on_invalid: OnInvalid | str = OnInvalid.flag) -> Catalog:
        """Open a catalog for this model: its stamp size, and its domain as the reader's ``target``.

        Stamps are converted to the model's flux unit and zero point; a catalog
        whose photometric contract differs from the model's domain in what cannot
        be converted, or does not declare it, has its objects flagged
        (:class:`~convention_rt.catalog.Catalog`, parameter ``target``).  A model
        whose card declares no domain reads the catalog unchecked (logged as a warning).
        """
        target = None if self.card.domain is None else self.card.domain.photometry
        if target is None:
            log.warning("%s declares no training domain: the catalog's photometry is not checked against it",
                        self.model)
        return Catalog(path, stamp_size=self.card.stamp_size, stamp_policy=stamp_policy, on_invalid=on_invalid,
                       target=target)

    def predict_catalog(self, path: str | Path, *, stamp_policy: StampPolicy | str = StampPolicy.error,
                        on_invalid: OnInvalid | str = OnInvalid.flag,
                        chunk_objects: int = 256) -> Iterator[Predictions]:
        """Classify a catalog chunk by chunk (memory bounded by the chunk size).

        The catalog is opened with :meth:`open_catalog`; ``on_invalid`` applies to
        every flag, those of the reader and those found here.

        Yields
        ------
        Predictions
            One per chunk of at most ``chunk_objects`` objects.
        """
        with self.open_catalog(path, stamp_policy=stamp_policy, on_invalid=on_invalid) as catalog:
            yield from self.predict_opened(catalog, chunk_objects=chunk_objects)

    def predict_opened(self, catalog: Catalog, *, chunk_objects: int = 256, start: int = 0,
                       stop: int | None = None) -> Iterator[Predictions]:
        """:meth:`predict_catalog` for a catalog the caller has opened (and closes).

        Open it with :meth:`open_catalog` so that its stamps are converted to the
        model's unit and checked against its domain.  Each chunk is read
        (:meth:`Catalog.iter_epochs <convention_rt.catalog.Catalog.iter_epochs>`),
        transformed (:mod:`convention_rt.transform`) and classified; then the
        catalog's ``on_invalid`` applies, once, to every flag.

        Parameters
        ----------
        catalog : Catalog
        chunk_objects : int
            Objects per chunk.
        start, stop : int, optional
            Only the objects of OBJECTS rows ``start:stop`` (one worker's share).

        Yields
        ------
        Predictions
            One per chunk of at most ``chunk_objects`` objects.
        """
        buffers: Sequences | None = None
        for epochs in catalog.iter_epochs(max_objects=chunk_objects, start=start, stop=stop):
            n = len(epochs)
            if buffers is None or buffers.stamps.shape[0] != n:
                buffers = allocate_sequences(n, self.card.seq_len, self.card.stamp_size, self.card.stamp_size)
            yield self._classify(to_frames(epochs), buffers, catalog.on_invalid, catalog.path,
                                 said=catalog.domain_flag)
