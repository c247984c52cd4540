"""Preprocessing of image time series: band separation, normalisation, windowing.

Every function checks its inputs (shape, dtype, contiguity, index ranges),
converts them to native-endian C-contiguous arrays, then calls the compiled
kernels of :mod:`convention_rt._preprocess`, which trust what they are given.

Objects are passed as *ragged* arrays: the frames of all objects stacked on the
first axis, plus ``offsets`` of length ``n_objects + 1`` such that object ``i``
owns frames ``offsets[i]:offsets[i + 1]``.

Windowing (see :func:`select_frames`):

* ``mode="latest"`` (inference) keeps the latest ``seq_len`` frames of each
  object, in time order; shorter objects are padded at the end.
* ``mode="random"`` (training) drops each frame with probability ``drop_prob``
  (never all of them) and then takes a uniformly random run of ``seq_len``
  consecutive kept frames, driven by one 64-bit seed per object (splitmix64),
  so the same seeds always give the same sequences.
* ``mode="event"`` keeps the run of ``seq_len`` consecutive frames that holds the
  most of the object's brightening (:mod:`convention_rt.event_window`); with
  ``seeds`` (training) after the same frame drop, its start moved by up to
  ``jitter`` frames.

Padding slots have band id 0, zero stamps, zero time and ``mask == 0``.

Bad pixels are NaN, infinite, or finite but beyond :data:`MAX_PIXEL_MAGNITUDE`
in absolute value (sentinels such as -1e30 or 3e38 that some pipelines write
into masked pixels: no flux in any unit in use comes near).  All three are
counted alike (:func:`count_bad_pixels`), replaced alike before normalisation,
and a plane of nothing else is a missing band (:func:`separate_bands`); left
in, such a pixel can overflow the model's float32 arithmetic (the shipped
models return a near-uniform guess from about 1e20 on).  The kernels apply the
rule to the float32 pixels, in the same pass that reads them; the bound is
defined once, in the compiled module, and read from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convention_rt import _preprocess
from convention_rt.event_window import event_excess, event_selection
from convention_rt.errors import UsageError

__all__ = [
    "INFERENCE_WINDOWS",
    "MAX_PIXEL_MAGNITUDE",
    "SeparatedFrames",
    "Sequences",
    "allocate_sequences",
    "count_bad_pixels",
    "separate_bands",
    "normalise_bands",
    "select_frames",
    "window_sequence",
    "prepare_sequences",
]

WindowMode = Literal["latest", "random", "event"]
#: Window modes a model card may name for inference.
INFERENCE_WINDOWS: tuple[str, ...] = ("latest", "event")

#: Largest plausible absolute pixel value (1e15); finite pixels beyond it are bad pixels, as NaN and
#: inf are.  Far above any real cut-out (a pixel of a magnitude -7 source in nJy) and far below where
#: the exported models' float32 arithmetic breaks down (about 1e20 after normalisation).  Read from the
#: compiled kernels, which apply it, so that the two cannot disagree.
MAX_PIXEL_MAGNITUDE: float = _preprocess.MAX_PIXEL_MAGNITUDE


@dataclass(frozen=True)
class SeparatedFrames:
    """Single-band frames of a batch of objects.

    Attributes
    ----------
    frames : ndarray, shape (F, H, W), float32
        One frame per kept (epoch, band) plane, time-ordered within each object.
    plane : ndarray, shape (F,), int32
        Index of the source plane (band position in the cube) of each frame.
    mjd : ndarray, shape (F,), float64
        Observation time of each frame.
    offsets : ndarray, shape (n_objects + 1,), int64
        Object ``i`` owns ``frames[offsets[i]:offsets[i + 1]]``.
    """

    frames: NDArray[np.float32]
    plane: NDArray[np.int32]
    mjd: NDArray[np.float64]
    offsets: NDArray[np.int64]


@dataclass(frozen=True)
class Sequences:
    """Fixed-length model inputs for a batch of objects.

    Attributes
    ----------
    stamps : ndarray, shape (n, M, H, W), float32
        Frames in time order; zeros on padding slots.
    band_ids : ndarray, shape (n, M), int64
        Band id of each slot, 0 on padding.
    mjd : ndarray, shape (n, M), float64
        Observation time of each slot, 0 on padding.
    mask : ndarray, shape (n, M), bool
        True where the slot holds a real frame.
    n_bad : ndarray, shape (n, M), int32, or None
        Bad pixels (NaN, inf or beyond :data:`MAX_PIXEL_MAGNITUDE`) replaced in
        each slot, when normalisation ran.
    """

    stamps: NDArray[np.float32]
    band_ids: NDArray[np.int64]
    mjd: NDArray[np.float64]
    mask: NDArray[np.bool_]
    n_bad: NDArray[np.int32] | None = None

    @property
    def n_frames(self) -> NDArray[np.int64]:
        """Number of real frames per object, shape (n,), int64."""
        return self.mask.sum(axis=1, dtype=np.int64)


def _array(value: ArrayLike, name: str, dtype: type, ndim: int) -> np.ndarray:
    """Return ``value`` as a native-endian C-contiguous array of ``dtype`` and ``ndim``."""
    array = np.asarray(value)
    if array.ndim != ndim:
        raise UsageError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    target = np.dtype(dtype)
    if array.size and not np.can_cast(array.dtype, target, casting="same_kind"):
        raise UsageError(f"{name} must be {target.name}-compatible, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=target)


def _check_offsets(offsets: ArrayLike, n_frames: int) -> NDArray[np.int64]:
    offsets = _array(offsets, "offsets", np.int64, 1)
    if offsets.size == 0:
        raise UsageError("offsets must hold n_objects + 1 entries, got none")
    if offsets[0] < 0 or offsets[-1] > n_frames:
        raise UsageError(
            f"offsets must lie within [0, {n_frames}], got {offsets[0]}..{offsets[-1]}"
        )
    if np.any(np.diff(offsets) < 0):
        raise UsageError("offsets must be non-decreasing")
    return offsets


def _check_band_ids(band_ids: ArrayLike, n_frames: int, n_bands: int) -> NDArray[np.int32]:
    raw = np.asarray(band_ids)
    if raw.ndim != 1 or raw.shape[0] != n_frames:
        raise UsageError(f"band_ids has shape {raw.shape}, expected ({n_frames},): one id per frame")
    if raw.size and raw.dtype.kind not in "iu":
        raise UsageError(f"band_ids must be integers, got dtype {raw.dtype}")
    if raw.size and (raw.min() < 0 or raw.max() >= n_bands):
        raise UsageError(f"band_ids must lie in [0, {n_bands - 1}], got {raw.min()}..{raw.max()}")
    return np.ascontiguousarray(raw, dtype=np.int32)


def _check_stats(
    mean: ArrayLike, std: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    mean = _array(mean, "mean", np.float64, 1)
    std = _array(std, "std", np.float64, 1)
    if mean.shape != std.shape or mean.size == 0:
        raise UsageError(f"mean and std must be equal, non-empty 1-D: {mean.shape} vs {std.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise UsageError("mean must be finite and std finite and positive")
    return mean, std


def _check_frames(
    frames: ArrayLike, band_ids: ArrayLike, mjd: ArrayLike, offsets: ArrayLike, n_bands: int
) -> tuple[NDArray[np.float32], NDArray[np.int32], NDArray[np.float64], NDArray[np.int64]]:
    frames = _array(frames, "frames", np.float32, 3)
    n_frames = frames.shape[0]
    band_ids = _check_band_ids(band_ids, n_frames, n_bands)
    mjd = _array(mjd, "mjd", np.float64, 1)
    if mjd.shape[0] != n_frames:
        raise UsageError(f"mjd has {mjd.shape[0]} entries for {n_frames} frames")
    return frames, band_ids, mjd, _check_offsets(offsets, n_frames)


def count_bad_pixels(frames: ArrayLike) -> NDArray[np.int32]:
    """Count the bad pixels of each frame: NaN, infinite, or beyond :data:`MAX_PIXEL_MAGNITUDE`.

    Parameters
    ----------
    frames : array_like, shape (F, H, W), float32

    Returns
    -------
    ndarray, shape (F,), int32
    """
    frames = _array(frames, "frames", np.float32, 3)
    out = np.zeros(frames.shape[0], dtype=np.int32)
    if frames.shape[0] and frames.shape[1] * frames.shape[2]:
        _preprocess.count_bad_pixels(frames, out)
    return out


def separate_bands(
    cubes: ArrayLike,
    mjd: ArrayLike,
    offsets: ArrayLike,
    present: ArrayLike | None = None,
) -> SeparatedFrames:
    """Turn multi-band epochs into time-ordered single-band frames.

    A plane is skipped when ``present`` says it is absent or when all of its
    pixels are bad (a missing band filled with NaN, inf or a sentinel value).
    Within an object, epochs are ordered by time (stable), and the planes of
    one epoch by plane index.

    Parameters
    ----------
    cubes : array_like, shape (T, B, H, W), float32
        Epochs of all objects, stacked.
    mjd : array_like, shape (T,), float64
        Time of each epoch.
    offsets : array_like, shape (n_objects + 1,), int64
        Object ``i`` owns epochs ``offsets[i]:offsets[i + 1]``.
    present : array_like, shape (T, B), bool, optional
        Which planes exist; all of them when omitted.

    Returns
    -------
    SeparatedFrames
    """
    cubes = _array(cubes, "cubes", np.float32, 4)
    n_epochs, n_planes = cubes.shape[:2]
    mjd = _array(mjd, "mjd", np.float64, 1)
    if mjd.shape[0] != n_epochs:
        raise UsageError(f"mjd has {mjd.shape[0]} entries for {n_epochs} epochs")
    offsets = _check_offsets(offsets, n_epochs)
    if present is None:
        present_u8 = np.ones((n_epochs, n_planes), dtype=np.uint8)
    else:
        present_arr = np.asarray(present)
        if present_arr.shape != (n_epochs, n_planes):
            raise UsageError(f"present must have shape {(n_epochs, n_planes)}, got {present_arr.shape}")
        present_u8 = np.ascontiguousarray(present_arr, dtype=bool).view(np.uint8)

    keep = np.zeros((n_epochs, n_planes), dtype=np.uint8)
    if cubes.size:
        _preprocess.keep_planes(cubes, present_u8, keep)

    # Only epochs owned by an object take part; sort by (object, time).
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(counts.size), counts)
    epoch_index = np.arange(offsets[0], offsets[-1], dtype=np.int64)
    order = epoch_index[np.lexsort((mjd[epoch_index], owner))]

    kept_before = np.zeros(n_epochs + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1, dtype=np.int64), out=kept_before[1:])
    frames_per_object = kept_before[offsets[1:]] - kept_before[offsets[:-1]]
    new_offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(frames_per_object, out=new_offsets[1:])

    n_frames = int(new_offsets[-1])
    frames = np.empty((n_frames, cubes.shape[2], cubes.shape[3]), dtype=np.float32)
    plane = np.empty(n_frames, dtype=np.int32)
    frame_mjd = np.empty(n_frames, dtype=np.float64)
    if n_frames:
        written = _preprocess.gather_planes(cubes, order, keep, mjd, frames, plane, frame_mjd)
        assert written == n_frames
    return SeparatedFrames(frames=frames, plane=plane, mjd=frame_mjd, offsets=new_offsets)


def normalise_bands(
    frames: ArrayLike, band_ids: ArrayLike, mean: ArrayLike, std: ArrayLike
) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Normalise each frame with the statistics of its band.

    ``out[f] = (frames[f] - mean[b]) * (1 / std[b])`` with ``b = band_ids[f]``,
    in float32 arithmetic (mean and 1/std rounded to float32).  Bad pixels (NaN,
    infinite, or beyond :data:`MAX_PIXEL_MAGNITUDE`) are first replaced by the
    median of the frame's good pixels (its background level), or by ``mean[b]``
    when the frame has none.

    Parameters
    ----------
    frames : array_like, shape (F, H, W), float32
    band_ids : array_like, shape (F,), int32
        Index into ``mean`` and ``std`` for each frame.
    mean, std : array_like, shape (n_band_ids,), float64
        Per-band statistics; ``std > 0``.

    Returns
    -------
    out : ndarray, shape (F, H, W), float32
    n_bad : ndarray, shape (F,), int32
        Number of replaced pixels per frame.
    """
    frames = _array(frames, "frames", np.float32, 3)
    mean, std = _check_stats(mean, std)
    band_ids = _check_band_ids(band_ids, frames.shape[0], mean.size)
    out = np.empty_like(frames)
    n_bad = np.zeros(frames.shape[0], dtype=np.int32)
    if frames.shape[0] and frames.shape[1] * frames.shape[2]:
        _preprocess.normalise_bands(frames, band_ids, mean, std, out, n_bad)
    return out, n_bad


