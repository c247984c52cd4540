"""Object histories for alert streams.

An alert carries the cut-outs of one epoch only; ConvEntion classifies an
object from its whole sequence.  :class:`HistoryCache` accumulates each
object's frames as its alerts arrive, so every new alert is classified on the
object's history.

Bounds and eviction:

* per object, only the latest ``max_frames`` frames are kept (a model whose
  card's window is ``"latest"`` reads at most its sequence length M of them, the
  latest, so older frames never matter to it; one whose window is ``"event"`` can
  look back over all ``max_frames``); a repeated (time, band) pair replaces the
  earlier frame;
* at most ``max_objects`` objects are kept; adding a new object beyond that
  evicts the least recently updated one (an object quiet for longest).

An alert is checked in full before it is stored (shapes, stamp size against
the history, finite times): a refused alert raises and changes nothing.

Memory is therefore at most ``max_objects x max_frames x H x W x 4`` bytes
(100,000 objects x 99 frames x 32 x 32 x 4 B = 40 GB at the defaults' worst
case; size ``max_objects`` to the host).  The cache is thread-safe.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convention_rt.errors import BadInputError, InputTypeError, UsageError
from convention_rt.object_arrays import MJD_LIMIT, check_object, mjd_problem

__all__ = ["HistoryCache", "check_object_id"]


def check_object_id(object_id: Any) -> None:
    """Refuse an object id a cache cannot key on (an unhashable one, e.g. a list or an array)."""
    try:
        hash(object_id)
    except TypeError:
        raise InputTypeError(f"object id {object_id!r} is a {type(object_id).__name__}, which cannot key a history; "
                             f"give a str or an int") from None


class HistoryCache:
    """Bounded per-object frame histories with least-recently-updated eviction.

    Parameters
    ----------
    max_objects : int
        Objects kept before the least recently updated is evicted.
    max_frames : int
        Latest frames kept per object (use the model's sequence length).
    """

    def __init__(self, max_objects: int = 10_000, max_frames: int = 99) -> None:
        for name, value in (("max_objects", max_objects), ("max_frames", max_frames)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise UsageError(f"{name} must be a whole number (int), got {value!r}; e.g. "
                                 f"HistoryCache(max_objects=10_000, max_frames=99)")
        if max_objects < 1 or max_frames < 1:
            raise UsageError(f"max_objects and max_frames must be at least 1, got {max_objects} and {max_frames}")
        max_objects, max_frames = int(max_objects), int(max_frames)
        self.max_objects = max_objects
        self.max_frames = max_frames
        self.evicted = 0
        self._histories: OrderedDict[Any, tuple[NDArray[np.float32], list[str], NDArray[np.float64]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._histories)

    def __contains__(self, object_id: Any) -> bool:
        return object_id in self._histories

    def add(self, object_id: Any, stamps: ArrayLike, bands: Sequence[str] | str,
            mjd: ArrayLike) -> tuple[NDArray[np.float32], list[str], NDArray[np.float64]]:
        """Add one alert's frames and return the object's whole (bounded) history.

        The alert is checked completely first: a refused alert changes nothing
        (the object's history, its place in the eviction order and the other
        objects stay as they were).

        Parameters
        ----------
        object_id : hashable
        stamps : array_like, shape (T, H, W) or (H, W), float
        bands : sequence of str, length T (or one str for one stamp)
        mjd : array_like, shape (T,) or scalar, float64
            Finite times.

        Returns
        -------
        stamps : ndarray, shape (T', H, W), float32
        bands : list of str, length T'
        mjd : ndarray, shape (T',), float64
            Time-ordered, at most ``max_frames``.

        Raises
        ------
        BadInputError
            Arrays that disagree (see :func:`convention_rt.object_arrays.check_object`),
            no frames, a non-finite time, or stamps of another size than the
            object's history.
        """
        check_object_id(object_id)
        what = f"object {object_id}"
        new_stamps, new_bands, new_mjd = check_object(stamps, bands, mjd, what=what)
        if new_mjd.size == 0:
            raise BadInputError(f"{what}: the alert has no stamps (history unchanged); give at least one")
        if mjd_problem(new_mjd):
            raise BadInputError(f"{what}: mjd {new_mjd.tolist()} is not finite or beyond +-{MJD_LIMIT:g} days "
                                f"(history unchanged); give the observation time (MJD) of each stamp")
        with self._lock:
            old = self._histories.get(object_id)
            if old is not None:
                if old[0].shape[1:] != new_stamps.shape[1:]:
                    raise BadInputError(f"{what}: stamps {new_stamps.shape[1:]} differ from its history's "
                                        f"{old[0].shape[1:]} (history unchanged); give stamps of one size")
                replaced = {(t, b) for t, b in zip(new_mjd.tolist(), new_bands)}
                keep = [k for k, key in enumerate(zip(old[2].tolist(), old[1])) if key not in replaced]
                all_stamps = np.concatenate([old[0][keep], new_stamps])
                all_bands = [old[1][k] for k in keep] + new_bands
                all_mjd = np.concatenate([old[2][keep], new_mjd])
            else:
                all_stamps, all_bands, all_mjd = new_stamps, new_bands, new_mjd
            order = np.argsort(all_mjd, kind="stable")[-self.max_frames:]
            history = (np.ascontiguousarray(all_stamps[order]), [all_bands[k] for k in order], all_mjd[order])
            self._histories[object_id] = history
            self._histories.move_to_end(object_id)
            while len(self._histories) > self.max_objects:
                self._histories.popitem(last=False)
                self.evicted += 1
            return history

    def get(self, object_id: Any) -> tuple[NDArray[np.float32], list[str], NDArray[np.float64]] | None:
        """The object's history, or None when it is unknown or was evicted."""
        with self._lock:
            return self._histories.get(object_id)

    def forget(self, object_id: Any) -> None:
        """Drop an object's history (e.g. once it is classified for good)."""
        with self._lock:
            self._histories.pop(object_id, None)
