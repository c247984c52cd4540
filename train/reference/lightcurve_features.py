"""Summary features of a difference-flux light curve (flux and its error per epoch and band).

The usual hand-made features of photometric classifiers: per band the extremes,
error-weighted mean and scatter, the significance of the variability and the
skewness, the share of detections; over all bands the peak (the most significant
point), the rise and decline times around it in its band, how long the object stays
detected, and the colours at the peak.  Fluxes are PLAsTiCC's (FLUXCAL, difference
image: negative when the source is fainter than in the template).
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

__all__ = ["DETECTION_SIGNIFICANCE", "PEAK_WINDOW", "lightcurve_feature_names", "lightcurve_features"]

#: An epoch is a detection when ``|flux| / flux_err`` reaches this.
DETECTION_SIGNIFICANCE = 5.0
#: The colours at the peak average the points within this many days of it.
PEAK_WINDOW = 7.0

_PER_BAND = ("points", "detected_fraction", "max_flux", "min_flux", "weighted_mean", "weighted_std",
             "reduced_chi2", "skewness", "max_significance", "median_error", "amplitude_significance",
             "peak_flux", "peak_flux_ratio")
_GLOBAL = ("points", "detections", "detected_fraction", "detected_span", "positive_fraction", "negative_fraction",
           "max_significance", "rise_time", "decline_time", "time_above_half")


def lightcurve_feature_names(bands: tuple[str, ...]) -> list[str]:
    """Names of the columns :func:`lightcurve_features` returns for ``bands``, in order."""
    return ([f"{band}_{name}" for band in bands for name in _PER_BAND] + list(_GLOBAL)
            + [f"{a}-{b}_peak_colour" for a, b in pairwise(bands)])


def lightcurve_features(mjd: NDArray[np.float64], band: NDArray[np.int64], flux: NDArray[np.float64],
                        flux_err: NDArray[np.float64], n_bands: int) -> NDArray[np.float64]:
    """Features of one light curve.

    Per band (NaN where undefined, e.g. a band without points): the number of
    points; the share of detections (:data:`DETECTION_SIGNIFICANCE`); the largest
    and smallest flux; the inverse-variance weighted mean and standard deviation;
    the reduced chi-square about that mean (how significant the variability is);
    the skewness of the fluxes; the largest ``flux / flux_err``; the median error;
    ``(max - min) / median error``; the weighted mean flux within
    :data:`PEAK_WINDOW` days of the peak, and that over its largest value among the
    bands.  Over all bands: points, detections and their share; the days from the
    first to the last detection; the shares of points above +3 and below -3 sigma;
    the largest significance; around the peak (the point of largest
    ``flux / flux_err``), in its band, the days since the last point before it and
    until the first point after it below half its flux (NaN when there is none),
    and the days between the first and last points at or above half of it (all
    three NaN when the peak's flux is not positive); the
    colours ``-2.5 log10(F_b / F_b+1)`` of neighbouring bands' fluxes at the peak
    (NaN unless both are positive).

    Parameters
    ----------
    mjd, flux, flux_err : ndarray, shape (T,), float64
        Time-ordered or not; ``flux_err`` positive.
    band : ndarray, shape (T,), int
        Band index in ``0 .. n_bands - 1``.
    n_bands : int

    Returns
    -------
    ndarray, shape (len(lightcurve_feature_names(bands)),), float64
    """
    mjd, flux, flux_err = (np.asarray(v, dtype=np.float64) for v in (mjd, flux, flux_err))
    band = np.asarray(band, dtype=np.int64)
    if not (mjd.shape == band.shape == flux.shape == flux_err.shape and mjd.ndim == 1 and mjd.size):
        raise ValueError(f"mjd, band, flux and flux_err must be non-empty and of one length, got {mjd.shape}, "
                         f"{band.shape}, {flux.shape}, {flux_err.shape}")
    if not np.all(flux_err > 0) or band.min() < 0 or band.max() >= n_bands:
        raise ValueError(f"flux_err must be positive and band indices in 0..{n_bands - 1}")
    significance = flux / flux_err
    detected = np.abs(significance) >= DETECTION_SIGNIFICANCE
    peak = int(np.argmax(significance))
    peak_time, peak_band, peak_flux = mjd[peak], band[peak], flux[peak]
    near_peak = np.abs(mjd - peak_time) <= PEAK_WINDOW

    per_band = np.full((n_bands, len(_PER_BAND)), np.nan)
    for b in range(n_bands):
        chosen = band == b
        per_band[b, 0] = chosen.sum()
        if not chosen.any():
            continue
        f, e, s = flux[chosen], flux_err[chosen], significance[chosen]
        weights = 1.0 / e**2
        mean = float(weights @ f / weights.sum())
        deviation = f - mean
        central = f - f.mean()
        second = float(np.mean(central**2))
        median_error = float(np.median(e))
        at_peak = chosen & near_peak
        per_band[b, 1:12] = [
            detected[chosen].mean(), f.max(), f.min(), mean, np.sqrt(weights @ deviation**2 / weights.sum()),
            np.sum((deviation / e) ** 2) / (f.size - 1) if f.size > 1 else np.nan,
            np.mean(central**3) / second**1.5 if f.size > 2 and second > 0 else np.nan,
            s.max(), median_error, (f.max() - f.min()) / median_error,
            (flux[at_peak] / flux_err[at_peak] ** 2).sum() / (1.0 / flux_err[at_peak] ** 2).sum()
            if at_peak.any() else np.nan,
        ]
    peak_fluxes = per_band[:, 11]
    brightest = np.nanmax(peak_fluxes)  # the peak's own band is always near the peak
    per_band[:, 12] = peak_fluxes / brightest if brightest > 0 else np.nan

    in_band = band == peak_band
    if peak_flux <= 0:  # nothing brighter than the template: no peak to time
        in_band = np.zeros_like(in_band)
    faint = in_band & (flux < 0.5 * peak_flux)
    before, after = faint & (mjd < peak_time), faint & (mjd > peak_time)
    bright = in_band & (flux >= 0.5 * peak_flux)
    times = mjd[detected]
    overall = [
        mjd.size, detected.sum(), detected.mean(), times.max() - times.min() if times.size else np.nan,
        np.mean(significance > 3.0), np.mean(significance < -3.0), significance[peak],
        peak_time - mjd[before].max() if before.any() else np.nan,
        mjd[after].min() - peak_time if after.any() else np.nan,
        mjd[bright].max() - mjd[bright].min() if bright.any() else np.nan,
    ]
    colours = [-2.5 * np.log10(peak_fluxes[b] / peak_fluxes[b + 1])
               if peak_fluxes[b] > 0 and peak_fluxes[b + 1] > 0 else np.nan for b in range(n_bands - 1)]
    return np.concatenate([per_band.ravel(), np.asarray(overall, dtype=np.float64),
                           np.asarray(colours, dtype=np.float64)])
