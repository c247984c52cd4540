"""Aperture photometry of each frame and the light-curve features of the catalog reference, in the graph.

The tree head's :class:`~train.model.trees.LightCurveFeatures` summarise asinh
aperture fluxes by their extremes and means, without errors.  The reference row on
the catalog's difference light curves (:mod:`train.reference.lightcurve_features`)
reads flux errors, significances, detections, skewness, rise and decline times and
colours at the peak, and classifies far better.  :class:`PhotometryFeatures`
measures a flux and its error on every stamp and computes that reference's features
from them, batched and without data-dependent shapes, so they export to ONNX.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from train.model.stamp_geometry import centred_radius
from train.reference.lightcurve_features import DETECTION_SIGNIFICANCE, PEAK_WINDOW

__all__ = ["PHOTOMETRY_ANNULUS", "PHOTOMETRY_RADIUS", "PhotometryFeatures", "photometry_weights"]

#: Radius (pixels) of the disc whose background-subtracted sum is a frame's flux.
PHOTOMETRY_RADIUS = 3.0
#: Inner and outer radius (pixels, both included) of the annulus whose mean is a frame's background and whose
#: scatter is its pixel noise.
PHOTOMETRY_ANNULUS: tuple[float, float] = (6.0, 10.0)
#: Per-band and overall features of one light curve (:func:`train.reference.lightcurve_features.lightcurve_features`).
_PER_BAND, _OVERALL = 13, 10
#: Share of points above and below this significance (the reference's overall features).
_SIGNIFICANT = 3.0


def photometry_weights(stamp_size: int) -> tuple[Tensor, Tensor]:
    """``(H*W,)`` float64 indicator planes of the flux disc and the background annulus around the stamp's centre."""
    radius = centred_radius(stamp_size).flatten()
    disc = (radius <= PHOTOMETRY_RADIUS).double()
    ring = ((radius >= PHOTOMETRY_ANNULUS[0]) & (radius <= PHOTOMETRY_ANNULUS[1])).double()
    return disc, ring