def select_frames(
    offsets: ArrayLike,
    seq_len: int,
    *,
    mode: WindowMode = "latest",
    seeds: ArrayLike | None = None,
    drop_prob: float = 0.0,
    excess: ArrayLike | None = None,
    jitter: int = 0,
) -> NDArray[np.int64]:
    """Choose which frames fill each object's sequence.

    Parameters
    ----------
    offsets : array_like, shape (n + 1,), int64
    seq_len : int
        Sequence length M, at least 1.
    mode : {"latest", "random", "event"}
        See the module docstring.
    seeds : array_like, shape (n,), uint64, optional
        One seed per object; required for ``mode="random"``, training draws for ``mode="event"``.
    drop_prob : float
        Frame drop probability in [0, 1), with seeds only.
    excess : array_like, shape (F,), float64, optional
        Each frame's excess (:func:`convention_rt.event_window.event_excess`); required for ``mode="event"``.
    jitter : int
        Largest shift of an event window's start in training (``mode="event"`` with seeds), >= 0.

    Returns
    -------
    ndarray, shape (n, M), int64
        Source frame index of each slot, -1 for padding.
    """
    offsets = _check_offsets(offsets, np.iinfo(np.int64).max)
    n_objects = offsets.size - 1
    if int(seq_len) < 1:
        raise UsageError(f"seq_len must be at least 1, got {seq_len}")
    seq_len = int(seq_len)
    if mode not in ("latest", "random", "event"):
        raise UsageError(f"mode must be 'latest', 'random' or 'event', got {mode!r}")
    if mode == "random" and seeds is None:
        raise UsageError("mode='random' needs one seed per object")
    if seeds is None or mode == "latest":
        seeds, seeds_arr = None, np.zeros(n_objects, dtype=np.uint64)
        if drop_prob != 0.0 or jitter != 0:
            raise UsageError("drop_prob and jitter are training draws: they need seeds (and not mode='latest')")
    else:
        seeds_arr = np.ascontiguousarray(np.asarray(seeds).astype(np.uint64, copy=False))
        if seeds_arr.shape != (n_objects,):
            raise UsageError(f"seeds must have shape ({n_objects},), got {seeds_arr.shape}")
        if not 0.0 <= drop_prob < 1.0:
            raise UsageError(f"drop_prob must be in [0, 1), got {drop_prob}")
    if int(jitter) < 0 or (jitter and mode != "event"):
        raise UsageError(f"jitter must be >= 0 and applies to mode='event' only, got {jitter}")
    if mode == "event":
        if excess is None:
            raise UsageError("mode='event' needs each frame's excess")
        excess_arr = np.ascontiguousarray(np.asarray(excess, dtype=np.float64))
        if excess_arr.shape != (int(offsets[-1]),):
            raise UsageError(f"excess must have shape ({int(offsets[-1])},), got {excess_arr.shape}")
        return event_selection(offsets, excess_arr, seq_len, seeds=None if seeds is None else seeds_arr,
                               drop_prob=float(drop_prob), jitter=int(jitter))
    selection = np.empty((n_objects, seq_len), dtype=np.int64)
    max_count = int(np.diff(offsets).max()) if n_objects else 0
    _preprocess.select_frames(
        offsets, seq_len, mode == "random", seeds_arr, float(drop_prob), max_count, selection
    )
    return selection


