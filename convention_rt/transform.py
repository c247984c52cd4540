"""The transform stage: from epochs as read to the model's inputs, the same for catalogs and objects in memory.

Two steps, each of which adds what it finds to the objects' statuses
(:mod:`convention_rt.status`):

1. :func:`to_frames` (:class:`~convention_rt.chunks.EpochChunk` to
   :class:`~convention_rt.chunks.ObjectChunk`): multi-band cubes are separated
   into single-band frames (a plane absent or all bad is a missing band, as a
   band without a row in the FRAMES layout); frames are put in time order
   (``epochs_sorted_by_time``, for both layouts);
   frames of bands the source does not declare are dropped
   (``unknown_band_frames``); bad pixels are counted (``bad_pixels``) and
   frames more than half bad dropped (``mostly_bad_frames_dropped``); objects
   left without frames are flagged (``no_usable_frames``, ``all_frames_mostly_bad``).
2. :func:`to_inputs` (:class:`~convention_rt.chunks.ObjectChunk` to
   :class:`ModelInputs`), driven by the model card: band names are checked
   once against the card's bands (frames of others dropped,
   ``bands_unknown_to_model``; none left: ``no_frames_in_model_bands``), then
   frames are windowed and normalised with the card's statistics in one
   compiled pass.  Training and serving both go through it, so they cannot disagree.

:func:`read_chunks` reads a catalog through step 1 and applies its
``on_invalid`` policy; :func:`epochs_from_objects` is the reader of objects held
in memory.  :func:`frames_problem` is the same two rules (frames in no band of
the model, frames mostly bad) applied to frames not yet stored, such as an
alert's, to refuse them before they join a history.  The compiled kernels are in
:mod:`convention_rt.preprocess`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convention_rt import preprocess
from convention_rt.chunks import EpochChunk, ObjectChunk
from convention_rt.errors import BadInputError
from convention_rt.model_card import Domain, ModelCard
from convention_rt.object_arrays import mjd_problem
from convention_rt.policies import apply_on_invalid
from convention_rt.preprocess import Sequences, WindowMode, prepare_sequences
from convention_rt.status import Note, ObjectStatus, Reason, format_status

if TYPE_CHECKING:
    from convention_rt.catalog import Catalog

__all__ = ["MOSTLY_BAD_FRACTION", "ModelInputs", "chunk_from_objects", "epochs_from_objects", "frames_problem",
           "model_band_ids", "mostly_bad", "read_chunks", "relative_times", "to_frames", "to_inputs"]

#: A frame with more bad pixels than this fraction is dropped.
MOSTLY_BAD_FRACTION = 0.5


# -- step 1: epochs to clean single-band frames ---------------------------------------------------------
def to_frames(epochs: EpochChunk) -> ObjectChunk:
    """Single-band, time-ordered, clean frames of the objects of ``epochs`` (their statuses are updated).

    Parameters
    ----------
    epochs : EpochChunk

    Returns
    -------
    ObjectChunk
        Flagged objects own no frames.
    """
    statuses = epochs.statuses
    n = len(statuses)
    # Epochs put in time order are noted the same way for both layouts (the cubes are sorted while separated).
    order, resorted = _time_order(epochs.mjd, epochs.offsets)
    for i in resorted:
        statuses[i].note(Note.epochs_sorted_by_time)
    if epochs.layout == "CUBES":
        # A plane absent, or with every pixel bad, is a missing band (docs/catalog-format.md): skipped, not
        # counted, as a band with no row is in the FRAMES layout.  Planes partly bad are counted below.
        separated = preprocess.separate_bands(epochs.stamps, epochs.mjd, epochs.offsets, epochs.present)
        frames, band, mjd, offsets = separated.frames, separated.plane, separated.mjd, separated.offsets
    else:
        frames, band, mjd, offsets = epochs.stamps, epochs.band, epochs.mjd, epochs.offsets
        if order is not None:
            frames, band, mjd = frames[order], band[order], mjd[order]
        if np.any(band < 0):
            for i in range(n):
                codes = band[offsets[i]:offsets[i + 1]]
                unknown = codes[codes < 0]
                if unknown.size and not statuses[i].flagged:
                    names = "/".join(sorted({epochs.unknown_bands[-1 - int(c)] for c in unknown}))
                    statuses[i].note(Note.unknown_band_frames, int(unknown.size), names)
    keep = band >= 0
    for i in range(n):
        if statuses[i].flagged:
            keep[offsets[i]:offsets[i + 1]] = False
    frames, band, mjd, offsets = _compress(frames, band, mjd, offsets, keep)

    n_bad = preprocess.count_bad_pixels(frames)
    dropping = mostly_bad(n_bad, frames.shape[1:])
    for i in range(n):
        block = slice(offsets[i], offsets[i + 1])
        bad_pixels = int(n_bad[block].sum())
        if bad_pixels:
            statuses[i].note(Note.bad_pixels, bad_pixels)
            dropped = int(dropping[block].sum())
            if dropped:
                statuses[i].note(Note.mostly_bad_frames_dropped, dropped)
    if dropping.any():
        keep = ~dropping
        frames, band, mjd, offsets = _compress(frames, band, mjd, offsets, keep)
        n_bad = n_bad[keep]
    for i in range(n):
        if offsets[i + 1] == offsets[i]:
            statuses[i].flag_as(Reason.all_frames_mostly_bad if Note.mostly_bad_frames_dropped in statuses[i].counts
                                else Reason.no_usable_frames)
    return ObjectChunk(object_ids=epochs.object_ids, ra=epochs.ra, dec=epochs.dec, labels=epochs.labels,
                       typing=epochs.typing, frames=frames, band=np.ascontiguousarray(band, dtype=np.int32),
                       mjd=mjd, n_bad=n_bad, offsets=offsets, bands=epochs.bands, statuses=statuses)


def mostly_bad(n_bad: NDArray[np.int64], frame_shape: tuple[int, ...]) -> NDArray[np.bool_]:
    """Which frames are mostly bad: more than :data:`MOSTLY_BAD_FRACTION` of their pixels bad.

    The one rule, for :func:`to_frames` (which drops them) and :func:`frames_problem` (which refuses them).

    Parameters
    ----------
    n_bad : ndarray, shape (F,), integer
        Bad pixels per frame (:func:`convention_rt.preprocess.count_bad_pixels`).
    frame_shape : tuple of int
        (H, W) of the frames.

    Returns
    -------
    ndarray, shape (F,), bool
    """
    return n_bad > MOSTLY_BAD_FRACTION * frame_shape[0] * frame_shape[1]


def frames_problem(stamps: NDArray[np.float32], bands: Sequence[str], card: ModelCard) -> str:
    """Why the transform stage would drop some of these frames, before they are stored ("" when none would be).

    The rules of :func:`to_inputs` (a band the model does not know:
    :func:`model_band_ids`) and of :func:`to_frames` (a frame mostly bad:
    :func:`mostly_bad`), the first broken one said, for frames that are refused
    as a whole rather than dropped one by one (an alert's).

    Parameters
    ----------
    stamps : ndarray, shape (T, H, W), float32
        Frames checked for shape already.
    bands : sequence of str, length T
        Band of each frame.
    card : ModelCard

    Returns
    -------
    str
        e.g. ``"band z is not one of the model's bands (g, r, i)"`` or
        ``"stamp 0 has 864 bad pixels of 1024 (NaN, inf or out of range)"``.
    """
    unknown = sorted({b for b, k in zip(bands, model_band_ids(bands, card)) if k == 0})
    if unknown:
        return f"band {'/'.join(unknown)} is not one of the model's bands ({', '.join(card.bands)})"
    n_bad = preprocess.count_bad_pixels(stamps)
    dropped = np.flatnonzero(mostly_bad(n_bad, stamps.shape[1:]))
    if dropped.size:
        return (f"stamp {int(dropped[0])} has {int(n_bad[dropped[0]])} bad pixels of "
                f"{stamps.shape[1] * stamps.shape[2]} (NaN, inf or out of range)")
    return ""


def read_chunks(catalog: Catalog, max_objects: int = 1024, max_epochs: int = 65536, *, start: int = 0,
                stop: int | None = None) -> Iterator[ObjectChunk]:
    """The objects of an open catalog as clean frames (:func:`to_frames`), chunk by chunk.

    The catalog's ``on_invalid`` policy is applied to each chunk once it is
    transformed: ``warn`` warns once per flagged object, ``raise`` raises a
    :class:`~convention_rt.errors.CatalogError` at the first one.  (A flag of
    the whole catalog, out of the model's domain, was said when it was opened.)

    Parameters
    ----------
    catalog : Catalog
    max_objects, max_epochs, start, stop
        As for :meth:`Catalog.iter_epochs <convention_rt.catalog.Catalog.iter_epochs>`.

    Yields
    ------
    ObjectChunk
    """
    for epochs in catalog.iter_epochs(max_objects, max_epochs, start=start, stop=stop):
        chunk = to_frames(epochs)
        del epochs  # not held while the consumer works on the chunk: at most one chunk's stamps in two copies
        apply_on_invalid(catalog.on_invalid, chunk.statuses, chunk.object_ids, source=catalog.path,
                         said=catalog.domain_flag)
        yield chunk


def epochs_from_objects(objects: Sequence[tuple[ArrayLike, Sequence[str], ArrayLike]], bands: Sequence[str],
                        object_ids: Sequence[Any] | None = None, stamp_size: int = 32) -> EpochChunk:
    """The reader of objects held in memory (alert streams, the Python API): their epochs, checked.

    Parameters
    ----------
    objects : sequence of (stamps, bands, mjd)
        Per object: stamps (T, H, W) float, band names (T,), mjd (T,) float.
    bands : sequence of str
        Known band names; stamps in others are dropped by :func:`to_frames` and noted.
    object_ids : sequence, optional
        Ids for the output (default 0..n-1).
    stamp_size : int
        Required stamp side.

    Returns
    -------
    EpochChunk
        Layout ``FRAMES``; objects with non-finite or implausible times, or
        without epochs, flagged.

    Raises
    ------
    BadInputError
        Stamps of the wrong shape, or lengths that disagree.
    """
    n = len(objects)
    ids = np.arange(n) if object_ids is None else np.asarray(object_ids)
    if ids.shape != (n,):
        raise BadInputError(f"object_ids has shape {ids.shape} for {n} objects")
    lookup = {name: index for index, name in enumerate(bands)}
    unknown: dict[str, int] = {}
    stamps_of, band_of, mjd_of, counts = [], [], [], []
    statuses = [ObjectStatus() for _ in range(n)]
    for i, (stamps, names, times) in enumerate(objects):
        stamps = np.asarray(stamps, dtype=np.float32)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        names = [str(b) for b in names]
        if stamps.ndim == 2:
            stamps = stamps[None]
        if stamps.shape[1:] != (stamp_size, stamp_size) or not (stamps.shape[0] == times.size == len(names)):
            raise BadInputError(f"object {ids[i]}: stamps {stamps.shape}, {len(names)} bands and {times.size} "
                                f"times must agree as (T, {stamp_size}, {stamp_size}), (T,), (T,)")
        codes = [lookup[name] if name in lookup else -1 - unknown.setdefault(name, len(unknown)) for name in names]
        if problem := mjd_problem(times):
            statuses[i].flag_as(problem)
        elif times.size == 0:
            statuses[i].flag_as(Reason.no_epochs)
        stamps_of.append(stamps)
        band_of.append(np.array(codes, dtype=np.int32))
        mjd_of.append(times)
        counts.append(times.size)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return EpochChunk(
        object_ids=ids, ra=np.full(n, np.nan), dec=np.full(n, np.nan), labels=None, typing=None, layout="FRAMES",
        stamps=np.concatenate(stamps_of) if n else np.zeros((0, stamp_size, stamp_size), np.float32),
        band=np.concatenate(band_of) if n else np.zeros(0, np.int32), unknown_bands=tuple(unknown), present=None,
        mjd=np.concatenate(mjd_of) if n else np.zeros(0), offsets=offsets, bands=tuple(bands), statuses=statuses)


def chunk_from_objects(objects: Sequence[tuple[ArrayLike, Sequence[str], ArrayLike]], bands: Sequence[str],
                       object_ids: Sequence[Any] | None = None, stamp_size: int = 32) -> ObjectChunk:
    """Objects held in memory as clean frames: :func:`to_frames` of :func:`epochs_from_objects`."""
    return to_frames(epochs_from_objects(objects, bands, object_ids, stamp_size))


# -- step 2: frames to the model's inputs ---------------------------------------------------------------
@dataclass
class ModelInputs:
    """Model inputs of one chunk, with what happened to each object.

    Attributes
    ----------
    sequences : Sequences
        stamps (n, M, H, W) float32, band_ids (n, M) int64, mjd (n, M) float64,
        mask (n, M) bool, n_bad (n, M) int32.
    times : ndarray, shape (n, M), float32
        Days since each object's first frame in its window, 0 on padding.
    statuses : list of ObjectStatus
        Per object: copies of the chunk's statuses, with what was found here
        (and, once classified, by the classifier).
    bands_used : list of str
        Per object: the bands present in its window, comma-separated.
    """

    sequences: Sequences
    times: NDArray[np.float32]
    statuses: list[ObjectStatus]
    bands_used: list[str]

    @property
    def valid(self) -> NDArray[np.bool_]:
        """Objects that can be classified, shape (n,), bool."""
        return np.array([not status.flagged for status in self.statuses], dtype=bool)

    @property
    def invalid(self) -> list[str]:
        """Per object: "" when it can be classified, else why not."""
        return [status.flag_text for status in self.statuses]

    @property
    def low_information(self) -> list[tuple[Reason, ...]]:
        """Per object: why its classification carries little information (``()`` when it does not)."""
        return [status.low_information for status in self.statuses]

    @low_information.setter
    def low_information(self, reasons: Sequence[tuple[Reason, ...]]) -> None:
        """Mark the objects of low information, as :meth:`convention_rt.model_card.Domain.low_information` says."""
        for status, why in zip(self.statuses, reasons, strict=True):
            status.low_information = tuple(why)

    def why_low_information(self, i: int, domain: Domain | None) -> str:
        """Why object ``i`` is of low information, in words, for warnings and errors."""
        reasons = self.statuses[i].low_information
        details = []
        if Reason.few_frames in reasons:
            details.append(f"{int(self.sequences.n_frames[i])} frame(s) seen, the model's validated "
                           f"minimum is {domain.min_frames if domain is not None else 0}")
        if Reason.near_uniform in reasons:
            details.append(f"its probabilities are within {domain.min_uniform_distance if domain else 0:g} "
                           f"of uniform: the model cannot tell its classes apart")
        return "; ".join(details)

    def status(self, i: int) -> str:
        """``ok``, ``low_information:<why>`` or ``flagged:<why>``, then the notes, ``;``-separated."""
        return format_status(self.statuses[i])


def relative_times(mjd: ArrayLike, mask: ArrayLike) -> NDArray[np.float32]:
    """Days since the first real frame of each row; 0 on padding.

    Parameters
    ----------
    mjd : array_like, shape (n, M), float64
    mask : array_like, shape (n, M), bool

    Returns
    -------
    ndarray, shape (n, M), float32
    """
    mjd = np.asarray(mjd, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    first = np.where(mask.any(axis=1), mjd[:, 0], 0.0)  # real frames fill the leading slots
    return np.where(mask, mjd - first[:, None], 0.0).astype(np.float32)


def model_band_ids(bands: Sequence[str], card: ModelCard) -> NDArray[np.int64]:
    """The model's band id of each of ``bands`` (0 for a band the model does not know), shape (B,), int64.

    The one check of band names against the card.
    """
    return np.array([card.band_id(band) for band in bands], dtype=np.int64)


def to_inputs(
    chunk: ObjectChunk,
    card: ModelCard,
    *,
    mode: WindowMode | None = None,
    seeds: ArrayLike | None = None,
    drop_prob: float = 0.0,
    jitter: int = 0,
    out: Sequences | None = None,
) -> ModelInputs:
    """Turn a chunk of clean frames into the model's inputs.

    Parameters
    ----------
    chunk : ObjectChunk
        Frames of n objects (:func:`to_frames`).
    card : ModelCard
        Gives the band order, normalisation statistics and sequence length.
    mode, seeds, drop_prob, jitter
        Windowing, see :func:`convention_rt.preprocess.select_frames`; by default
        the card's inference window (``card.window``).
    out : Sequences, optional
        Reusable output buffers sized for this chunk.

    Returns
    -------
    ModelInputs
    """
    n = len(chunk)
    statuses = [status.copy() for status in chunk.statuses]
    lookup = model_band_ids(chunk.bands, card)
    band_ids = lookup[chunk.band] if chunk.band.size else np.zeros(0, dtype=np.int64)
    frames, mjd, offsets = chunk.frames, chunk.mjd, chunk.offsets

    unknown = band_ids == 0
    if unknown.any():
        kept_before = np.zeros(unknown.size + 1, dtype=np.int64)
        np.cumsum(~unknown, out=kept_before[1:])
        for i in range(n):
            block = slice(offsets[i], offsets[i + 1])
            dropped = int(unknown[block].sum())
            if dropped:
                names = "/".join(sorted({chunk.bands[b] for b in chunk.band[block][unknown[block]]}))
                statuses[i].note(Note.bands_unknown_to_model, dropped, names)
                if dropped == offsets[i + 1] - offsets[i]:
                    statuses[i].flag_as(Reason.no_frames_in_model_bands)
        keep = ~unknown
        frames, band_ids, mjd = frames[keep], band_ids[keep], mjd[keep]
        offsets = kept_before[offsets]

    mean, std = card.stats_arrays()
    sequences = prepare_sequences(frames, band_ids, mjd, offsets, mean, std, card.seq_len,
                                  mode=card.window if mode is None else mode, seeds=seeds, drop_prob=drop_prob,
                                  jitter=jitter, out=out)
    present = np.zeros((n, card.n_band_ids), dtype=bool)
    rows = np.repeat(np.arange(n), card.seq_len)
    present[rows, sequences.band_ids.reshape(-1)] = True
    bands_used = [",".join(b for b, used in zip(card.bands, present[i, 1:]) if used) for i in range(n)]
    return ModelInputs(sequences=sequences, times=relative_times(sequences.mjd, sequences.mask),
                       statuses=statuses, bands_used=bands_used)


# -- helpers ------------------------------------------------------------------------------------------
def _time_order(mjd: NDArray[np.float64], offsets: NDArray[np.int64]) -> tuple[NDArray[np.intp] | None,
                                                                              NDArray[np.intp]]:
    """The permutation that puts each object's epochs in time order, and the objects it reorders.

    Returns ``(None, [])`` when every object's epochs are already in order.
    """
    nothing = np.zeros(0, dtype=np.intp)
    if mjd.size < 2:
        return None, nothing
    owner = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
    backwards = (np.diff(mjd) < 0) & (owner[1:] == owner[:-1])
    if not backwards.any():
        return None, nothing
    return np.lexsort((mjd, owner)), np.unique(owner[1:][backwards])


def _compress(frames: NDArray[np.float32], band: NDArray[np.int32], mjd: NDArray[np.float64],
              offsets: NDArray[np.int64], keep: NDArray[np.bool_]) -> tuple[NDArray[np.float32], NDArray[np.int32],
                                                                           NDArray[np.float64], NDArray[np.int64]]:
    """Keep the frames where ``keep``; offsets follow."""
    if keep.all():
        return frames, band, mjd, offsets
    kept_before = np.zeros(keep.shape[0] + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return (np.ascontiguousarray(frames[keep]), np.ascontiguousarray(band[keep]),
            np.ascontiguousarray(mjd[keep]), kept_before[offsets])

