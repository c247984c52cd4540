"""The batches of objects that go through the runtime, from the reader to the model.

* :class:`EpochChunk`: epochs as read, from a catalog (:meth:`Catalog.iter_epochs
  <convention_rt.catalog.Catalog.iter_epochs>`) or from objects in memory
  (:func:`convention_rt.transform.epochs_from_objects`): single-band stamps with
  a band each (layout ``FRAMES``) or multi-band cubes (``CUBES``), as stored;
* :class:`ObjectChunk`: single-band frames, time-ordered and cleaned, by
  :func:`convention_rt.transform.to_frames`.

Objects are ragged: the rows (epochs or frames) of all objects stacked on the
first axis, and ``offsets`` of length ``n + 1`` such that object ``i`` owns
rows ``offsets[i]:offsets[i + 1]``.  Each object has an
:class:`~convention_rt.status.ObjectStatus` that every stage adds to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convention_rt.status import ObjectStatus, format_status

__all__ = ["EpochChunk", "Layout", "ObjectChunk"]

Layout = Literal["FRAMES", "CUBES"]


@dataclass
class EpochChunk:
    """A batch of objects with their epochs as read.

    Attributes
    ----------
    object_ids : ndarray, shape (n,)
        int64 or str.
    ra, dec : ndarray, shape (n,), float64
    labels, typing : ndarray, shape (n,), str, or None
        Class labels and ``spec``/``phot`` ("" where unknown), when the source has them.
    layout : {"FRAMES", "CUBES"}
    stamps : ndarray, float32, native byte order
        ``(T, H, W)`` single-band stamps (FRAMES) or ``(T, B, H, W)`` cubes whose
        planes follow :attr:`bands` (CUBES), at the stamp size asked for, in the
        target's flux unit.
    band : ndarray, shape (T,), int32, or None
        FRAMES: index of each stamp's band in :attr:`bands`; ``-1 - k`` for a
        name not among them, the ``k``-th of :attr:`unknown_bands`.
    unknown_bands : tuple of str
        FRAMES: the band names met that are not among :attr:`bands`.
    present : ndarray, shape (T, B), bool, or None
        CUBES: which planes exist (None: all).
    mjd : ndarray, shape (T,), float64
    offsets : ndarray, shape (n + 1,), int64
        Object ``i`` owns epochs ``offsets[i]:offsets[i + 1]`` (none when flagged as read).
    bands : tuple of str
        The band names of the source.
    statuses : list of ObjectStatus
    """

    object_ids: NDArray[Any]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    labels: NDArray[np.str_] | None
    typing: NDArray[np.str_] | None
    layout: Layout
    stamps: NDArray[np.float32]
    band: NDArray[np.int32] | None
    unknown_bands: tuple[str, ...]
    present: NDArray[np.bool_] | None
    mjd: NDArray[np.float64]
    offsets: NDArray[np.int64]
    bands: tuple[str, ...]
    statuses: list[ObjectStatus]

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])


@dataclass(init=False)
class ObjectChunk:
    """A batch of objects with their single-band frames (ragged), time-ordered and cleaned.

    Attributes
    ----------
    object_ids : ndarray, shape (n,)
        int64 or str, as stored in the catalog.
    ra, dec : ndarray, shape (n,), float64
    labels : ndarray, shape (n,), str, or None
        Class labels ("" where unknown), when the catalog has them.
    typing : ndarray, shape (n,), str, or None
        ``"spec"``, ``"phot"`` or "" per object, when the catalog has them.
    frames : ndarray, shape (F, H, W), float32, native byte order
        Time-ordered frames of all objects, stacked.
    band : ndarray, shape (F,), int32
        Index of each frame's band in :attr:`bands`.
    mjd : ndarray, shape (F,), float64
    n_bad : ndarray, shape (F,), int32
        Bad pixels in each frame: NaN, inf, or of magnitude above
        :data:`convention_rt.preprocess.MAX_PIXEL_MAGNITUDE` (replaced later, by normalisation).
    offsets : ndarray, shape (n + 1,), int64
        Object ``i`` owns frames ``offsets[i]:offsets[i + 1]``.
    bands : tuple of str
        Band names of the catalog.
    statuses : list of ObjectStatus, optional
        Per object: why it cannot be classified (if so), and what was fixed or
        dropped; by default every object ``ok``.
    """

    object_ids: NDArray[Any]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    labels: NDArray[np.str_] | None
    typing: NDArray[np.str_] | None
    frames: NDArray[np.float32]
    band: NDArray[np.int32]
    mjd: NDArray[np.float64]
    n_bad: NDArray[np.int32]
    offsets: NDArray[np.int64]
    bands: tuple[str, ...]
    statuses: list[ObjectStatus]

    def __init__(self, object_ids: NDArray[Any], ra: NDArray[np.float64], dec: NDArray[np.float64],
                 labels: NDArray[np.str_] | None, typing: NDArray[np.str_] | None, frames: NDArray[np.float32],
                 band: NDArray[np.int32], mjd: NDArray[np.float64], n_bad: NDArray[np.int32],
                 offsets: NDArray[np.int64], bands: tuple[str, ...], statuses: list[ObjectStatus] | None = None) -> None:
        self.object_ids, self.ra, self.dec, self.labels, self.typing = object_ids, ra, dec, labels, typing
        self.frames, self.band, self.mjd, self.n_bad, self.offsets = frames, band, mjd, n_bad, offsets
        self.bands = tuple(bands)
        self.statuses = statuses if statuses is not None else [ObjectStatus() for _ in range(len(object_ids))]

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])

    @property
    def invalid(self) -> list[str]:
        """Per object: "" when usable, else why it cannot be classified (``<reason>[:<detail>]``)."""
        return [status.flag_text for status in self.statuses]

    def status(self, i: int) -> str:
        """The status of object ``i`` as text: ``ok`` or ``flagged:<why>``, then notes."""
        return format_status(self.statuses[i])
