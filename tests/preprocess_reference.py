"""NumPy reference implementations of the compiled preprocessing kernels.

Written for clarity, vectorised where NumPy allows; the property tests compare
the Cython path against them, and ``bench/preprocess.py`` times both.
"""

from __future__ import annotations

import numpy as np

#: The documented bound on pixel magnitudes (docs/preprocessing.md), written here, not read from the
#: module under test: a pixel is bad when it is NaN or its magnitude exceeds this bound (inf included).
MAX_PIXEL_MAGNITUDE = 1e15

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64_uniforms(seed: int, count: int) -> np.ndarray:
    """The first ``count`` uniforms in [0, 1) of splitmix64 seeded with ``seed``."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed) + GOLDEN * np.arange(1, count + 1, dtype=np.uint64)
        z = (state ^ (state >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


# For float32 pixels, |x| <= MAX_PIXEL_MAGNITUDE exactly when |x| <= the largest float32 not above it.
_BOUND = np.float32(MAX_PIXEL_MAGNITUDE)
if float(_BOUND) > MAX_PIXEL_MAGNITUDE:  # rounded up to a float32: take the one below
    _BOUND = np.nextafter(_BOUND, np.float32(0))


def is_bad(pixels: np.ndarray) -> np.ndarray:
    """Bad pixels of a float32 array: NaN, or |x| > MAX_PIXEL_MAGNITUDE (so +-inf too), same shape."""
    pixels = np.asarray(pixels, dtype=np.float32)
    return ~((pixels >= -_BOUND) & (pixels <= _BOUND))  # both false for NaN


def count_bad_pixels(frames: np.ndarray) -> np.ndarray:
    return is_bad(frames).sum(axis=(1, 2)).astype(np.int32)


def separate_bands(cubes, mjd, offsets, present=None):
    cubes = np.asarray(cubes, dtype=np.float32)
    n_epochs, n_planes, height, width = cubes.shape
    present = np.ones((n_epochs, n_planes), bool) if present is None else np.asarray(present, bool)
    good = (~is_bad(cubes)).any(axis=(2, 3))
    keep = present & good
    frames, planes, times, new_offsets = [], [], [], [0]
    for i in range(len(offsets) - 1):
        epochs = np.arange(offsets[i], offsets[i + 1])
        epochs = epochs[np.argsort(mjd[epochs], kind="stable")]
        t, b = np.nonzero(keep[epochs])
        frames.append(cubes[epochs[t], b])
        planes.append(b)
        times.append(np.asarray(mjd)[epochs[t]])
        new_offsets.append(new_offsets[-1] + t.size)
    if not frames:
        return (np.zeros((0, height, width), np.float32), np.zeros(0, np.int32),
                np.zeros(0), np.array(new_offsets, np.int64))
    return (np.concatenate(frames).reshape(-1, height, width).astype(np.float32),
            np.concatenate(planes).astype(np.int32), np.concatenate(times).astype(np.float64),
            np.array(new_offsets, np.int64))


def normalise_bands(frames, band_ids, mean, std):
    """(x - mean) * (1 / std) in float32 arithmetic, after filling bad pixels."""
    frames = np.asarray(frames, dtype=np.float32)
    n = frames.shape[0]
    flat = frames.reshape(n, frames.shape[1] * frames.shape[2]).copy()
    bad = is_bad(flat)
    n_bad = bad.sum(axis=1).astype(np.int32)
    mean = np.asarray(mean, np.float64)[band_ids].astype(np.float32)
    inv_std = (1.0 / np.asarray(std, np.float64)[band_ids]).astype(np.float32)
    for f in np.flatnonzero(n_bad):
        good = flat[f][~bad[f]].astype(np.float64)
        flat[f][bad[f]] = np.median(good) if good.size else mean[f]
    out = (flat - mean[:, None]) * inv_std[:, None]
    return out.reshape(frames.shape), n_bad


def select_frames(offsets, seq_len, mode="latest", seeds=None, drop_prob=0.0):
    n = len(offsets) - 1
    selection = np.full((n, seq_len), -1, dtype=np.int64)
    for i in range(n):
        first, count = int(offsets[i]), int(offsets[i + 1] - offsets[i])
        if mode == "latest":
            kept = np.arange(first + max(0, count - seq_len), first + count)
        else:
            draws = splitmix64_uniforms(int(seeds[i]), count + 1)
            kept = np.arange(first, first + count)
            used = 0
            if drop_prob > 0.0:
                u = draws[:count]
                used = count
                kept = kept[u >= drop_prob]
                if kept.size == 0 and count > 0:
                    kept = np.array([first + int(np.argmax(u))])
            if kept.size > seq_len:
                start = int(draws[used] * (kept.size - seq_len + 1))
                kept = kept[start:start + seq_len]
        selection[i, : kept.size] = kept
    return selection


def window_sequence(frames, band_ids, mjd, offsets, seq_len, mode="latest", seeds=None, drop_prob=0.0):
    frames = np.asarray(frames, np.float32)
    selection = select_frames(offsets, seq_len, mode, seeds, drop_prob)
    real = selection >= 0
    safe = np.where(real, selection, 0)
    if frames.shape[0] == 0:
        stamps = np.zeros(selection.shape + frames.shape[1:], np.float32)
        return stamps, np.zeros(selection.shape, np.int64), np.zeros(selection.shape), real
    stamps = np.where(real[:, :, None, None], frames[safe], 0).astype(np.float32)
    bands = np.where(real, np.asarray(band_ids)[safe], 0).astype(np.int64)
    times = np.where(real, np.asarray(mjd)[safe], 0.0)
    return stamps, bands, times, real


def prepare_sequences(frames, band_ids, mjd, offsets, mean, std, seq_len, mode="latest",
                      seeds=None, drop_prob=0.0):
    normalised, n_bad = normalise_bands(frames, band_ids, mean, std)
    stamps, bands, times, real = window_sequence(normalised, band_ids, mjd, offsets, seq_len,
                                                 mode, seeds, drop_prob)
    selection = select_frames(offsets, seq_len, mode, seeds, drop_prob)
    slot_bad = np.where(real, n_bad[np.where(real, selection, 0)] if n_bad.size else 0, 0)
    return stamps, bands, times, real, slot_bad.astype(np.int32)
