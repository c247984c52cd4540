"""Features of an object's static scene: its stamps with time thrown away.

Each band's frames are coadded by their pixel-wise median (a transient that is bright
on a minority of the frames drops out; the host galaxy, the neighbours and any
persistent flux at the object stay), and each coadd is summarised by aperture fluxes,
its flux-weighted centroid, size and shape around the stamp centre (where the catalog
puts the object: pixel ``(stamp_size // 2, stamp_size // 2)``), plus the colours of
neighbouring bands and the number of frames per band.  No feature depends on when a
frame was taken or on the order of the frames, nor on the direction of an offset from
the centre (a scene turned or mirrored about the object has the same features).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "ANNULUS",
    "APERTURES",
    "MOMENT_RADIUS",
    "coadd",
    "object_scene_features",
    "scene_feature_names",
    "scene_features",
]

#: Radii (pixels) of the apertures whose background-subtracted flux is a feature.
APERTURES: tuple[float, ...] = (1.5, 3.0, 6.0, 9.0)
#: Inner and outer radius (pixels) of the annulus whose median is the coadd's background.
ANNULUS: tuple[float, float] = (10.0, 15.0)
#: Radius (pixels) within which the centroid, moments and brightest pixel are measured.
MOMENT_RADIUS = 6.0

_PER_BAND = ("frames", "background", *(f"flux_r{r:g}" for r in APERTURES), "concentration",
             "centroid_offset", "size", "ellipticity", "peak_offset")


def scene_feature_names(bands: tuple[str, ...]) -> list[str]:
    """Names of the columns :func:`scene_features` returns for ``bands``, in order."""
    names = [f"{band}_{name}" for band in bands for name in _PER_BAND]
    for first, second in pairwise(bands):
        names += [f"{first}-{second}_colour_r{APERTURES[1]:g}", f"{first}-{second}_colour_r{APERTURES[-1]:g}"]
    return names


def coadd(frames: NDArray[np.float32], band: NDArray[np.int32], n_bands: int) -> tuple[NDArray[np.float64],
                                                                                       NDArray[np.int64]]:
    """Pixel-wise median of each band's frames.

    Parameters
    ----------
    frames : ndarray, shape (T, H, W), float
        One object's frames (NaN pixels are left out of the median).
    band : ndarray, shape (T,), int
        Band index of each frame, in ``0 .. n_bands - 1``.
    n_bands : int

    Returns
    -------
    coadds : ndarray, shape (n_bands, H, W), float64
        NaN for a band without frames.
    counts : ndarray, shape (n_bands,), int64
        Frames per band.
    """
    frames = np.asarray(frames)
    band = np.asarray(band)
    if frames.ndim != 3 or band.shape != frames.shape[:1]:
        raise ValueError(f"frames (T, H, W) and band (T,) must agree, got {frames.shape} and {band.shape}")
    if band.size and (band.min() < 0 or band.max() >= n_bands):
        raise ValueError(f"band indices must be in 0..{n_bands - 1}, got {band.min()}..{band.max()}")
    out = np.full((n_bands, *frames.shape[1:]), np.nan)
    counts = np.bincount(band, minlength=n_bands).astype(np.int64)
    for b in np.flatnonzero(counts):
        chosen = frames[band == b].astype(np.float64)
        if np.isnan(chosen).any():
            finite = ~np.isnan(chosen)
            if finite.any(axis=0).all():  # nanmedian warns on pixels NaN in every frame
                out[b] = np.nanmedian(chosen, axis=0)
            else:
                out[b, finite.any(axis=0)] = np.nanmedian(chosen[:, finite.any(axis=0)], axis=0)
        else:
            out[b] = np.median(chosen, axis=0)
    return out, counts


def scene_features(coadds: NDArray[np.float64], counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """Summary features of one object's per-band coadds.

    Per band (NaN for a band without frames, or where a ratio has no positive
    denominator): the number of frames; the background (median of the annulus
    :data:`ANNULUS`); the background-subtracted flux within each radius of
    :data:`APERTURES`; the concentration (flux within 3 over within 9 pixels);
    within :data:`MOMENT_RADIUS` of the centre, of the background-subtracted
    pixels clipped at 0: the distance of their flux-weighted centroid from the
    centre, their size ``sqrt((Ixx + Iyy) / 2)`` and ellipticity
    ``sqrt((Ixx - Iyy)^2 + 4 Ixy^2) / (Ixx + Iyy)`` from the second moments about
    the centroid, and the distance of the brightest pixel from the centre.  Then,
    for each pair of neighbouring bands, the colour ``-2.5 log10(F_b / F_b+1)`` of
    the fluxes within 3 and within 9 pixels.

    Parameters
    ----------
    coadds : ndarray, shape (B, H, W), float64
        From :func:`coadd` (H = W, at least ``2 * ANNULUS[1]`` pixels).
    counts : ndarray, shape (B,), int64

    Returns
    -------
    ndarray, shape (len(scene_feature_names(bands)),), float64
    """
    coadds = np.asarray(coadds, dtype=np.float64)
    n_bands, height, width = coadds.shape
    if height != width or height < 2 * ANNULUS[1]:
        raise ValueError(f"scene features need square stamps of at least {2 * ANNULUS[1]:g} pixels, "
                         f"got {height}x{width}")
    centre = height // 2
    y, x = np.mgrid[:height, :width] - centre
    radius = np.hypot(x, y)
    ring = (radius >= ANNULUS[0]) & (radius < ANNULUS[1])
    near = radius <= MOMENT_RADIUS
    per_band = np.full((n_bands, len(_PER_BAND)), np.nan)
    fluxes = np.full((n_bands, len(APERTURES)), np.nan)
    for b in range(n_bands):
        per_band[b, 0] = counts[b]
        image = coadds[b]
        if counts[b] == 0 or not np.isfinite(image[ring]).any():
            continue
        background = float(np.nanmedian(image[ring]))
        image = np.nan_to_num(image - background, nan=0.0)
        fluxes[b] = [image[radius <= r].sum() for r in APERTURES]
        weights = np.clip(image[near], 0.0, None)
        total = weights.sum()
        values = [background, *fluxes[b], _ratio(fluxes[b][1], fluxes[b][-1])]
        if total > 0:
            cx, cy = (weights @ x[near]) / total, (weights @ y[near]) / total
            ixx = weights @ (x[near] - cx) ** 2 / total
            iyy = weights @ (y[near] - cy) ** 2 / total
            ixy = weights @ ((x[near] - cx) * (y[near] - cy)) / total
            trace = ixx + iyy
            brightest = np.argmax(image[near])
            values += [np.hypot(cx, cy), np.sqrt(trace / 2.0),
                       np.hypot(ixx - iyy, 2.0 * ixy) / trace if trace > 0 else np.nan,
                       radius[near][brightest]]
        else:
            values += [np.nan] * 4
        per_band[b, 1:] = values
    colours = []
    for b in range(n_bands - 1):
        for k in (1, len(APERTURES) - 1):
            colours.append(_colour(fluxes[b, k], fluxes[b + 1, k]))
    return np.concatenate([per_band.ravel(), np.asarray(colours, dtype=np.float64)])


def object_scene_features(frames: NDArray[np.float32], band: NDArray[np.int32],
                          n_bands: int) -> NDArray[np.float64]:
    """:func:`scene_features` of :func:`coadd` of one object's frames."""
    return scene_features(*coadd(frames, band, n_bands))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if np.isfinite(numerator) and denominator > 0 else np.nan


def _colour(first: float, second: float) -> float:
    return -2.5 * np.log10(first / second) if first > 0 and second > 0 else np.nan
