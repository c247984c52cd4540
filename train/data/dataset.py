"""Labelled objects held in memory for training, read through the runtime's reader.

Training and serving share the catalog reader (:class:`convention_rt.catalog.Catalog`)
and the preprocessing (:func:`convention_rt.transform.to_inputs`): this
module only keeps the frames of labelled objects in one ragged array and cuts
batches out of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from convention_rt.catalog import Catalog, ObjectChunk
from convention_rt.model_card import BandStats
from train.files import write_atomically

try:
    import fcntl
except ImportError:  # Windows: runs starting side by side may each write the copy
    fcntl = None

__all__ = ["NOISE_SAMPLE_FRAMES", "NORMALISATIONS", "TASKS", "LabelledObjects", "band_statistics", "labelled_rows",
           "load_labelled", "log_skipped"]

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
            offsets=offsets, bands=self.bands,
        )

    def class_counts(self, indices: NDArray[np.int64] | None = None) -> NDArray[np.int64]:
        """Objects per class, shape (n_classes,)."""
        labels = self.labels if indices is None else self.labels[indices]
        return np.bincount(labels, minlength=len(self.classes))


def load_labelled(path: str | Path, task: str = "4class", *, max_objects: int | None = None,
                  stamp_size: int = 32, frames_cache: str | Path | None = None) -> LabelledObjects:
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
    frames_cache : str or Path, optional
        Folder of memory-mapped copies of what this function returns: the first
        call for a catalog (its path, size, modification time and inode), these
        arguments and :data:`FRAMES_CACHE_VERSION` writes one there (``.f32``
        raw little-endian frames, ``.npz`` the rest, under a ``.lock``); later
        calls, in any process, map it instead of reading the catalog, so that runs
        side by side share one copy of the frames in the page cache instead of
        holding one each. A damaged copy is written again. ``None``: the frames
        are held in this process's memory.

    Returns
    -------
    LabelledObjects
        ``frames`` is a read-only memory map with ``frames_cache``.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    if frames_cache is None or not Path(path).is_file():  # the reader names what is wrong with the path
        return _read_labelled(path, task, max_objects, stamp_size)
    cache = Path(frames_cache)
    if cache.exists() and not cache.is_dir():
        raise ValueError(f"{frames_cache}: the frames cache must be a folder, not a file")
    stem = cache / f"{Path(path).stem}-{_cache_key(path, task, max_objects, stamp_size)}"
    frames_file, rest_file = stem.with_suffix(".f32"), stem.with_suffix(".npz")
    cache.mkdir(parents=True, exist_ok=True)
    with open(stem.with_suffix(".lock"), "a") as lock:
        if fcntl is not None:  # runs starting side by side: the first writes the copy, the others wait for it
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _map_cached(frames_file, rest_file)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # absent, or left damaged: written again
            pass
        data: LabelledObjects | None = None

        def write_frames(target: Path) -> None:
            nonlocal data
            with open(target, "wb") as handle:  # plain writes: a full disk is an OSError, not a crash
                data = _read_labelled(path, task, max_objects, stamp_size, frames_out=handle)
                handle.flush()
                os.fsync(handle.fileno())

        rest_file.unlink(missing_ok=True)
        write_atomically(frames_file, write_frames)
        write_atomically(rest_file, lambda target: _save_rest(target, data, stamp_size))
        log.info("frames of %s cached in %s", path, frames_file)
        return _map_cached(frames_file, rest_file)


def _map_cached(frames_file: Path, rest_file: Path) -> LabelledObjects:
    """A cached copy, its frames memory-mapped read-only (refused if the two files do not match)."""
    with np.load(rest_file) as rest:
        count, size = int(rest["frames"]), int(rest["stamp_size"])
        if frames_file.stat().st_size != count * size * size * 4:
            raise ValueError(f"{frames_file}: not the size its index {rest_file} says")
        frames = np.memmap(frames_file, dtype="<f4", mode="r", shape=(count, size, size)) if count \
            else np.zeros((0, size, size), dtype=np.float32)
        return LabelledObjects(
            object_ids=rest["object_ids"], labels=rest["labels"], typing=rest["typing"], frames=frames,
            band=rest["band"], mjd=rest["mjd"], offsets=rest["offsets"], classes=tuple(rest["classes"].tolist()),
            bands=tuple(rest["bands"].tolist()))


#: Version of the frames a catalog reads into and of their cached copy: bump when the frames read from a
#: catalog change (the reader :class:`convention_rt.catalog.Catalog`, what :func:`load_labelled` keeps of
#: its objects) or the copy's layout does; copies written under another version are not used again.
FRAMES_CACHE_VERSION = 3


def _cache_key(path: str | Path, task: str, max_objects: int | None, stamp_size: int) -> str:
    """What a cached copy depends on: the catalog file as it is now, the arguments and :data:`FRAMES_CACHE_VERSION`."""
    status = Path(path).stat()
    identity = json.dumps([str(Path(path).resolve()), status.st_size, status.st_mtime_ns, status.st_ino, task,
                           max_objects, stamp_size, FRAMES_CACHE_VERSION])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _save_rest(target: Path, data: LabelledObjects, stamp_size: int) -> None:
    """Everything of ``data`` but its frames, and how many frames it has."""
    with open(target, "wb") as handle:  # np.savez would append ".npz" to a path without it
        np.savez(handle, frames=data.offsets[-1], stamp_size=stamp_size, object_ids=data.object_ids,
                 labels=data.labels, typing=data.typing, band=data.band, mjd=data.mjd, offsets=data.offsets,
                 classes=np.asarray(data.classes), bands=np.asarray(data.bands))
        handle.flush()
        os.fsync(handle.fileno())


def labelled_rows(catalog: Catalog, class_map: dict[str, str], skipped: Counter,
                  limit: int | None = None) -> Iterator[tuple[ObjectChunk, int, str]]:
    """The objects of a task, in catalog order: (chunk, row in the chunk, label) of each.

    Objects the reader flags and objects whose label is not in ``class_map`` are
    left out and counted in ``skipped`` (``flagged:<why>``, ``label:<label>``).

    Parameters
    ----------
    catalog : Catalog
        Opened, with labels.
    class_map : dict of str to str
        Catalog label -> task class (a value of :data:`TASKS`).
    skipped : collections.Counter
        Updated in place.
    limit : int, optional
        Look at the first ``limit`` objects of the catalog only.

    Yields
    ------
    tuple of (ObjectChunk, int, str)
    """
    seen = 0
    limit = catalog.n_objects if limit is None else limit
    for chunk in catalog.iter_chunks(max_objects=512):
        for i in range(len(chunk)):
            if seen >= limit:
                return
            seen += 1
            label = str(chunk.labels[i])
            if chunk.statuses[i].flagged:
                skipped[chunk.statuses[i].head] += 1
            elif label not in class_map:
                skipped[f"label:{label or '(none)'}"] += 1
            else:
                yield chunk, i, label


def log_skipped(path: str | Path, skipped: Counter) -> None:
    """One log line naming what :func:`labelled_rows` left out of ``path`` (nothing when nothing was)."""
    if skipped:
        log.info("left out of %s: %s", path, ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())))


def _read_labelled(path: str | Path, task: str, max_objects: int | None, stamp_size: int,
                   frames_out: BinaryIO | None = None) -> LabelledObjects:
    """:func:`load_labelled` from the catalog; with ``frames_out``, the frames go there instead of memory.

    ``frames_out`` receives them in order as little-endian float32, and the
    returned ``frames`` is then empty (shape (0, stamp_size, stamp_size)).
    """
    class_map = TASKS[task]
    classes = tuple(dict.fromkeys(class_map.values()))
    with Catalog(path, stamp_size=stamp_size) as catalog:
        if not catalog.has_labels:
            raise ValueError(f"{path}: OBJECTS has no LABEL column: nothing to train on")
        shape = (catalog.n_epochs * (len(catalog.bands) if catalog.layout == "CUBES" else 1) if frames_out is None
                 else 0, stamp_size, stamp_size)
        frames = np.empty(shape, dtype=np.float32)  # untouched pages cost nothing
        band_parts, mjd_parts, counts, ids, labels, typing = [], [], [], [], [], []
        skipped: Counter = Counter()
        used = 0
        for chunk, i, label in labelled_rows(catalog, class_map, skipped, max_objects):
            a, b = chunk.offsets[i], chunk.offsets[i + 1]
            if frames_out is None:
                frames[used:used + b - a] = chunk.frames[a:b]
            else:
                frames_out.write(np.ascontiguousarray(chunk.frames[a:b], dtype="<f4").tobytes())
            used += b - a
            band_parts.append(chunk.band[a:b])
            mjd_parts.append(chunk.mjd[a:b])
            counts.append(b - a)
            ids.append(chunk.object_ids[i])
            labels.append(classes.index(class_map[label]))
            typing.append(str(chunk.typing[i]) if chunk.typing is not None else "")
        bands = catalog.bands
    log_skipped(path, skipped)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return LabelledObjects(
        object_ids=np.asarray(ids), labels=np.asarray(labels, dtype=np.int64),
        typing=np.asarray(typing, dtype=str), frames=frames[:used] if frames_out is None else frames,
        band=np.concatenate(band_parts) if band_parts else np.zeros(0, np.int32),
        mjd=np.concatenate(mjd_parts) if mjd_parts else np.zeros(0),
        offsets=offsets, classes=classes, bands=bands,
    )


#: The kinds of band statistics (:func:`band_statistics`).
NORMALISATIONS: tuple[str, ...] = ("moments", "noise")
#: Frames per band that :func:`band_statistics` reads for ``"noise"`` statistics (evenly spaced).
NOISE_SAMPLE_FRAMES = 50_000


def band_statistics(data: LabelledObjects, indices: NDArray[np.int64] | None = None,
                    block: int = 8192, kind: str = "moments") -> dict[str, BandStats]:
    """Per-band centre and scale of the finite pixels of the objects ``indices``.

    Parameters
    ----------
    data : LabelledObjects
        The frames ``(F, H, W)`` float32 and their band indices ``(F,)``.
    indices : ndarray of int64, optional
        Objects to measure (default: all).
    block : int
        Frames read at a time (``"moments"``: accumulated in float64, no full-size
        temporary).
    kind : {"moments", "noise"}
        ``"moments"``: the pixels' mean and standard deviation.  ``"noise"``: the
        median over frames of each frame's median pixel, and the median over frames
        of each frame's pixel noise (1.4826 times the median absolute deviation
        from the frame's median), read from at most :data:`NOISE_SAMPLE_FRAMES`
        evenly spaced frames per band; a few very bright or noisy frames move
        neither.

    Returns
    -------
    dict of str to BandStats
        Every band with at least one finite pixel (``mean`` the centre, ``std`` the
        scale; a zero scale becomes 1).
    """
    if kind not in NORMALISATIONS:
        raise ValueError(f"kind must be one of {NORMALISATIONS}, got {kind!r}")
    if indices is None:
        rows = np.arange(data.frames.shape[0])
    else:
        rows = np.concatenate([np.arange(data.offsets[i], data.offsets[i + 1]) for i in indices])
    if kind == "noise":
        return _noise_statistics(data, rows, block)
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


def _noise_statistics(data: LabelledObjects, rows: NDArray[np.int64], block: int) -> dict[str, BandStats]:
    """``"noise"`` statistics of :func:`band_statistics` over the frames ``rows``."""
    stats = {}
    band_of_rows = data.band[rows]
    for b, name in enumerate(data.bands):
        mine = rows[band_of_rows == b]
        if mine.size > NOISE_SAMPLE_FRAMES:
            mine = mine[np.linspace(0, mine.size - 1, NOISE_SAMPLE_FRAMES).round().astype(np.int64)]
        levels, noises = [], []
        for start in range(0, mine.size, block):
            pixels = data.frames[mine[start:start + block]].reshape(-1, data.frames[0].size).astype(np.float64)
            pixels[~np.isfinite(pixels)] = np.nan
            with warnings.catch_warnings():  # a frame without a finite pixel has no level: NaN, dropped below
                warnings.simplefilter("ignore", RuntimeWarning)
                level = np.nanmedian(pixels, axis=1, keepdims=True)
                noises.append(1.4826 * np.nanmedian(np.abs(pixels - level), axis=1))
            levels.append(level[:, 0])
        level, noise = np.concatenate(levels or [np.empty(0)]), np.concatenate(noises or [np.empty(0)])
        measured = np.isfinite(level)
        if measured.any():
            stats[name] = BandStats(float(np.median(level[measured])), float(np.median(noise[measured])) or 1.0)
    return stats