def _selection(frames: NDArray[np.float32], band_ids: NDArray[np.int32], offsets: NDArray[np.int64], seq_len: int,
               mode: WindowMode, seeds: ArrayLike | None, drop_prob: float, jitter: int) -> NDArray[np.int64]:
    """:func:`select_frames` of checked frames, measuring their excess first in ``mode="event"``."""
    excess = None
    if mode == "event":  # only objects longer than a sequence need it (it reads the stamps' centres only)
        long = bool(offsets.size > 1 and (np.diff(offsets) > int(seq_len)).any())
        excess = event_excess(frames, band_ids, offsets, MAX_PIXEL_MAGNITUDE) if long else np.zeros(frames.shape[0])
    return select_frames(offsets, seq_len, mode=mode, seeds=seeds, drop_prob=drop_prob, excess=excess,
                         jitter=jitter)


def allocate_sequences(n_objects: int, seq_len: int, height: int, width: int) -> Sequences:
    """Uninitialised output buffers for :func:`prepare_sequences` (``out=``).

    Reusing one set of buffers across chunks avoids allocating and faulting in
    fresh memory for every batch.

    Returns
    -------
    Sequences
        stamps (n, M, H, W) float32, band_ids (n, M) int64, mjd (n, M) float64,
        mask (n, M) bool, n_bad (n, M) int32.
    """
    shape = (int(n_objects), int(seq_len))
    return Sequences(
        stamps=np.empty(shape + (int(height), int(width)), dtype=np.float32),
        band_ids=np.empty(shape, dtype=np.int64),
        mjd=np.empty(shape, dtype=np.float64),
        mask=np.empty(shape, dtype=bool),
        n_bad=np.empty(shape, dtype=np.int32),
    )