class PhotometryFeatures(nn.Module):
    """The catalog reference's light-curve features, of the flux measured on each stamp.

    Each real frame's flux is the sum over the disc of :data:`PHOTOMETRY_RADIUS` of
    its pixels minus the background (the mean of the annulus
    :data:`PHOTOMETRY_ANNULUS`), and its error ``s sqrt(n_disc + n_disc^2 / n_ring)``
    with ``s`` the annulus pixels' standard deviation (``n - 1`` in the denominator):
    the noise of the disc's sum and of the subtracted background.  The features of
    :func:`train.reference.lightcurve_features.lightcurve_features` (13 per band, 10
    overall, the colours of neighbouring bands at the peak; NaN where that function
    has NaN) are computed twice: of these fluxes, which on difference stamps are the
    object's change against the template, and of these fluxes minus the median of
    the object's fluxes in the frame's band, which on science stamps take the host
    and any steady source away.  The stamps are the normalised ones the model
    reads: a band's fluxes and errors are in units of its normalisation's standard
    deviation, which leaves every significance unchanged.  Computed in float64 and
    rounded to float32, as :class:`~train.model.trees.LightCurveFeatures`; with
    ``rounding_guard``, the weighted scatter of a band of one frame is exactly 0, not
    the rounding of its deviation from its own mean, which the runtimes round apart.

    Parameters
    ----------
    stamp_size : int
        Stamp side H = W, at least ``2 * PHOTOMETRY_ANNULUS[1] + 1``.
    n_band_ids : int
        Band vocabulary size including padding id 0.
    rounding_guard : bool
        False: that scatter as computed, as the tree heads fitted before the guard read it.
    """

    def __init__(self, stamp_size: int, n_band_ids: int, rounding_guard: bool = True) -> None:
        super().__init__()
        self.rounding_guard = rounding_guard
        if stamp_size < 2 * PHOTOMETRY_ANNULUS[1] + 1:
            raise ValueError(f"photometry features need stamps of at least {2 * PHOTOMETRY_ANNULUS[1] + 1:g} pixels, "
                             f"got {stamp_size}")
        if n_band_ids < 2:
            raise ValueError(f"n_band_ids must be at least 2 (padding and one band), got {n_band_ids}")
        disc, ring = photometry_weights(stamp_size)
        n_disc, n_ring = float(disc.sum()), float(ring.sum())
        self.register_buffer("bands", torch.arange(1, n_band_ids), persistent=False)
        self.register_buffer("disc", disc, persistent=False)
        self.register_buffer("ring", ring / n_ring, persistent=False)
        self.register_buffer("ring_mask", ring, persistent=False)
        # float64 tensors: a Python float would be exported rounded to float32
        self.register_buffer("disc_pixels", torch.tensor(n_disc, dtype=torch.float64), persistent=False)
        error_scale = math.sqrt(n_disc + n_disc**2 / n_ring) / math.sqrt(n_ring - 1.0)
        self.register_buffer("error_scale", torch.tensor(error_scale, dtype=torch.float64), persistent=False)
        self.register_buffer("magnitude", torch.tensor(-2.5 / math.log(10.0), dtype=torch.float64), persistent=False)

    @property
    def width(self) -> int:
        """Number of features K."""
        bands = self.bands.numel()
        return 2 * (bands * _PER_BAND + _OVERALL + bands - 1)

    def photometry(self, stamps: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, M, H, W)`` stamps -> ``(B, M)`` float64 background-subtracted disc fluxes and their errors."""
        pixels = stamps.double().flatten(2)  # (B, M, H*W)
        background = torch.matmul(pixels, self.ring)  # (B, M)
        flux = torch.matmul(pixels, self.disc) - background * self.disc_pixels
        scatter = torch.matmul((pixels - background.unsqueeze(-1)) ** 2, self.ring_mask)
        return flux, torch.sqrt(scatter) * self.error_scale

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, M, H, W)`` or ``(B, M, C, H, W)`` float32 stamps (channel 0 is read), ``(B, M)`` int64 band
        ids and float32 MJD -> ``(B, K)`` float32 features."""
        if stamps.ndim == 5:
            stamps = stamps[:, :, 0]
        flux, error = self.photometry(stamps)
        real = band_ids != 0
        one_hot = (band_ids.unsqueeze(-1) == self.bands) & real.unsqueeze(-1)  # (B, M, bands)
        # padding frames: a unit error, so nothing divides by zero; every reduction masks them
        error = torch.where(real, error, torch.ones_like(error))
        flux = torch.where(real, flux, torch.zeros_like(flux))
        days = times.double()
        baseline = (_band_median(flux, one_hot).unsqueeze(1) * one_hot).sum(dim=-1)  # (B, M): its band's median
        return torch.cat([self.features(flux, error, one_hot, real, days),
                          self.features(flux - baseline, error, one_hot, real, days)], dim=1).float()

    def features(self, flux: Tensor, error: Tensor, one_hot: Tensor, real: Tensor, days: Tensor) -> Tensor:
        """The reference's features of ``(B, M)`` float64 fluxes, errors (positive) and days, ``(B, M, bands)``
        bool band of each real frame and ``(B, M)`` bool real frames -> ``(B, K / 2)`` float64."""
        band_mask = one_hot.double()
        nan = torch.full_like(flux[:, :1], math.nan)  # (B, 1)
        significance = flux / error
        detected = (significance.abs() >= DETECTION_SIGNIFICANCE) & real
        peak = significance.masked_fill(~real, -math.inf).argmax(dim=1, keepdim=True)  # (B, 1)
        peak_time = days.gather(1, peak)
        peak_flux = flux.gather(1, peak)
        near_peak = ((days - peak_time).abs() <= PEAK_WINDOW) & real

        # per band (B, bands)
        counts = band_mask.sum(dim=1)
        has = counts > 0
        safe_counts = counts.clamp(min=1.0)
        weights = band_mask / (error * error).unsqueeze(-1)  # (B, M, bands), zero off the band
        weight_sum = weights.sum(dim=1).clamp(min=1e-300)
        per_frame = flux.unsqueeze(-1)
        weighted_mean = (weights * per_frame).sum(dim=1) / weight_sum
        deviation = per_frame - weighted_mean.unsqueeze(1)
        weighted_std = torch.sqrt((weights * deviation * deviation).sum(dim=1) / weight_sum)
        if self.rounding_guard:  # exactly 0 for one frame: its deviation from its own mean is rounding
            weighted_std = torch.where(counts > 1, weighted_std, torch.zeros_like(weighted_std))
        chi2 = ((deviation / error.unsqueeze(-1)) ** 2 * band_mask).sum(dim=1) / (counts - 1.0).clamp(min=1.0)
        chi2 = torch.where(counts > 1, chi2, nan)
        central = (per_frame - ((per_frame * band_mask).sum(dim=1) / safe_counts).unsqueeze(1)) * band_mask
        second = (central**2).sum(dim=1) / safe_counts
        skewed = (counts > 2) & (second > 0)
        skewness = torch.where(skewed, (central**3).sum(dim=1) / safe_counts
                               / torch.where(skewed, second, torch.ones_like(second)) ** 1.5, nan)
        highest = per_frame.masked_fill(~one_hot, -math.inf).amax(dim=1)
        lowest = per_frame.masked_fill(~one_hot, math.inf).amin(dim=1)
        most_significant = significance.unsqueeze(-1).masked_fill(~one_hot, -math.inf).amax(dim=1)
        median_error = _band_median(error, one_hot)
        at_peak = band_mask * near_peak.double().unsqueeze(-1) / (error * error).unsqueeze(-1)
        at_peak_sum = at_peak.sum(dim=1)
        band_peak_flux = torch.where(at_peak_sum > 0, (at_peak * per_frame).sum(dim=1)
                                     / at_peak_sum.clamp(min=1e-300), nan)
        detected_share = (detected.double().unsqueeze(-1) * band_mask).sum(dim=1) / safe_counts
        measured = torch.stack([detected_share, highest, lowest, weighted_mean, weighted_std, chi2, skewness,
                                most_significant, median_error, (highest - lowest) / median_error,
                                band_peak_flux], dim=-1)
        measured = torch.where(has.unsqueeze(-1), measured, nan.unsqueeze(-1))
        band_peak_flux = measured[..., -1]
        # the peak's own band always has a flux near the peak
        brightest = band_peak_flux.masked_fill(band_peak_flux.isnan(), -math.inf).amax(dim=1, keepdim=True)
        ratio = torch.where(brightest > 0, band_peak_flux / torch.where(brightest > 0, brightest,
                                                                         torch.ones_like(brightest)), nan)
        per_band = torch.cat([counts.unsqueeze(-1), measured, ratio.unsqueeze(-1)], dim=-1)  # (B, bands, 13)

        # overall (B, 1) each
        points = real.double().sum(dim=1, keepdim=True)
        detections = detected.double().sum(dim=1, keepdim=True)
        first_detected = days.masked_fill(~detected, math.inf).amin(dim=1, keepdim=True)
        last_detected = days.masked_fill(~detected, -math.inf).amax(dim=1, keepdim=True)
        span = torch.where(detections > 0, last_detected - first_detected, nan)
        positive = ((significance > _SIGNIFICANT) & real).double().sum(dim=1, keepdim=True) / points
        negative = ((significance < -_SIGNIFICANT) & real).double().sum(dim=1, keepdim=True) / points
        peak_band = one_hot.gather(1, peak.unsqueeze(-1).expand(-1, -1, one_hot.shape[-1]))  # (B, 1, bands)
        in_band = (one_hot & peak_band).any(dim=-1) & (peak_flux > 0)  # (B, M)
        faint = in_band & (flux < 0.5 * peak_flux)
        bright = in_band & (flux >= 0.5 * peak_flux)
        before = faint & (days < peak_time)
        after = faint & (days > peak_time)
        rise = peak_time - _masked_extreme(days, before, largest=True, nan=nan)
        decline = _masked_extreme(days, after, largest=False, nan=nan) - peak_time
        above_half = (_masked_extreme(days, bright, largest=True, nan=nan)
                      - _masked_extreme(days, bright, largest=False, nan=nan))
        overall = torch.cat([points, detections, detections / points, span, positive, negative,
                             significance.gather(1, peak), rise, decline, above_half], dim=1)

        first, second_band = band_peak_flux[:, :-1], band_peak_flux[:, 1:]
        both = (first > 0) & (second_band > 0)  # False for NaN
        colour_ratio = (torch.where(both, first, torch.ones_like(first))
                        / torch.where(both, second_band, torch.ones_like(second_band)))
        colours = torch.where(both, torch.log(colour_ratio) * self.magnitude, nan)
        return torch.cat([per_band.flatten(1), overall, colours], dim=1)


