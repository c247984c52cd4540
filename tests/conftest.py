"""Shared fixtures: tiny seeded catalogs, valid and deliberately broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.catalog import FORMAT_NAME, FORMAT_VERSION, CatalogWriter

BANDS = ("g", "r", "i")


def write_small_catalog(path: Path, *, n_objects: int = 6, epochs: int = 5, seed: int = 0,
                        stamp_shape: tuple[int, int] = (32, 32)) -> Path:
    """A valid FRAMES catalog with labelled objects and time-shuffled epochs."""
    rng = np.random.default_rng(seed)
    classes = ["AGN", "SNIa", "SNOther", "Variable"]
    with CatalogWriter(path, BANDS, stamp_shape=stamp_shape, header={"SOURCE": "tests"}) as writer:
        for k in range(n_objects):
            writer.add_object(
                100 + k,
                mjd=rng.permutation(np.arange(epochs) * 1.5 + 59000.0),
                stamps=rng.normal(50.0, 5.0, size=(epochs, *stamp_shape)),
                bands=[BANDS[j % 3] for j in range(epochs)],
                ra=10.0 + k, dec=-5.0, label=classes[k % 4], typing="spec" if k % 2 else "phot",
            )
    return path


def write_raw_catalog(path: Path, objects: list[fits.Column], epochs: list[fits.Column], *,
                      epochs_header: dict | None = None, primary_header: dict | None = None,
                      with_objects: bool = True, with_epochs: bool = True) -> Path:
    """Write arbitrary OBJECTS/EPOCHS tables (for malformed-file tests)."""
    primary = fits.PrimaryHDU()
    primary.header["CRTFMT"] = FORMAT_NAME
    primary.header["CRTVER"] = FORMAT_VERSION
    for key, value in (primary_header or {}).items():
        primary.header[key] = value
    hdus = [primary]
    if with_epochs:
        table = fits.BinTableHDU.from_columns(epochs, name="EPOCHS")
        table.header["LAYOUT"] = "FRAMES"
        table.header["BANDS"] = ",".join(BANDS)
        for key, value in (epochs_header or {}).items():
            table.header[key] = value
        hdus.append(table)
    if with_objects:
        hdus.append(fits.BinTableHDU.from_columns(objects, name="OBJECTS"))
    fits.HDUList(hdus).writeto(path)
    return path


def frame_columns(ids, mjd, bands, stamps, *, stamp_format: str | None = None,
                  mjd_format: str = "D") -> list[fits.Column]:
    stamps = np.asarray(stamps)
    height, width = stamps.shape[1:]
    return [
        fits.Column("OBJECT_ID", "K", array=np.asarray(ids, dtype=np.int64)),
        fits.Column("MJD", mjd_format, array=np.asarray(mjd)),
        fits.Column("BAND", "8A", array=np.asarray(bands)),
        fits.Column("STAMP", stamp_format or f"{height * width}E", dim=f"({width},{height})", array=stamps),
    ]


def object_columns(ids, first, count) -> list[fits.Column]:
    n = len(ids)
    return [
        fits.Column("OBJECT_ID", "K", array=np.asarray(ids, dtype=np.int64)),
        fits.Column("RA", "D", array=np.zeros(n)),
        fits.Column("DEC", "D", array=np.zeros(n)),
        fits.Column("FIRST_EPOCH", "K", array=np.asarray(first, dtype=np.int64)),
        fits.Column("N_EPOCHS", "K", array=np.asarray(count, dtype=np.int64)),
    ]


@pytest.fixture
def small_catalog(tmp_path: Path) -> Path:
    return write_small_catalog(tmp_path / "small.fits")