def _check_out(out: Sequences | None, n_objects: int, seq_len: int, height: int, width: int) -> Sequences:
    """``out`` if it fits the batch exactly (shapes, dtypes, C order), else fresh buffers."""
    if out is None:
        return allocate_sequences(n_objects, seq_len, height, width)
    expected = allocate_sequences(0, seq_len, height, width)
    for name in ("stamps", "band_ids", "mjd", "mask", "n_bad"):
        given, wanted = getattr(out, name), getattr(expected, name)
        shape = (n_objects,) + wanted.shape[1:]
        if (not isinstance(given, np.ndarray) or given.shape != shape or given.dtype != wanted.dtype
                or not given.flags.c_contiguous or not given.flags.writeable):
            raise UsageError(f"out.{name} must be a writeable C-contiguous {wanted.dtype} array of shape {shape}")
    return out


def window_sequence(
    frames: ArrayLike,
    band_ids: ArrayLike,
    mjd: ArrayLike,
    offsets: ArrayLike,
    seq_len: int,
    *,
    mode: WindowMode = "latest",
    seeds: ArrayLike | None = None,
    drop_prob: float = 0.0,
    jitter: int = 0,
) -> Sequences:
    """Pad or cut each object's frames to ``seq_len`` slots (no normalisation).

    Parameters
    ----------
    frames : array_like, shape (F, H, W), float32
    band_ids : array_like, shape (F,), int32, values >= 1
    mjd : array_like, shape (F,), float64
    offsets : array_like, shape (n + 1,), int64
    seq_len, mode, seeds, drop_prob, jitter
        As in :func:`select_frames` (the excess of ``mode="event"`` is measured on ``frames``).

    Returns
    -------
    Sequences
        With ``n_bad=None``.
    """
    frames, band_ids, mjd, offsets = _check_frames(
        frames, band_ids, mjd, offsets, np.iinfo(np.int32).max
    )
    selection = _selection(frames, band_ids, offsets, seq_len, mode, seeds, drop_prob, jitter)
    out = allocate_sequences(selection.shape[0], selection.shape[1], *frames.shape[1:])
    _preprocess.window_sequence(
        frames, band_ids, mjd, selection, out.stamps, out.band_ids, out.mjd, out.mask.view(np.uint8)
    )
    return Sequences(stamps=out.stamps, band_ids=out.band_ids, mjd=out.mjd, mask=out.mask)


