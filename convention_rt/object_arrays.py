"""Checks of objects given as arrays to the Python API: stamps, band names, times.

Catalogs are checked by their reader (:mod:`convention_rt.catalog`); objects
handed to :class:`~convention_rt.Classifier` and
:class:`~convention_rt.HistoryCache` in memory are checked here, before
anything is computed or stored.  Every refusal is a
:class:`~convention_rt.errors.BadInputError` (an :class:`InputTypeError`,
also a ``TypeError``, for values of the wrong kind) whose message names the
object and the argument and says how to fix the call.

What is refused is a call that cannot be meant (arrays of the wrong rank,
lengths that disagree, text where numbers belong); what the data says about
the object (non-finite times, unknown bands, bad pixels) is left to the
per-object policy of the classifier, which flags the object.

:func:`mjd_problem` is the one check of an object's times every stage shares:
the catalog reader and the transform stage flag an object by it, the catalog
writer and :class:`~convention_rt.HistoryCache` refuse its times by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convention_rt.errors import BadInputError, InputTypeError
from convention_rt.status import Reason

__all__ = ["MJD_LIMIT", "ObjectArrays", "check_object", "check_objects", "mjd_problem", "object_ids_array"]

#: Largest plausible |MJD| in days (MJD 1e6 is the year 4597): beyond it a time is a placeholder or an
#: error, and differences of such times overflow the model's float32 inputs.
MJD_LIMIT = 1e6

#: (stamps (T, H, W) float32, band names (T,), mjd (T,) float64), as checked.
ObjectArrays = tuple[NDArray[np.float32], list[str], NDArray[np.float64]]

_REAL_KINDS = "iuf"  # integer, unsigned, floating: what a pixel or a time may be


def mjd_problem(mjd: ArrayLike) -> Reason | None:
    """The flag of an object's times: ``non_finite_mjd``, ``mjd_out_of_range`` (beyond :data:`MJD_LIMIT`) or None."""
    times = np.asarray(mjd, dtype=np.float64)
    if not np.all(np.isfinite(times)):
        return Reason.non_finite_mjd
    if times.size and np.abs(times).max() > MJD_LIMIT:
        return Reason.mjd_out_of_range
    return None


def _real_array(value: Any, what: str, name: str, example: str) -> np.ndarray:
    """``value`` as an array of real numbers, else an error naming ``what``'s argument ``name``."""
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nested sequences
        raise BadInputError(f"{what}: {name} is not a regular array ({' '.join(str(exc).split())}); "
                            f"give {example}") from exc
    if array.dtype.kind not in _REAL_KINDS:
        kind = "booleans" if array.dtype.kind == "b" else f"dtype {array.dtype}"
        raise InputTypeError(f"{what}: {name} holds {kind}, not real numbers; give {example}")
    return array


def _band_names(bands: Any, what: str) -> list[str]:
    """Band names as a list of str; a lone string is one band name."""
    if isinstance(bands, str):
        return [bands]
    if isinstance(bands, np.ndarray) and bands.ndim != 1:
        raise BadInputError(f"{what}: bands has shape {bands.shape}; give one band name per stamp, e.g. ['g', 'r']")
    if not isinstance(bands, Iterable):
        raise InputTypeError(f"{what}: bands is {type(bands).__name__}, not a sequence of band names; "
                             f"give one name per stamp, e.g. ['g', 'r']")
    names = list(bands)
    wrong = [b for b in names if not isinstance(b, str)]
    if wrong:
        raise InputTypeError(f"{what}: bands must be band names (str), got {wrong[0]!r} "
                             f"({type(wrong[0]).__name__}); give one name per stamp, e.g. ['g', 'r']"
                             + ("; decode bytes first" if isinstance(wrong[0], bytes | np.bytes_) else ""))
    return [str(b) for b in names]