def _masked_extreme(values: Tensor, mask: Tensor, *, largest: bool, nan: Tensor) -> Tensor:
    """``(B, M)`` values, ``(B, M)`` bool mask -> ``(B, 1)`` largest (or smallest) masked value, ``nan`` where
    none is masked."""
    if largest:
        extreme = values.masked_fill(~mask, -math.inf).amax(dim=1, keepdim=True)
    else:
        extreme = values.masked_fill(~mask, math.inf).amin(dim=1, keepdim=True)
    return torch.where(mask.any(dim=1, keepdim=True), extreme, nan)


def _band_median(values: Tensor, one_hot: Tensor) -> Tensor:
    """``(B, M)`` values, ``(B, M, bands)`` bool -> ``(B, bands)`` median of each band's values (the mean of the
    two middle ones for an even count, as :func:`numpy.median`), 0 for a band without values."""
    per_band = values.unsqueeze(-1).masked_fill(~one_hot, math.inf).transpose(1, 2)  # (B, bands, M)
    ordered = per_band.sort(dim=-1).values
    counts = one_hot.sum(dim=1, keepdim=True).transpose(1, 2)  # (B, bands, 1) int64
    low = ((counts - 1).clamp(min=0)) // 2
    high = counts // 2
    middle = 0.5 * (ordered.gather(-1, low) + ordered.gather(-1, high.clamp(max=ordered.shape[-1] - 1)))
    return torch.where(counts > 0, middle, torch.zeros_like(middle)).squeeze(-1)