def prepare_sequences(
    frames: ArrayLike,
    band_ids: ArrayLike,
    mjd: ArrayLike,
    offsets: ArrayLike,
    mean: ArrayLike,
    std: ArrayLike,
    seq_len: int,
    *,
    mode: WindowMode = "latest",
    seeds: ArrayLike | None = None,
    drop_prob: float = 0.0,
    jitter: int = 0,
    out: Sequences | None = None,
) -> Sequences:
    """Window and normalise in one pass: the model inputs of a batch of objects.

    Equal to :func:`window_sequence` of the output of :func:`normalise_bands`,
    but only the selected frames are read, once.

    Parameters
    ----------
    frames : array_like, shape (F, H, W), float32
    band_ids : array_like, shape (F,), int32
        Model band ids, 1..n_band_ids-1 (0 is padding).
    mjd : array_like, shape (F,), float64
    offsets : array_like, shape (n + 1,), int64
    mean, std : array_like, shape (n_band_ids,), float64
        Per-band statistics indexed by band id.
    seq_len, mode, seeds, drop_prob, jitter
        As in :func:`select_frames` (the excess of ``mode="event"`` is measured on ``frames``).
    out : Sequences, optional
        Buffers to write into (see :func:`allocate_sequences`), sized for exactly
        this batch; fresh ones are allocated when omitted.

    Returns
    -------
    Sequences
        ``out`` (or the new buffers), with ``n_bad`` filled.
    """
    mean, std = _check_stats(mean, std)
    frames, band_ids, mjd, offsets = _check_frames(frames, band_ids, mjd, offsets, mean.size)
    selection = _selection(frames, band_ids, offsets, seq_len, mode, seeds, drop_prob, jitter)
    out = _check_out(out, selection.shape[0], selection.shape[1], *frames.shape[1:])
    _preprocess.prepare_sequences(
        frames, band_ids, mjd, selection, mean, std,
        out.stamps, out.band_ids, out.mjd, out.mask.view(np.uint8), out.n_bad,
    )
    return out
