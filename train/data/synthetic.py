"""Fast parametric benchmark: cadences of three surveys, drawn objects of four classes, stamps.

Each object gets a class (balanced: AGN, SNIa, SNOther, Variable), a survey
cadence, a parametric light curve (:mod:`train.data.lightcurves`) and stamps
rendered by :mod:`train.data.render`; the catalog is written with
:class:`convention_rt.catalog_writer.CatalogWriter` in the FRAMES layout.

Everything is drawn from ``numpy.random.SeedSequence(seed)``: object ``i`` owns
the ``i``-th spawned stream, so the same arguments give the same bytes.

Command line::

    python -m train.data.synthetic --out PATH --n-objects N --profile lsst --seed S [--overwrite]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from convention_rt.catalog_writer import CatalogWriter
from convention_rt.photometry import Photometry
from convention_rt.errors import ConventionError, UsageError
from train.data.lightcurves import (
    CLASSES,
    SN_OTHER_MIX,
    ZEROPOINT,
    Agn,
    EclipsingBinary,
    Flare,
    RRLyrae,
    Supernova,
    flux_to_mag,
    mag_to_flux,
)
from train.data.render import (
    HostGalaxy,
    RenderConfig,
    draw_host,
    draw_neighbours,
    draw_seeing,
    galactic_latitude,
    render,
)

__all__ = ["GENERATOR_VERSION", "PROFILES", "SurveyProfile", "SyntheticObject", "draw_cadence",
           "draw_object", "generate", "main"]

GENERATOR_VERSION = "1.0"

Cadence = Literal["drift", "single", "pairs"]


@dataclass(frozen=True, kw_only=True)
class SurveyProfile:
    """A survey: bands, depth, seeing, camera and cadence.

    Attributes
    ----------
    name : str
    bands : tuple of str
    wavelength : tuple of float
        Effective wavelength of each band (Angstrom).
    depth : tuple of float
        Single-visit 5-sigma point-source depth of each band (AB, at median seeing).
    seeing : float
        Median PSF FWHM (arcsec) at 6200 A.
    render : RenderConfig
        Camera: pixel scale, PSF shape, gain, neighbour stars.
    cadence : {"drift", "single", "pairs"}
        ``drift``: every band in one visit, a drift scan's fixed band order
        (SDSS r, i, u, z, g, 71.7 s apart); ``single``: one band per visit, often
        two visits a night (LSST); ``pairs``: a g and an r visit most nights, i now
        and then (ZTF).
    band_weights : tuple of float
        Share of visits per band (``single`` cadence).
    night_gap : float
        Mean gap between observed nights within a season (days).
    season : float
        Observable days per year.
    start_mjd : float
        First night of the survey.
    night_window : (float, float)
        UT fraction of the day during which visits happen.
    ra_range, dec_range : (float, float)
        Footprint (degrees; ``ra_range`` may wrap through 0, e.g. (-50, 60)).
    z_max : dict
        Largest redshift drawn for ``SNIa``, ``SNOther`` and ``AGN``.
    star_mags : (float, float)
        Mean magnitude range of Galactic variables.
    spec_limit : float
        Magnitude at which half of the objects get a spectroscopic type.
    """

    name: str
    bands: tuple[str, ...]
    wavelength: tuple[float, ...]
    depth: tuple[float, ...]
    seeing: float
    render: RenderConfig
    cadence: Cadence
    band_weights: tuple[float, ...]
    night_gap: float
    season: float
    start_mjd: float
    night_window: tuple[float, float]
    ra_range: tuple[float, float]
    dec_range: tuple[float, float]
    z_max: dict[str, float]
    star_mags: tuple[float, float]
    spec_limit: float

    def __post_init__(self) -> None:
        sizes = {len(self.bands), len(self.wavelength), len(self.depth), len(self.band_weights)}
        if len(sizes) != 1:
            raise ValueError(f"profile {self.name}: bands, wavelength, depth and band_weights differ in length")


_DRIFT_ORDER = ("r", "i", "u", "z", "g")
_DRIFT_STEP = 71.7 / 86400.0  # days between SDSS filter rows

PROFILES: dict[str, SurveyProfile] = {
    "sdss_s82": SurveyProfile(
        name="sdss_s82", bands=("u", "g", "r", "i", "z"),
        wavelength=(3551.0, 4686.0, 6166.0, 7480.0, 8932.0), depth=(22.0, 22.2, 22.2, 21.3, 20.5),
        seeing=1.4, render=RenderConfig(pixel_scale=0.396, gain=0.3, moffat_beta=3.0),
        cadence="drift", band_weights=(0.2,) * 5, night_gap=4.0, season=90.0, start_mjd=53614.0,
        night_window=(0.15, 0.35), ra_range=(-50.0, 60.0), dec_range=(-1.26, 1.26),
        z_max={"SNIa": 0.45, "SNOther": 0.25, "AGN": 3.0}, star_mags=(15.0, 20.5), spec_limit=20.5),
    "lsst": SurveyProfile(
        name="lsst", bands=("u", "g", "r", "i", "z", "y"),
        wavelength=(3671.0, 4827.0, 6223.0, 7546.0, 8691.0, 9712.0), depth=(23.9, 25.0, 24.7, 24.0, 23.3, 22.1),
        seeing=0.8, render=RenderConfig(pixel_scale=0.2, gain=0.015, moffat_beta=3.0),
        cadence="single", band_weights=(0.07, 0.09, 0.22, 0.22, 0.20, 0.20), night_gap=3.0, season=200.0,
        start_mjd=60800.0, night_window=(0.0, 0.35), ra_range=(0.0, 360.0), dec_range=(-70.0, 5.0),
        z_max={"SNIa": 0.8, "SNOther": 0.4, "AGN": 3.0}, star_mags=(16.0, 23.0), spec_limit=22.0),
    "ztf": SurveyProfile(
        name="ztf", bands=("g", "r", "i"), wavelength=(4813.0, 6436.0, 7883.0), depth=(20.8, 20.6, 19.9),
        seeing=2.0, render=RenderConfig(pixel_scale=1.01, gain=0.5, moffat_beta=3.0),
        cadence="pairs", band_weights=(0.45, 0.45, 0.10), night_gap=1.5, season=240.0, start_mjd=58300.0,
        night_window=(0.17, 0.5), ra_range=(0.0, 360.0), dec_range=(-30.0, 90.0),
        z_max={"SNIa": 0.12, "SNOther": 0.06, "AGN": 1.5}, star_mags=(14.0, 19.5), spec_limit=19.0),
}


@dataclass(frozen=True)
class SyntheticObject:
    """One drawn object, ready to render.

    Attributes
    ----------
    label : str
        One of :data:`~train.data.lightcurves.CLASSES`.
    subtype : str
        Physical subtype (e.g. ``II-P``, ``RRLyrae``).
    typing : {"spec", "phot"}
    ra, dec : float
        Degrees.
    z : float
        Redshift (0 for Galactic objects).
    mjd : ndarray, shape (T,), float64
    band : ndarray, shape (T,), int64
        Index into the profile's bands.
    flux, flux_err, fwhm : ndarray, shape (T,), float64
        Noiseless object flux, target flux error, seeing FWHM (arcsec).
    host : HostGalaxy or None
    """

    label: str
    subtype: str
    typing: str
    ra: float
    dec: float
    z: float
    mjd: NDArray[np.float64]
    band: NDArray[np.int64]
    flux: NDArray[np.float64]
    flux_err: NDArray[np.float64]
    fwhm: NDArray[np.float64]
    host: HostGalaxy | None


def draw_cadence(profile: SurveyProfile, n_epochs: int, rng: np.random.Generator) -> tuple[
        NDArray[np.float64], NDArray[np.int64]]:
    """Visit times and bands of one object: ``n_epochs`` single-band frames.

    Observed nights are separated by ``1 + Poisson(night_gap - 1)`` days of
    survey time, folded into seasons of ``season`` days a year; the object's
    first night falls anywhere in the first two seasons.  A drift-scan profile
    keeps whole visits (``n_epochs`` rounded down to a multiple of the bands).

    Returns
    -------
    mjd : ndarray, shape (T,), float64
        Sorted.
    band : ndarray, shape (T,), int64
    """
    n_bands = len(profile.bands)
    n_nights = n_epochs if profile.cadence != "drift" else max(1, n_epochs // n_bands)
    gaps = 1 + rng.poisson(max(profile.night_gap - 1.0, 0.0), n_nights)
    active = rng.uniform(0.0, 2.0 * profile.season) + np.cumsum(gaps) - gaps[0]
    nights = np.floor(profile.start_mjd + np.floor(active / profile.season) * 365.25 + active % profile.season)
    start = nights + rng.uniform(*profile.night_window, n_nights)
    if profile.cadence == "drift":
        order = np.array([profile.bands.index(b) for b in _DRIFT_ORDER if b in profile.bands])
        mjd = (start[:, None] + _DRIFT_STEP * np.arange(order.shape[0])[None, :]).reshape(-1)
        return mjd, np.tile(order, n_nights).astype(np.int64)
    if profile.cadence == "single":
        weights = np.asarray(profile.band_weights) / sum(profile.band_weights)
        first = rng.choice(n_bands, n_nights, p=weights)
        second = np.where(rng.random(n_nights) < 0.5, rng.choice(n_bands, n_nights, p=weights), first)
        pair = rng.random(n_nights) < 0.6
        mjd = np.concatenate([start, start[pair] + rng.uniform(0.015, 0.05, int(pair.sum()))])
        band = np.concatenate([first, second[pair]])
    else:
        g, r = profile.bands.index("g"), profile.bands.index("r")
        visits = [(start, np.full(n_nights, g), rng.random(n_nights) < 0.85),
                  (start + rng.uniform(0.03, 0.1, n_nights), np.full(n_nights, r), rng.random(n_nights) < 0.85)]
        if "i" in profile.bands:
            visits.append((start + rng.uniform(0.1, 0.15, n_nights), np.full(n_nights, profile.bands.index("i")),
                           rng.random(n_nights) < 0.15))
        mjd = np.concatenate([t[keep] for t, _, keep in visits])
        band = np.concatenate([b[keep] for _, b, keep in visits])
    order = np.argsort(mjd, kind="stable")[:n_epochs]
    return mjd[order], band[order].astype(np.int64)


def _redshift(rng: np.random.Generator, z_min: float, z_max: float, *, volume: bool) -> float:
    """A redshift uniform in comoving volume (``z**2``) or uniform, in [z_min, z_max]."""
    u = rng.random()
    if volume:
        return float((z_min**3 + u * (z_max**3 - z_min**3)) ** (1.0 / 3.0))
    return float(z_min + u * (z_max - z_min))


Source = Supernova | Agn | RRLyrae | EclipsingBinary | Flare


def _draw_source(label: str, profile: SurveyProfile, mjd: NDArray[np.float64],
                 rng: np.random.Generator) -> tuple[Source, str, float, str | None]:
    """The light-curve model, its subtype, redshift and whether it has a (centred) host."""
    depth = max(profile.depth)
    if label in ("SNIa", "SNOther"):
        kind = "Ia" if label == "SNIa" else rng.choice(list(SN_OTHER_MIX), p=list(SN_OTHER_MIX.values()))
        # The peak falls near one of the visits, so the event is seen.
        t0 = float(rng.choice(mjd[: max(1, int(0.8 * mjd.shape[0]))]) + rng.uniform(-10.0, 5.0))
        for _ in range(20):  # Malmquist: keep drawing until the peak is detectable
            z = _redshift(rng, 0.02, profile.z_max[label], volume=True)
            model = Supernova.draw(rng, str(kind), t0=t0, z=z)
            if np.min(model.peak_mag(np.asarray(profile.wavelength))) < depth - 1.0:
                break
        return model, str(kind), z, "sn"
    if label == "AGN":
        for _ in range(20):
            z = _redshift(rng, 0.1, profile.z_max["AGN"], volume=False)
            model = Agn.draw(rng, z=z)
            if np.min(model.mean_mag(np.asarray(profile.wavelength))) < depth - 1.0:
                break
        return model, "AGN", z, "agn"
    kind = rng.choice(["RRLyrae", "EclipsingBinary", "Flare"], p=[0.35, 0.35, 0.30])
    if kind == "RRLyrae":
        return RRLyrae.draw(rng, mag_range=profile.star_mags), "RRLyrae", 0.0, None
    if kind == "EclipsingBinary":
        return EclipsingBinary.draw(rng, mag_range=profile.star_mags), "EclipsingBinary", 0.0, None
    return Flare.draw(rng, mjd=mjd, mag_range=profile.star_mags), "Flare", 0.0, None


def draw_object(label: str, profile: SurveyProfile, n_epochs: int, rng: np.random.Generator) -> SyntheticObject:
    """Draw one object of class ``label`` observed ``n_epochs`` times by ``profile``.

    The flux error of each epoch is the background noise of the band's depth,
    scaled by the epoch's seeing and a night-to-night sky factor (log-normal,
    0.15), plus the photon noise of the object (``gain * flux``).  Objects whose
    brightest epoch is brighter than ``spec_limit`` are mostly typed
    spectroscopically (probability a logistic of width 0.3 mag); the rest are ``phot``.
    """
    if label not in CLASSES:
        raise UsageError(f"label must be one of {CLASSES}, got {label!r}")
    mjd, band = draw_cadence(profile, n_epochs, rng)
    wavelength = np.asarray(profile.wavelength)[band]
    model, subtype, z, host_kind = _draw_source(label, profile, mjd, rng)
    flux = model.flux(mjd, wavelength)

    fwhm = draw_seeing(mjd, wavelength, profile.seeing, rng, night_boundary=profile.render.night_boundary)
    median_fwhm = profile.seeing * (wavelength / 6200.0) ** -0.2
    background = mag_to_flux(np.asarray(profile.depth)[band]) / 5.0
    background = background * (fwhm / median_fwhm) * np.exp(rng.normal(0.0, 0.15, mjd.shape[0]))
    flux_err = np.sqrt(background**2 + profile.render.gain * np.clip(flux, 0.0, None))

    low, high = profile.ra_range
    ra = float(np.mod(rng.uniform(low, high), 360.0))
    sin_dec = rng.uniform(*np.sin(np.radians(profile.dec_range)))
    dec = float(np.degrees(np.arcsin(sin_dec)))
    host = None
    if host_kind is not None:
        host = draw_host(rng, z=z, wavelength=profile.wavelength, centred=host_kind == "agn",
                         abs_mag=(-21.5, 0.7) if host_kind == "agn" else (-20.5, 1.0))
    brightest = float(np.nanmin(flux_to_mag(flux))) if np.any(flux > 0) else math.inf
    p_spec = 1.0 / (1.0 + math.exp(np.clip((brightest - profile.spec_limit) / 0.3, -50.0, 50.0)))
    typing = "spec" if rng.random() < p_spec else "phot"
    return SyntheticObject(label=label, subtype=subtype, typing=typing, ra=ra, dec=dec, z=z, mjd=mjd, band=band,
                           flux=flux, flux_err=flux_err, fwhm=fwhm, host=host)


def _command(path: str | Path, n_objects: int, profile: str, seed: int, min_epochs: int, max_epochs: int) -> str:
    """The command line that writes this catalog (the path as given)."""
    return (f"python -m train.data.synthetic --out {path} --n-objects {n_objects} --profile {profile} "
            f"--seed {seed} --min-epochs {min_epochs} --max-epochs {max_epochs}")


def generate(path: str | Path, *, n_objects: int, profile: str = "lsst", seed: int = 0, min_epochs: int = 20,
             max_epochs: int = 40, overwrite: bool = False) -> Path:
    """Draw, render and write a synthetic catalog.

    Parameters
    ----------
    path : str or Path
        Catalog to write (FRAMES layout, integer ids ``1..n_objects``).
    n_objects : int
        Number of objects; classes are balanced (they differ by at most one).
    profile : {"sdss_s82", "lsst", "ztf"}
    seed : int
        Seed of everything drawn.
    min_epochs, max_epochs : int
        Range of single-band frames per object (uniform).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
    """
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if n_objects < 1:
        raise UsageError(f"n_objects must be at least 1, got {n_objects}")
    if not 1 <= min_epochs <= max_epochs:
        raise UsageError(f"need 1 <= min_epochs <= max_epochs, got {min_epochs}, {max_epochs}")
    if seed < 0:
        raise UsageError(f"seed must be non-negative, got {seed}")
    survey = PROFILES[profile]
    streams = np.random.SeedSequence(seed).spawn(n_objects + 1)
    labels = np.random.default_rng(streams[0]).permutation(np.resize(np.array(CLASSES), n_objects))
    wavelength = np.asarray(survey.wavelength)
    header: dict[str, object] = {
        "SOURCE": ("synthetic", "parametric light curves, rendered stamps"),
        "GENERATR": ("train.data.synthetic", "generator module"),
        "GENVER": (GENERATOR_VERSION, "generator version"),
        "SEED": (seed, "seed of numpy.random.SeedSequence"),
        "PROFILE": (profile, "survey profile"),
        "NOBJ": (n_objects, "objects, classes balanced"),
        "MINEPO": (min_epochs, "least frames per object"),
        "MAXEPO": (max_epochs, "most frames per object"),
        "CADENCE": (survey.cadence, "visit pattern"),
        "BANDWL": (",".join(f"{b}:{w:g}" for b, w in zip(survey.bands, survey.wavelength)), "eff. wavelength (A)"),
        "DEPTH5": (",".join(f"{b}:{d:g}" for b, d in zip(survey.bands, survey.depth)), "5-sigma depth (AB)"),
        "SEEING": (survey.seeing, "median FWHM at 6200 A (arcsec)"),
        "FLUXUNIT": ("FLUXCAL", f"flux of AB mag m is 10**(-0.4(m-{ZEROPOINT:g}))"),
        **survey.render.header(),
        "COMMAND": _command(path, n_objects, profile, seed, min_epochs, max_epochs),
    }
    photometry = Photometry(profile=profile, pixel_scale=survey.render.pixel_scale, flux_unit="FLUXCAL",
                            sky_subtracted=survey.render.subtract_sky, stamp_kind="science")
    with CatalogWriter(path, survey.bands, photometry=photometry, layout="FRAMES",
                       stamp_shape=(survey.render.stamp_size,) * 2, header=header, overwrite=overwrite) as writer:
        for index in range(n_objects):
            rng = np.random.default_rng(streams[index + 1])
            n_epochs = int(rng.integers(min_epochs, max_epochs + 1))
            obj = draw_object(str(labels[index]), survey, n_epochs, rng)
            neighbours = draw_neighbours(rng, survey.render, wavelength, latitude=float(
                galactic_latitude(obj.ra, obj.dec)))
            stamps = render(obj.flux, obj.flux_err, obj.band, obj.fwhm, config=survey.render, rng=rng,
                            host=obj.host, neighbours=neighbours).stamps
            writer.add_object(index + 1, mjd=obj.mjd, stamps=stamps, bands=[survey.bands[b] for b in obj.band],
                              ra=obj.ra, dec=obj.dec, label=obj.label, typing=obj.typing)
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write a synthetic catalog; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m train.data.synthetic", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="catalog file to write")
    parser.add_argument("--n-objects", required=True, type=int, help="number of objects (classes balanced)")
    parser.add_argument("--profile", default="lsst", choices=sorted(PROFILES), help="survey profile")
    parser.add_argument("--seed", default=0, type=int, help="random seed")
    parser.add_argument("--min-epochs", default=20, type=int, help="least single-band frames per object")
    parser.add_argument("--max-epochs", default=40, type=int, help="most single-band frames per object")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        path = generate(args.out, n_objects=args.n_objects, profile=args.profile, seed=args.seed,
                        min_epochs=args.min_epochs, max_epochs=args.max_epochs, overwrite=args.overwrite)
    except ConventionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {args.n_objects} objects)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
