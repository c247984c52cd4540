"""The labelled objects of a catalog and their epochs, read once through the runtime's reader.

The same objects as :func:`train.data.dataset.load_labelled` keeps (usable, with a
label of the task), in catalog order, but without holding the frames: each object's
frames can be handed to a feature function while the catalog streams past.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from convention_rt.catalog import Catalog
from train.data.dataset import TASKS, LabelledObjects, labelled_rows, log_skipped

__all__ = ["FrameFeatures", "read_objects"]


#: ``(frames (T, H, W) float32, band (T,) int32 index into the catalog's bands) -> (K,) float64``.
FrameFeatures = Callable[[NDArray[np.float32], NDArray[np.int32]], NDArray[np.float64]]


def read_objects(path: str | Path, task: str = "4class", *, frame_features: FrameFeatures | None = None,
                 stamp_size: int = 32) -> tuple[LabelledObjects, NDArray[np.float64] | None]:
    """The labelled, usable objects of a catalog with their epochs, and optionally features of their frames.

    Parameters
    ----------
    path : str or Path
        Catalog in the convention-rt format, with a ``LABEL`` column.
    task : {"4class", "3class"}
    frame_features : callable, optional
        Called with each kept object's frames and band indices; its results are
        stacked in object order.
    stamp_size : int
        Stamp side, as for :func:`train.data.dataset.load_labelled`.

    Returns
    -------
    objects : LabelledObjects
        ``object_ids``, ``labels``, ``typing``, ``band``, ``mjd``, ``offsets``,
        ``classes``, ``bands`` as :func:`~train.data.dataset.load_labelled` returns
        them; ``frames`` is empty, shape ``(0, stamp_size, stamp_size)``.
    features : ndarray, shape (n, K), float64, or None
        The stacked results of ``frame_features`` (None without it).

    Raises
    ------
    ValueError
        When the catalog has no labels (:class:`convention_rt.errors.CatalogError`
        when it cannot be read).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    class_map = TASKS[task]
    classes = tuple(dict.fromkeys(class_map.values()))
    ids: list = []
    labels: list[int] = []
    typing: list[str] = []
    bands_of: list[NDArray[np.int32]] = []
    mjds: list[NDArray[np.float64]] = []
    rows: list[NDArray[np.float64]] = []
    skipped: Counter = Counter()
    with Catalog(path, stamp_size=stamp_size) as catalog:
        if not catalog.has_labels:
            raise ValueError(f"{path}: OBJECTS has no LABEL column: nothing to train on")
        bands = catalog.bands
        for chunk, i, label in labelled_rows(catalog, class_map, skipped):
            a, b = chunk.offsets[i], chunk.offsets[i + 1]
            ids.append(chunk.object_ids[i])
            labels.append(classes.index(class_map[label]))
            typing.append(str(chunk.typing[i]) if chunk.typing is not None else "")
            bands_of.append(chunk.band[a:b])
            mjds.append(chunk.mjd[a:b])
            if frame_features is not None:
                rows.append(np.asarray(frame_features(chunk.frames[a:b], chunk.band[a:b]), dtype=np.float64))
    log_skipped(path, skipped)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([m.size for m in mjds], out=offsets[1:])
    objects = LabelledObjects(
        object_ids=np.asarray(ids), labels=np.asarray(labels, dtype=np.int64), typing=np.asarray(typing, dtype=str),
        frames=np.zeros((0, stamp_size, stamp_size), dtype=np.float32),
        band=np.concatenate(bands_of) if bands_of else np.zeros(0, np.int32),
        mjd=np.concatenate(mjds) if mjds else np.zeros(0), offsets=offsets, classes=classes, bands=bands)
    features = None if frame_features is None else (np.stack(rows) if rows else np.zeros((0, 0)))
    return objects, features
