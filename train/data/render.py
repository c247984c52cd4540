"""Render single-band stamps of a scene: the object, its host galaxy and neighbour stars.

One call renders every epoch of one object at once.  The scene is built in
Fourier space on a grid of ``stamp_size + 2 * margin`` pixels (the margin
carries the PSF wings of sources just outside the stamp), then cropped:

* the object is a point source at the stamp centre (pixel ``stamp_size // 2``);
* neighbour stars are static point sources placed at random;
* an optional host galaxy is an elliptical Sersic profile (pixel-integrated on a
  5x oversampled grid), centred at an offset from the object;
* optional field galaxies (:func:`draw_field_galaxies`) are Sersic profiles too,
  placed at random like the neighbour stars;
* each epoch has its own Moffat PSF (analytic optical transfer function, so no
  PSF image is ever sampled) times the pixel response, and its own sub-pixel
  registration offset (``jitter``) applied to the whole scene as a phase ramp.

Noise is Gaussian with per-pixel variance ``s**2 + c * max(model, 0)``: sky
(``s``) plus photon noise of the sources (``c``, at most ``gain`` flux units per
photo-electron).  ``s`` and ``c`` are set per epoch so that the PSF-fit flux
error of the object (the estimator of :func:`psf_flux`) equals the requested
``flux_err`` exactly in expectation; the sky carries at least
``min_sky_fraction`` of that variance.  Stamps are sky-subtracted (as SDSS
corrected frames and Rubin calibrated exposures are) unless ``subtract_sky``
is off, in which case the sky level ``s**2 / gain`` stays in.  Given the object's
template flux, :func:`render` returns difference stamps instead: the science stamps
minus the noiseless template (static scene, sky, template flux times the PSF), which
leave the object's change in flux and the science stamps' noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from train.data.lightcurves import (
    REFERENCE_WAVELENGTH,
    blackbody_colour,
    distance_modulus,
    galaxy_colour,
    kpc_per_arcsec,
    mag_to_flux,
)

__all__ = [
    "HostGalaxy",
    "Neighbours",
    "RenderConfig",
    "Rendered",
    "ScenePrior",
    "draw_field_galaxies",
    "draw_host",
    "draw_neighbours",
    "draw_scene",
    "draw_seeing",
    "draw_shared_host",
    "galactic_latitude",
    "moffat_otf",
    "noise_flux_error",
    "psf_flux",
    "render",
]

_OVERSAMPLE = 5


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """How a survey's camera turns a scene into stamps.

    Attributes
    ----------
    pixel_scale : float
        Arcsec per pixel (0.2 LSST, 0.396 SDSS, 1.01 ZTF).
    stamp_size : int
        Side of the square stamps (pixels).
    margin : int
        Pixels rendered around the stamp on each side.
    moffat_beta : float
        Moffat PSF index (> 1; 4.765 is Kolmogorov-like, 2.5-3.5 typical).
    gain : float
        Flux units (FLUXCAL) per photo-electron: the photon-noise scale.
    min_sky_fraction : float
        Least share of each epoch's flux variance that comes from the sky.
    jitter : float
        RMS sub-pixel registration offset of each epoch (pixels, per axis).
    star_density : float
        Neighbour stars per square arcmin brighter than ``star_mag_range[1]`` at
        the Galactic poles; it grows as ``1 / sin|b|`` (at most 20x) towards the plane.
    star_mag_range : (float, float)
        Magnitude range of neighbour stars (AB at 6200 A).
    star_count_slope : float
        Slope of the star counts, d log10 N / dm.
    star_keepout : float
        No neighbour star closer than this to the object (arcsec).
    subtract_sky : bool
        Stamps are sky-subtracted (True) or keep the sky level (False).
    night_boundary : float
        UT fraction of the day at which a night starts (0.65: observatories in the Americas).
    """

    pixel_scale: float = 0.2
    stamp_size: int = 32
    margin: int = 16
    moffat_beta: float = 3.0
    gain: float = 0.015
    min_sky_fraction: float = 0.2
    jitter: float = 0.3
    star_density: float = 1.0
    star_mag_range: tuple[float, float] = (16.0, 24.5)
    star_count_slope: float = 0.25
    star_keepout: float = 1.5
    subtract_sky: bool = True
    night_boundary: float = 0.65

    def __post_init__(self) -> None:
        if self.pixel_scale <= 0 or self.gain <= 0:
            raise ValueError("pixel_scale and gain must be positive")
        if self.stamp_size < 4 or self.margin < 0:
            raise ValueError("stamp_size must be at least 4 and margin non-negative")
        if self.moffat_beta <= 1.0:
            raise ValueError(f"moffat_beta must exceed 1 (got {self.moffat_beta})")
        if not 0.0 < self.min_sky_fraction <= 1.0:
            raise ValueError("min_sky_fraction must lie in (0, 1]")

    @property
    def grid_size(self) -> int:
        """Side of the rendering grid (pixels)."""
        return self.stamp_size + 2 * self.margin

    def header(self) -> dict[str, object]:
        """Provenance keywords (at most 8 characters) describing this configuration."""
        return {"PIXSCALE": (self.pixel_scale, "arcsec per pixel"),
                "STAMPPX": (self.stamp_size, "stamp side (pixels)"),
                "GRIDPX": (self.grid_size, "rendering grid side (pixels)"),
                "PSF": ("Moffat", "PSF profile, FWHM drawn per night and band"),
                "PSFBETA": (self.moffat_beta, "Moffat beta"),
                "GAIN": (self.gain, "flux units per photo-electron"),
                "SKYFMIN": (self.min_sky_fraction, "least sky share of flux variance"),
                "JITTER": (self.jitter, "rms registration offset (pixels)"),
                "STARDENS": (self.star_density, "neighbour stars per arcmin2 at the poles"),
                "STARMAG": (f"{self.star_mag_range[0]:g}-{self.star_mag_range[1]:g}", "neighbour star mags"),
                "SKYSUB": (self.subtract_sky, "stamps are sky-subtracted"),
                "FLUXEST": ("PSF-fit", "flux estimator whose error matches flux_err")}


@dataclass(frozen=True)
class HostGalaxy:
    """A Sersic host galaxy, static on the sky.

    Attributes
    ----------
    flux : ndarray, shape (B,), float64
        Total flux in each band of the survey.
    r_eff : float
        Half-light radius along the major axis (arcsec).
    sersic_n : float
        Sersic index.
    axis_ratio : float
        Minor over major axis (0 < q <= 1).
    angle : float
        Position angle of the major axis (radians).
    offset : ndarray, shape (2,), float64
        Host centre minus object position, (x, y) in arcsec.
    """

    flux: NDArray[np.float64]
    r_eff: float
    sersic_n: float
    axis_ratio: float
    angle: float
    offset: NDArray[np.float64]


@dataclass(frozen=True)
class Neighbours:
    """Static neighbour stars.

    Attributes
    ----------
    position : ndarray, shape (S, 2), float64
        (x, y) offsets from the object (arcsec).
    flux : ndarray, shape (S, B), float64
        Flux of each star in each band.
    """

    position: NDArray[np.float64]
    flux: NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class ScenePrior:
    """A static scene drawn the same way for every class of object (class-blind).

    Hosts of extragalactic objects, AGN and supernovae alike, come from one
    luminosity prior (:func:`draw_shared_host`); a share of the transients sits on
    the nucleus at the AGN's offsets; every object, Galactic or not, has field
    galaxies around it (:func:`draw_field_galaxies`), so a star can lie on a galaxy.

    Attributes
    ----------
    host_abs_mag : (float, float)
        Mean and sd of the host's absolute magnitude (6200 A rest), every class.
    faint_host_fraction : float
        Share of hosts drawn from ``faint_host_abs_mag`` instead (dwarfs: below the
        coadds' depth beyond z ~ 0.3, so the object looks hostless).
    faint_host_abs_mag : (float, float)
    nuclear_fraction : float
        Share of transients on the nucleus; the others sit in an exponential disk.
    nuclear_offset : float
        RMS offset per axis (arcsec) of a nuclear object from its host's centre,
        AGN and nuclear transients alike.
    galaxy_density : float
        Field galaxies per square arcmin brighter than ``galaxy_reference_mag`` (AB at 6200 A).
    galaxy_reference_mag : float
    galaxy_mag_range : (float, float)
        Magnitude range of field galaxies.
    galaxy_count_slope : float
        Slope of the galaxy counts, d log10 N / dm.
    galaxy_redshift : (float, float, float)
        ``(z0, slope, scatter)``: a field galaxy of magnitude ``m`` has redshift
        ``z0 * 10 ** (slope * (m - 22))`` times a log-normal scatter (natural log sd).
    """

    host_abs_mag: tuple[float, float] = (-20.5, 1.0)
    faint_host_fraction: float = 0.2
    faint_host_abs_mag: tuple[float, float] = (-17.0, 1.0)
    nuclear_fraction: float = 0.3
    nuclear_offset: float = 0.1
    galaxy_density: float = 12.0
    galaxy_reference_mag: float = 24.0
    galaxy_mag_range: tuple[float, float] = (18.0, 26.5)
    galaxy_count_slope: float = 0.31
    galaxy_redshift: tuple[float, float, float] = (0.45, 0.12, 0.35)

    def __post_init__(self) -> None:
        if not (0.0 <= self.faint_host_fraction <= 1.0 and 0.0 <= self.nuclear_fraction <= 1.0):
            raise ValueError("faint_host_fraction and nuclear_fraction must lie in [0, 1]")
        if self.nuclear_offset < 0 or self.galaxy_density < 0 or self.galaxy_count_slope <= 0:
            raise ValueError("nuclear_offset and galaxy_density must be non-negative, galaxy_count_slope positive")
        if not self.galaxy_mag_range[0] < self.galaxy_mag_range[1]:
            raise ValueError(f"galaxy_mag_range must be increasing, got {self.galaxy_mag_range}")

    def header(self) -> dict[str, object]:
        """Provenance keywords (at most 8 characters) describing this scene."""
        return {"HOSTMAG": (f"{self.host_abs_mag[0]:g},{self.host_abs_mag[1]:g}",
                            "host abs mag N(mean,sd), all classes"),
                "FNTFRAC": (self.faint_host_fraction, "share of faint (dwarf) hosts"),
                "FNTMAG": (f"{self.faint_host_abs_mag[0]:g},{self.faint_host_abs_mag[1]:g}",
                           "faint host abs mag N(mean,sd)"),
                "NUCFRAC": (self.nuclear_fraction, "share of transients on the nucleus"),
                "NUCOFF": (self.nuclear_offset, "nuclear offset rms per axis (arcsec)"),
                "GALDENS": (self.galaxy_density, "field galaxies per arcmin2 brighter than GALREF"),
                "GALREF": (self.galaxy_reference_mag, "reference mag of GALDENS (AB, 6200 A)"),
                "GALMAG": (f"{self.galaxy_mag_range[0]:g}-{self.galaxy_mag_range[1]:g}", "field galaxy mags"),
                "GALSLOPE": (self.galaxy_count_slope, "field galaxy counts d log10 N / dm")}


@dataclass(frozen=True)
class Rendered:
    """Stamps of one object and what went into them (all arrays have T epochs first).

    Attributes
    ----------
    stamps : ndarray, shape (T, H, W), float32
        The science stamps, or the difference stamps (:func:`render`'s ``template_flux``).
    psf : ndarray, shape (T, H, W), float64
        Unit-flux image of the object (PSF at its jittered position, pixel-integrated).
    background : ndarray, shape (T, H, W), float64
        Noiseless host, field galaxies and neighbours (what the stamp holds besides the object).
    variance : ndarray, shape (T, H, W), float64
        Per-pixel noise variance.
    sky_level : ndarray, shape (T,), float64
        Sky per pixel implied by the sky noise (``s**2 / gain``).
    jitter : ndarray, shape (T, 2), float64
        Registration offset (x, y) of each epoch (pixels).
    """

    stamps: NDArray[np.float32]
    psf: NDArray[np.float64]
    background: NDArray[np.float64]
    variance: NDArray[np.float64]
    sky_level: NDArray[np.float64]
    jitter: NDArray[np.float64]


@lru_cache(maxsize=8)
def _moffat_otf_table(beta: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    nu = beta - 1.0
    x = np.linspace(0.0, 60.0, 60001)
    safe = np.maximum(x, 1e-12)
    table = 2.0 ** (1.0 - nu) / special.gamma(nu) * safe**nu * special.kv(nu, safe)
    table[0] = 1.0
    return x, table


def moffat_otf(x: ArrayLike, beta: float) -> NDArray[np.float64]:
    """Optical transfer function of a unit-flux Moffat profile.

    For ``I(r) = (beta - 1) / (pi alpha**2) * (1 + r**2 / alpha**2) ** -beta`` the
    2-D Fourier transform at spatial frequency ``k`` is
    ``2**(1 - nu) / Gamma(nu) * x**nu * K_nu(x)`` with ``nu = beta - 1`` and
    ``x = 2 pi alpha k``; tabulated once per ``beta`` and interpolated.

    Parameters
    ----------
    x : array_like, float64
        ``2 pi alpha k`` (non-negative), any shape.
    beta : float

    Returns
    -------
    ndarray, float64, shape of ``x``
    """
    grid, table = _moffat_otf_table(float(beta))
    step = grid[1] - grid[0]
    position = np.asarray(x, dtype=np.float64) / step
    index = np.minimum(position.astype(np.intp), grid.shape[0] - 2)   # uniform grid: no search needed
    frac = position - index
    value = table[index] * (1.0 - frac) + table[index + 1] * frac
    return np.where(position < grid.shape[0] - 1, value, 0.0)


def _moffat_alpha(fwhm: NDArray[np.float64], beta: float) -> NDArray[np.float64]:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def draw_seeing(mjd: ArrayLike, wavelength: ArrayLike, median: float, rng: np.random.Generator, *,
                night_boundary: float = 0.65, night_scatter: float = 0.2,
                visit_scatter: float = 0.05) -> NDArray[np.float64]:
    """Seeing FWHM of each epoch: one log-normal draw per night, Kolmogorov in wavelength.

    Parameters
    ----------
    mjd : array_like, shape (T,), float64
    wavelength : array_like, shape (T,), float64
        Effective wavelength (Angstrom) of each epoch's band.
    median : float
        Median FWHM (arcsec) at 6200 A.
    rng : numpy.random.Generator
    night_boundary : float
        UT fraction of the day at which a night starts.
    night_scatter, visit_scatter : float
        Log-normal scatter between nights and between visits of a night.

    Returns
    -------
    ndarray, shape (T,), float64
        FWHM in arcsec, ``night * (wavelength / 6200) ** -0.2``.
    """
    mjd = np.asarray(mjd, dtype=np.float64)
    nights, night_index = np.unique(np.floor(mjd - night_boundary), return_inverse=True)
    per_night = median * np.exp(rng.normal(0.0, night_scatter, nights.shape[0]))
    per_visit = np.exp(rng.normal(0.0, visit_scatter, mjd.shape[0]))
    return per_night[night_index] * per_visit * (np.asarray(wavelength) / REFERENCE_WAVELENGTH) ** -0.2


def draw_host(rng: np.random.Generator, *, z: float, wavelength: ArrayLike, centred: bool,
              abs_mag: tuple[float, float] = (-20.5, 1.0)) -> HostGalaxy:
    """Draw a host galaxy at redshift ``z``: brightness and size follow from distance.

    The absolute magnitude (at 6200 A rest) is normal with ``abs_mag`` = (mean, sd);
    the half-light radius is log-normal around 3 kpc (0.25 dex) scaled weakly with
    luminosity; band fluxes follow an Sbc-like template.  A transient sits at a
    random position drawn from an exponential disk of the same half-light radius
    (``centred=False``); an AGN sits at the centre (``centred=True``).

    Parameters
    ----------
    rng : numpy.random.Generator
    z : float
        Host redshift (clipped to 0.01 .. 4).
    wavelength : array_like, shape (B,)
        Effective wavelengths of the survey's bands (Angstrom).
    centred : bool
    abs_mag : (float, float)

    Returns
    -------
    HostGalaxy
    """
    z = float(np.clip(z, 0.01, 4.0))
    wavelength = np.asarray(wavelength, dtype=np.float64)
    magnitude = rng.normal(*abs_mag)
    rest = wavelength / (1.0 + z)
    colour = galaxy_colour(rest) - galaxy_colour(REFERENCE_WAVELENGTH)
    mags = magnitude + distance_modulus(z) - 2.5 * math.log10(1.0 + z) + colour
    r_kpc = 3.0 * 10.0 ** (rng.normal(0.0, 0.25) - 0.1 * (magnitude - abs_mag[0]))
    r_eff = float(r_kpc / kpc_per_arcsec(z))
    q = float(rng.uniform(0.3, 1.0))
    angle = float(rng.uniform(0.0, math.pi))
    offset = np.zeros(2)
    if not centred:
        radius = rng.gamma(2.0, r_eff / 1.678)  # exponential disk, scale length r_eff / 1.678
        theta = rng.uniform(0.0, 2.0 * math.pi)
        along, across = radius * math.cos(theta), q * radius * math.sin(theta)
        cos, sin = math.cos(angle), math.sin(angle)
        offset = -np.array([along * cos - across * sin, along * sin + across * cos])
    return HostGalaxy(flux=mag_to_flux(mags), r_eff=r_eff, sersic_n=float(rng.uniform(0.8, 4.0)),
                      axis_ratio=q, angle=angle, offset=offset)


#: Half-light radius (kpc) of a galaxy of this absolute magnitude in the class-blind scene; R ~ L ** 0.25.
_SIZE_KPC, _SIZE_MAG = 3.0, -20.5


def _galaxy_shape(rng: np.random.Generator, abs_mag: float, z: float) -> tuple[float, float, float, float]:
    """Half-light radius (arcsec), axis ratio, position angle and Sersic index of a galaxy at ``z``."""
    r_kpc = _SIZE_KPC * 10.0 ** (rng.normal(0.0, 0.25) - 0.1 * (abs_mag - _SIZE_MAG))
    return (float(r_kpc / kpc_per_arcsec(z)), float(rng.uniform(0.3, 1.0)), float(rng.uniform(0.0, math.pi)),
            float(rng.uniform(0.8, 4.0)))


def _galaxy_flux(abs_mag: float, z: float, wavelength: NDArray[np.float64]) -> NDArray[np.float64]:
    """Band fluxes of an Sbc-like galaxy of absolute magnitude ``abs_mag`` (6200 A rest) at ``z``."""
    colour = galaxy_colour(wavelength / (1.0 + z)) - galaxy_colour(REFERENCE_WAVELENGTH)
    return mag_to_flux(abs_mag + distance_modulus(z) - 2.5 * math.log10(1.0 + z) + colour)


def _disk_offset(rng: np.random.Generator, r_eff: float, axis_ratio: float, angle: float) -> NDArray[np.float64]:
    """Host centre minus object position (arcsec) for an object drawn from the host's exponential disk."""
    radius = rng.gamma(2.0, r_eff / 1.678)  # exponential disk, scale length r_eff / 1.678
    theta = rng.uniform(0.0, 2.0 * math.pi)
    along, across = radius * math.cos(theta), axis_ratio * radius * math.sin(theta)
    cos, sin = math.cos(angle), math.sin(angle)
    return -np.array([along * cos - across * sin, along * sin + across * cos])


def draw_shared_host(rng: np.random.Generator, prior: ScenePrior, *, z: float, wavelength: ArrayLike,
                     transient: bool) -> HostGalaxy:
    """Draw the host of an extragalactic object from the class-blind prior.

    The absolute magnitude (6200 A rest) is normal with ``prior.host_abs_mag``, or
    with ``prior.faint_host_abs_mag`` for a share ``prior.faint_host_fraction`` of
    hosts; the half-light radius is log-normal around 3 kpc at magnitude -20.5
    (0.25 dex, R ~ L ** 0.25) whatever the class; colours as in :func:`draw_host`.
    A persistent nuclear source (``transient=False``, an AGN) and a share
    ``prior.nuclear_fraction`` of transients sit on the nucleus, offset from the
    host centre by a Gaussian of ``prior.nuclear_offset`` arcsec per axis; the
    other transients sit in an exponential disk of the host's half-light radius.

    Parameters
    ----------
    rng : numpy.random.Generator
    prior : ScenePrior
    z : float
        Host redshift (clipped to 0.01 .. 4).
    wavelength : array_like, shape (B,)
        Effective wavelengths of the survey's bands (Angstrom).
    transient : bool

    Returns
    -------
    HostGalaxy
    """
    z = float(np.clip(z, 0.01, 4.0))
    wavelength = np.asarray(wavelength, dtype=np.float64)
    faint = rng.random() < prior.faint_host_fraction
    magnitude = float(rng.normal(*(prior.faint_host_abs_mag if faint else prior.host_abs_mag)))
    r_eff, axis_ratio, angle, sersic_n = _galaxy_shape(rng, magnitude, z)
    if transient and rng.random() >= prior.nuclear_fraction:
        offset = _disk_offset(rng, r_eff, axis_ratio, angle)
    else:
        offset = rng.normal(0.0, prior.nuclear_offset, 2)
    return HostGalaxy(flux=_galaxy_flux(magnitude, z, wavelength), r_eff=r_eff, sersic_n=sersic_n,
                      axis_ratio=axis_ratio, angle=angle, offset=offset)


def draw_field_galaxies(rng: np.random.Generator, prior: ScenePrior, config: RenderConfig,
                        wavelength: ArrayLike) -> tuple[HostGalaxy, ...]:
    """Draw the field galaxies of the rendering grid: foreground and background, unrelated to the object.

    Their number is Poisson with ``prior.galaxy_density`` per square arcmin at
    ``prior.galaxy_reference_mag``, counts ``N(<m) ~ 10 ** (galaxy_count_slope m)``
    within ``prior.galaxy_mag_range`` (AB at 6200 A), over the area where
    :func:`draw_neighbours` puts stars; positions are uniform, with no keep-out
    around the object (so an object can lie on one).  Each galaxy's redshift
    follows its magnitude (``prior.galaxy_redshift``); its size and colours follow
    from redshift and luminosity as for :func:`draw_shared_host`.

    Parameters
    ----------
    rng : numpy.random.Generator
    prior : ScenePrior
    config : RenderConfig
    wavelength : array_like, shape (B,)
        Effective wavelengths of the survey's bands (Angstrom).

    Returns
    -------
    tuple of HostGalaxy
        ``offset`` is each galaxy's centre relative to the object (arcsec).
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    half = (config.grid_size / 2.0 - 4.0) * config.pixel_scale
    area = (2.0 * half / 60.0) ** 2
    low, high = prior.galaxy_mag_range
    slope10 = prior.galaxy_count_slope
    per_arcmin2 = prior.galaxy_density * (10.0 ** (slope10 * (high - prior.galaxy_reference_mag))
                                          - 10.0 ** (slope10 * (low - prior.galaxy_reference_mag)))
    count = int(rng.poisson(per_arcmin2 * area))
    position = rng.uniform(-half, half, (count, 2))
    slope = slope10 * math.log(10.0)
    mags = low + np.log1p(rng.random(count) * np.expm1(slope * (high - low))) / slope  # inverse CDF of the counts
    z0, z_slope, z_scatter = prior.galaxy_redshift
    redshift = np.clip(z0 * 10.0 ** (z_slope * (mags - 22.0)) * np.exp(rng.normal(0.0, z_scatter, count)), 0.01, 4.0)
    galaxies = []
    for k in range(count):
        z = float(redshift[k])
        rest_colour = float(galaxy_colour(REFERENCE_WAVELENGTH / (1.0 + z)) - galaxy_colour(REFERENCE_WAVELENGTH))
        abs_mag = float(mags[k] - distance_modulus(z) + 2.5 * math.log10(1.0 + z) - rest_colour)
        r_eff, axis_ratio, angle, sersic_n = _galaxy_shape(rng, abs_mag, z)
        galaxies.append(HostGalaxy(flux=_galaxy_flux(abs_mag, z, wavelength), r_eff=r_eff, sersic_n=sersic_n,
                                   axis_ratio=axis_ratio, angle=angle, offset=position[k].copy()))
    return tuple(galaxies)


def draw_scene(rng: np.random.Generator, prior: ScenePrior, config: RenderConfig, wavelength: ArrayLike, *,
               z: float | None, transient: bool) -> tuple[HostGalaxy | None, tuple[HostGalaxy, ...]]:
    """The class-blind static scene of one object: its host (none when ``z`` is None) and the field galaxies.

    Parameters
    ----------
    rng : numpy.random.Generator
    prior : ScenePrior
    config : RenderConfig
    wavelength : array_like, shape (B,)
    z : float or None
        Host redshift of an extragalactic object; None for a Galactic one.
    transient : bool
        As for :func:`draw_shared_host`.

    Returns
    -------
    host : HostGalaxy or None
    galaxies : tuple of HostGalaxy
    """
    host = None if z is None else draw_shared_host(rng, prior, z=z, wavelength=wavelength, transient=transient)
    return host, draw_field_galaxies(rng, prior, config, wavelength)


def galactic_latitude(ra: ArrayLike, dec: ArrayLike) -> NDArray[np.float64]:
    """Galactic latitude (degrees) of ICRS positions ``ra``, ``dec`` (degrees), any shape."""
    ra, dec = np.radians(np.asarray(ra, dtype=np.float64)), np.radians(np.asarray(dec, dtype=np.float64))
    pole_ra, pole_dec = math.radians(192.85948), math.radians(27.12825)  # north Galactic pole
    sin_b = (np.sin(dec) * math.sin(pole_dec)
             + np.cos(dec) * math.cos(pole_dec) * np.cos(ra - pole_ra))
    return np.degrees(np.arcsin(np.clip(sin_b, -1.0, 1.0)))


def draw_neighbours(rng: np.random.Generator, config: RenderConfig, wavelength: ArrayLike, *,
                    latitude: float = 90.0) -> Neighbours:
    """Draw neighbour stars over the rendering grid.

    Their number is Poisson with mean ``star_density / sin|b|`` (at most 20x the
    polar density) times the grid area;
    magnitudes follow counts ``N(<m) ~ 10 ** (slope m)`` within ``star_mag_range``;
    colours are blackbodies of 3,500-9,000 K.

    Parameters
    ----------
    rng : numpy.random.Generator
    config : RenderConfig
    wavelength : array_like, shape (B,)
        Effective wavelengths of the survey's bands (Angstrom).
    latitude : float
        Galactic latitude of the object (degrees).

    Returns
    -------
    Neighbours
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    half = (config.grid_size / 2.0 - 4.0) * config.pixel_scale
    area = (2.0 * half / 60.0) ** 2
    crowding = min(1.0 / max(math.sin(math.radians(abs(latitude))), 1e-3), 20.0)
    count = int(rng.poisson(config.star_density * crowding * area))
    position = rng.uniform(-half, half, (4 * count + 4, 2))
    position = position[np.hypot(position[:, 0], position[:, 1]) >= config.star_keepout][:count]
    count = position.shape[0]
    low, high = config.star_mag_range
    slope = config.star_count_slope * math.log(10.0)
    u = rng.random(count)
    mags = low + np.log1p(u * np.expm1(slope * (high - low))) / slope  # inverse CDF of the counts
    temperature = rng.uniform(3500.0, 9000.0, count)
    colour = blackbody_colour(wavelength[None, :], temperature[:, None])
    return Neighbours(position=position, flux=mag_to_flux(mags[:, None] + colour))


def _sersic_image(host: HostGalaxy, config: RenderConfig) -> NDArray[np.float64]:
    """Unit-flux, pixel-integrated host image on the rendering grid (object at the grid centre)."""
    n = config.grid_size
    step = 1.0 / _OVERSAMPLE
    coords = (np.arange(n * _OVERSAMPLE) + 0.5) * step - 0.5 - n / 2  # sub-pixel centres, object at 0
    x = coords[None, :] - host.offset[0] / config.pixel_scale
    y = coords[:, None] - host.offset[1] / config.pixel_scale
    cos, sin = math.cos(host.angle), math.sin(host.angle)
    along, across = x * cos + y * sin, -x * sin + y * cos
    r_eff = max(host.r_eff / config.pixel_scale, 0.1)
    radius = np.hypot(along, across / host.axis_ratio) / r_eff
    sn = host.sersic_n
    b = 2.0 * sn - 1.0 / 3.0 + 4.0 / (405.0 * sn) + 46.0 / (25515.0 * sn**2)
    total = 2.0 * math.pi * sn * host.axis_ratio * r_eff**2 * math.exp(b) * b ** (-2.0 * sn) * math.gamma(2.0 * sn)
    fine = np.exp(-b * (radius ** (1.0 / sn) - 1.0)) * step**2 / total
    image = fine.reshape(n, _OVERSAMPLE, n, _OVERSAMPLE).sum(axis=(1, 3))
    return image / max(image.sum(), 1.0)  # a cusp sampled too finely must not exceed unit flux


def render(flux: ArrayLike, flux_err: ArrayLike, band: ArrayLike, fwhm: ArrayLike, *,
           config: RenderConfig, rng: np.random.Generator, host: HostGalaxy | None = None,
           neighbours: Neighbours | None = None, galaxies: Sequence[HostGalaxy] = (),
           template_flux: ArrayLike | None = None) -> Rendered:
    """Render the stamps of one object, all epochs at once.

    Parameters
    ----------
    flux : array_like, shape (T,), float64
        Flux of the object at each epoch (negative values are clipped to 0:
        a source cannot emit negative light).
    flux_err : array_like, shape (T,), float64
        Target PSF-fit flux error of each epoch (positive).
    band : array_like, shape (T,), int
        Index of each epoch's band into ``host.flux`` / ``neighbours.flux``.
    fwhm : array_like, shape (T,), float64
        PSF FWHM (arcsec) of each epoch.
    config : RenderConfig
    rng : numpy.random.Generator
        Draws the jitter, then the pixel noise.
    host : HostGalaxy, optional
    neighbours : Neighbours, optional
    galaxies : sequence of HostGalaxy
        Field galaxies (:func:`draw_field_galaxies`), rendered like the host.
    template_flux : array_like, shape (T,), float64, optional
        The object's flux in the template.  When given, the stamps are difference
        stamps: the science stamps minus the noiseless, PSF-matched template (the
        host, field galaxies and neighbours, ``template_flux * psf`` and, when the
        sky is not subtracted, the sky level), taken in float64 before the cast to
        float32.  Every draw (jitter, noise) is the science stamps'.

    Returns
    -------
    Rendered
    """
    flux = np.clip(np.asarray(flux, dtype=np.float64), 0.0, None)
    flux_err = np.asarray(flux_err, dtype=np.float64)
    band = np.asarray(band, dtype=np.intp)
    fwhm = np.asarray(fwhm, dtype=np.float64)
    count = flux.shape[0]
    if not (flux_err.shape == band.shape == fwhm.shape == (count,)):
        raise ValueError("flux, flux_err, band and fwhm must all have shape (T,)")
    if np.any(~(flux_err > 0)) or np.any(~(fwhm > 0)):
        raise ValueError("flux_err and fwhm must be positive")
    if template_flux is not None:
        template_flux = np.asarray(template_flux, dtype=np.float64)
        if template_flux.shape != (count,):
            raise ValueError(f"template_flux must have shape ({count},), got {template_flux.shape}")

    n, size, margin = config.grid_size, config.stamp_size, config.margin
    fy = np.fft.fftfreq(n)                 # (n,) cycles per pixel
    fx = np.fft.rfftfreq(n)                # (n // 2 + 1,)
    jitter = rng.normal(0.0, config.jitter, (count, 2))

    def ramp(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.complex128]:
        """Fourier phase of point sources at grid positions (x, y), shape (..., n, n // 2 + 1)."""
        return (np.exp(-2j * np.pi * y[..., None, None] * fy[:, None])
                * np.exp(-2j * np.pi * x[..., None, None] * fx[None, :]))

    centre = n / 2.0
    alpha = _moffat_alpha(fwhm / config.pixel_scale, config.moffat_beta)
    k = np.hypot(fy[:, None], fx[None, :])
    otf = moffat_otf(2.0 * np.pi * alpha[:, None, None] * k[None], config.moffat_beta)
    pixel = np.sinc(fy)[:, None] * np.sinc(fx)[None, :]
    shift = ramp(centre + jitter[:, 0], centre + jitter[:, 1]) * otf   # (T, n, m)
    shift_origin = ramp(jitter[:, 0], jitter[:, 1]) * otf              # jitter only

    crop = (slice(None), slice(margin, margin + size), slice(margin, margin + size))
    psf = np.fft.irfft2(shift * pixel, s=(n, n))[crop]
    background_hat = np.zeros_like(shift)
    crowded = neighbours is not None and neighbours.position.shape[0] > 0
    if crowded:
        stars = ramp(centre + neighbours.position[:, 0] / config.pixel_scale,
                     centre + neighbours.position[:, 1] / config.pixel_scale)      # (S, n, m)
        star_flux = neighbours.flux[:, band]                                         # (S, T)
        background_hat += np.einsum("st,snm->tnm", star_flux, stars) * pixel * shift_origin
    if host is not None:
        host_hat = np.fft.rfft2(_sersic_image(host, config))
        background_hat += host.flux[band][:, None, None] * host_hat * shift_origin
    if len(galaxies):
        galaxy_hat = np.fft.rfft2(np.stack([_sersic_image(galaxy, config) for galaxy in galaxies]))  # (G, n, m)
        galaxy_flux = np.stack([galaxy.flux[band] for galaxy in galaxies])                            # (G, T)
        background_hat += np.einsum("gt,gnm->tnm", galaxy_flux, galaxy_hat) * shift_origin
    background = np.fft.irfft2(background_hat, s=(n, n))[crop] if crowded or host is not None or len(galaxies) \
        else np.zeros_like(psf)

    model = flux[:, None, None] * psf + background
    # Noise: variance v = s^2 + c * max(model, 0).  The PSF-fit flux error is
    # sqrt(sum(P^2 v)) / sum(P^2); solve s^2 and c so that it equals flux_err.
    p2 = np.sum(psf**2, axis=(1, 2))
    target = p2 * flux_err**2                                       # required sum(P^2 v) / sum(P^2)
    weighted = np.sum(psf**2 * np.clip(model, 0.0, None), axis=(1, 2)) / p2
    photon = np.minimum(config.gain, (1.0 - config.min_sky_fraction) * target / np.maximum(weighted, 1e-300))
    sky_var = target - photon * weighted
    variance = sky_var[:, None, None] + photon[:, None, None] * np.clip(model, 0.0, None)
    noise = np.sqrt(variance) * rng.standard_normal(variance.shape)
    sky_level = sky_var / config.gain
    stamps = model + noise
    if template_flux is not None:  # science minus template: what is left is the change of the object, and noise
        stamps = stamps - background - template_flux[:, None, None] * psf
    elif not config.subtract_sky:
        stamps = stamps + sky_level[:, None, None]
    return Rendered(stamps=stamps.astype(np.float32), psf=psf, background=background, variance=variance,
                    sky_level=sky_level, jitter=jitter)


def psf_flux(stamps: ArrayLike, psf: ArrayLike, background: ArrayLike | float = 0.0) -> NDArray[np.float64]:
    """PSF-fit flux with a known PSF and background: ``sum(P (d - b)) / sum(P**2)``.

    Parameters
    ----------
    stamps : array_like, shape (T, H, W)
    psf : array_like, shape (T, H, W)
        Unit-flux object image of each epoch.
    background : array_like, shape (T, H, W), or float
        What the stamp holds besides the object (host, neighbours, sky).

    Returns
    -------
    ndarray, shape (T,), float64
    """
    psf = np.asarray(psf, dtype=np.float64)
    data = np.asarray(stamps, dtype=np.float64) - np.asarray(background, dtype=np.float64)
    return np.sum(psf * data, axis=(1, 2)) / np.sum(psf**2, axis=(1, 2))


def noise_flux_error(residual: ArrayLike, psf: ArrayLike, model: ArrayLike) -> NDArray[np.float64]:
    """PSF-fit flux error measured from the noise in a stamp's pixels.

    The noise model ``v = a + b * max(model, 0)`` (sky plus photon noise) is
    fitted by least squares to the squared residuals ``r**2`` of all pixels of
    each stamp (``a, b >= 0``); the error is then ``sqrt(sum(P**2 v)) / sum(P**2)``.
    Using every pixel, not only those under the PSF, keeps the estimate precise
    even for undersampled PSFs.

    Parameters
    ----------
    residual : array_like, shape (T, H, W)
        Stamp minus its noiseless model.
    psf : array_like, shape (T, H, W)
        Unit-flux object image.
    model : array_like, shape (T, H, W)
        Noiseless stamp (object, host, neighbours).

    Returns
    -------
    ndarray, shape (T,), float64
    """
    psf = np.asarray(psf, dtype=np.float64)
    count = psf.shape[0]
    r2 = np.asarray(residual, dtype=np.float64).reshape(count, -1) ** 2
    light = np.clip(np.asarray(model, dtype=np.float64), 0.0, None).reshape(count, -1)
    # Normal equations of r2 ~ a + b * light, per stamp.
    n = light.shape[1]
    s1, s2 = light.sum(axis=1), (light**2).sum(axis=1)
    y0, y1 = r2.sum(axis=1), (r2 * light).sum(axis=1)
    det = n * s2 - s1**2
    safe = det > 1e-12 * np.maximum(n * s2, 1e-300)
    b = np.where(safe, (n * y1 - s1 * y0) / np.where(safe, det, 1.0), 0.0)
    b = np.clip(b, 0.0, None)
    a = np.clip((y0 - b * s1) / n, 0.0, None)
    p2 = (psf**2).reshape(count, -1)
    variance = a[:, None] + b[:, None] * light
    return np.sqrt(np.sum(p2 * variance, axis=1)) / np.sum(p2, axis=1)