def check_object(stamps: ArrayLike, bands: Sequence[str] | str, mjd: ArrayLike, *, what: str = "object",
                 stamp_size: int | None = None) -> ObjectArrays:
    """Check one object's arrays and return them in the runtime's types.

    Parameters
    ----------
    stamps : array_like, shape (T, H, W) or (H, W), real
        Cut-outs; a single (H, W) stamp is one epoch.
    bands : sequence of str, length T, or str
        Band of each stamp; a lone string is the band of a single stamp.
    mjd : array_like, shape (T,), or scalar, real
        Observation times.
    what : str
        How errors name the object, e.g. ``"object 'ZTF21abc'"``.
    stamp_size : int, optional
        Required stamp side (the model's); any H, W when omitted.

    Returns
    -------
    stamps : ndarray, shape (T, H, W), float32
        Values beyond float32's range become infinite (bad pixels, counted later).
    bands : list of str, length T
    mjd : ndarray, shape (T,), float64

    Raises
    ------
    BadInputError
        Wrong ranks, stamp size or lengths that disagree.
    InputTypeError
        Stamps or times that are not real numbers, band names that are not strings.
    """
    side = f"{stamp_size}, {stamp_size}" if stamp_size is not None else "H, W"
    pixels = _real_array(stamps, what, "stamps", f"an array of shape (T, {side}) of pixel values")
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3:
        raise BadInputError(f"{what}: stamps has shape {pixels.shape}; give an array of shape (T, {side}), "
                            f"or ({side}) for a single stamp")
    if stamp_size is not None and pixels.shape[1:] != (stamp_size, stamp_size):
        raise BadInputError(f"{what}: stamps are {pixels.shape[1]}x{pixels.shape[2]}, the model needs "
                            f"{stamp_size}x{stamp_size}; crop or pad the cut-outs to {stamp_size}x{stamp_size}")
    times = _real_array(mjd, what, "mjd", "one time (MJD) per stamp")
    if times.ndim > 1:
        raise BadInputError(f"{what}: mjd has shape {times.shape}; give one time (MJD) per stamp, shape (T,)")
    times = times.reshape(-1)
    names = _band_names(bands, what)
    n_stamps = pixels.shape[0]
    if not n_stamps == times.size == len(names):
        raise BadInputError(f"{what}: {n_stamps} stamps, {len(names)} bands and {times.size} times must agree; "
                            f"give one band name and one time per stamp: (T, {side}), (T,), (T,)")
    with np.errstate(over="ignore"):  # beyond float32: inf, a bad pixel like NaN
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    return pixels, names, np.ascontiguousarray(times, dtype=np.float64)


def object_ids_array(object_ids: Sequence[Any] | None, n_objects: int) -> NDArray[Any]:
    """Object ids as a 1-D array of ``n_objects`` (0..n-1 when omitted).

    Raises
    ------
    BadInputError
        When there is not exactly one id per object.
    """
    if object_ids is None:
        return np.arange(n_objects)
    ids = np.asarray(object_ids)
    if ids.ndim != 1 or ids.shape[0] != n_objects:
        found = f"shape {ids.shape}" if ids.ndim != 1 else f"{ids.shape[0]} entries"
        raise BadInputError(f"object_ids has {found} for {n_objects} objects; give one id per object, "
                            f"or none (0..{max(n_objects - 1, 0)})")
    return ids


def check_objects(objects: Iterable[Any], object_ids: Sequence[Any] | None = None, *,
                  stamp_size: int | None = None) -> tuple[list[ObjectArrays], NDArray[Any]]:
    """Check a batch of objects given as (stamps, bands, mjd) and their ids.

    Parameters
    ----------
    objects : iterable of (stamps, bands, mjd)
        See :func:`check_object`.
    object_ids : sequence, optional
        One id per object (default 0..n-1).
    stamp_size : int, optional

    Returns
    -------
    objects : list of (stamps, bands, mjd)
        As :func:`check_object` returns them.
    object_ids : ndarray, shape (n,)

    Raises
    ------
    BadInputError, InputTypeError
        Naming the object (by its id) and what is wrong with it.
    """
    if isinstance(objects, np.ndarray) or not isinstance(objects, Iterable):
        raise InputTypeError(f"objects must be a sequence of (stamps, bands, mjd) tuples, one per object, "
                             f"got {type(objects).__name__}; for one object use predict_object")
    items = list(objects)
    ids = object_ids_array(object_ids, len(items))
    checked = []
    for i, item in enumerate(items):
        what = f"object {ids[i]}"
        if isinstance(item, np.ndarray) or not isinstance(item, Sequence) or len(item) != 3:
            size = f" of {len(item)}" if isinstance(item, Sequence) else ""
            raise InputTypeError(f"{what}: expected a (stamps, bands, mjd) tuple, got {type(item).__name__}{size}")
        checked.append(check_object(*item, what=what, stamp_size=stamp_size))
    return checked, ids
