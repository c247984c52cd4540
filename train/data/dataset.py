"""Labelled objects held in memory for training, read through the runtime's reader.

Training and serving share the catalog reader (:class:`convention_rt.catalog.Catalog`)
and the preprocessing (:func:`convention_rt.model_inputs.chunk_to_inputs`): this
module only keeps the frames of labelled objects in one ragged array and cuts
batches out of it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from convention_rt.catalog import Catalog, ObjectChunk
from convention_rt.model_card import BandStats

__all__ = ["LabelledObjects", "TASKS", "band_statistics", "load_labelled"]

log = logging.getLogger("train")

#: Class maps of the paper's tasks: catalog label -> task class (labels not listed are left out).
TASKS: dict[str, dict[str, str]] = {
    "4class": {"AGN": "AGN", "SNIa": "SNIa", "SNOther": "SNOther", "Variable": "Variable"},
    "3class": {"AGN": "AGN", "SNIa": "SN", "SNOther": "SN", "Variable": "Variable"},
}


@dataclass
class LabelledObjects:
    """Frames of labelled objects, ragged, in catalog order.

    Attributes
    ----------
    object_ids : ndarray, shape (n,)
    labels : ndarray, shape (n,), int64
        Index into ``classes``.
    typing : ndarray, shape (n,), str
        ``spec``, ``phot`` or "".
    frames : ndarray, shape (F, H, W), float32
    band : ndarray, shape (F,), int32
        Index into ``bands``.
    mjd : ndarray, shape (F,), float64
    offsets : ndarray, shape (n + 1,), int64
    classes, bands : tuple of str
    """

    object_ids: NDArray
    labels: NDArray[np.int64]
    typing: NDArray[np.str_]
    frames: NDArray[np.float32]
    band: NDArray[np.int32]
    mjd: NDArray[np.float64]
    offsets: NDArray[np.int64]
    classes: tuple[str, ...]
    bands: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def chunk(self, indices: Sequence[int] | NDArray[np.int64]) -> ObjectChunk:
        """The objects ``indices`` (any order, repeats allowed) as a reader chunk."""
        indices = np.asarray(indices, dtype=np.int64)
        starts, stops = self.offsets[indices], self.offsets[indices + 1]
        counts = stops - starts
        offsets = np.zeros(indices.size + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops)]) if indices.size \
            else np.zeros(0, dtype=np.int64)
        n = indices.size
        return ObjectChunk(
            object_ids=self.object_ids[indices], ra=np.zeros(n), dec=np.zeros(n),
            labels=np.asarray([self.classes[k] for k in self.labels[indices]]), typing=self.typing[indices],
            frames=self.frames[rows], band=self.band[rows], mjd=self.mjd[rows], n_bad=np.zeros(rows.size, np.int32),
            offsets=offsets, bands=self.bands, invalid=[""] * n, notes=[[] for _ in range(n)],
        )

    def class_counts(self, indices: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        """Objects per class, shape (n_classes,)."""
        labels = self.labels if indices is None else self.labels[indices]
        return np.bincount(labels, minlength=len(self.classes))


def load_labelled(path: str | Path, task: str = "4class", *, max_objects: int | None = None,
                  stamp_size: int = 32) -> LabelledObjects:
    """Read the labelled, usable objects of a catalog into memory.

    Objects whose label is not part of ``task`` and objects the reader flags
    are left out and counted in the log.

    Parameters
    ----------
    path : str or Path
        Catalog in the convention-rt format, with a ``LABEL`` column.
    task : {"4class", "3class"}
    max_objects : int, optional
        Keep only the first objects (quick runs and tests).
    stamp_size : int
        Stamp side the model needs.

    Returns
    -------
    LabelledObjects
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    class_map = TASKS[task]
    classes = tuple(dict.fromkeys(class_map.values()))
    with Catalog(path, stamp_size=stamp_size) as catalog:
        if not catalog.has_labels:
            raise ValueError(f"{path}: OBJECTS has no LABEL column: nothing to train on")
        limit = catalog.n_objects if max_objects is None else min(max_objects, catalog.n_objects)
        frames = np.empty((catalog.n_epochs * (len(catalog.bands) if catalog.layout == "CUBES" else 1),
                           stamp_size, stamp_size), dtype=np.float32)  # untouched pages cost nothing
        band_parts, mjd_parts, counts, ids, labels, typing = [], [], [], [], [], []
        skipped: Counter = Counter()
        used = 0
        seen = 0
        for chunk in catalog.iter_chunks(max_objects=512):
            for i in range(len(chunk)):
                if seen >= limit:
                    break
                seen += 1
                label = str(chunk.labels[i])
                if chunk.invalid[i]:
                    skipped[f"flagged:{chunk.invalid[i]}"] += 1
                    continue
                if label not in class_map:
                    skipped[f"label:{label or '(none)'}"] += 1
                    continue
                a, b = chunk.offsets[i], chunk.offsets[i + 1]
                frames[used:used + b - a] = chunk.frames[a:b]
                used += b - a
                band_parts.append(chunk.band[a:b])
                mjd_parts.append(chunk.mjd[a:b])
                counts.append(b - a)
                ids.append(chunk.object_ids[i])
                labels.append(classes.index(class_map[label]))
                typing.append(str(chunk.typing[i]) if chunk.typing is not None else "")
            if seen >= limit:
                break
        bands = catalog.bands
    if skipped:
        log.info("left out of %s: %s", path, ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())))
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return LabelledObjects(
        object_ids=np.asarray(ids), labels=np.asarray(labels, dtype=np.int64),
        typing=np.asarray(typing, dtype=str), frames=frames[:used],
        band=np.concatenate(band_parts) if band_parts else np.zeros(0, np.int32),
        mjd=np.concatenate(mjd_parts) if mjd_parts else np.zeros(0),
        offsets=offsets, classes=classes, bands=bands,
    )


def band_statistics(data: LabelledObjects, indices: NDArray[np.int64] | None = None,
                    block: int = 8192) -> dict[str, BandStats]:
    """Per-band mean and standard deviation of the finite pixels of the objects ``indices``.

    Accumulated in float64 over blocks of frames (no full-size temporary).

    Returns
    -------
    dict of str to BandStats
        Every band with at least one finite pixel.
    """
    if indices is None:
        rows = np.arange(data.frames.shape[0])
    else:
        rows = np.concatenate([np.arange(data.offsets[i], data.offsets[i + 1]) for i in indices])
    n_bands = len(data.bands)
    total = np.zeros(n_bands)
    total_sq = np.zeros(n_bands)
    count = np.zeros(n_bands)
    for start in range(0, rows.size, block):
        part = rows[start:start + block]
        pixels = data.frames[part].reshape(part.size, -1).astype(np.float64)
        finite = np.isfinite(pixels)
        pixels[~finite] = 0.0
        band = data.band[part]
        total += np.bincount(band, pixels.sum(axis=1), minlength=n_bands)
        total_sq += np.bincount(band, (pixels * pixels).sum(axis=1), minlength=n_bands)
        count += np.bincount(band, finite.sum(axis=1), minlength=n_bands)
    stats = {}
    for b, name in enumerate(data.bands):
        if count[b] > 1:
            mean = total[b] / count[b]
            variance = max(total_sq[b] / count[b] - mean * mean, 0.0)
            stats[name] = BandStats(float(mean), float(np.sqrt(variance)) or 1.0)
    return stats
