"""Positional reads of FITS table rows (convention_rt.fits_rows): same rows as astropy, no memory map."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.errors import CatalogError
from convention_rt.fits_rows import TableRows, read_at


def table_file(path: Path, n: int = 50) -> Path:
    rng = np.random.default_rng(3)
    columns = [fits.Column("A", "K", array=np.arange(n, dtype=np.int64) * 7),
               fits.Column("B", "D", array=rng.normal(size=n)),
               fits.Column("C", "6E", dim="(3,2)", array=rng.normal(size=(n, 2, 3)).astype(np.float32)),
               fits.Column("S", "5A", array=np.array([f"r{k}" for k in range(n)]))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(columns, name="T")]).writeto(path)
    return path


def open_rows(path: Path, n_rows: int | None = None) -> tuple[int, TableRows, np.ndarray]:
    with fits.open(path) as hdul:
        hdu = hdul["T"]
        dtype = hdu.columns.dtype.newbyteorder(">")
        offset = hdul.fileinfo(1)["datLoc"]
        expected = np.array(hdu.data.view(np.ndarray))
        rows = hdu.header["NAXIS2"] if n_rows is None else n_rows
    handle = os.open(path, os.O_RDONLY)
    return handle, TableRows(handle, path, "T", dtype, offset, rows, os.fstat(handle)), expected


def test_rows_and_runs_are_those_astropy_reads(tmp_path):
    handle, table, expected = open_rows(table_file(tmp_path / "t.fits"))
    try:
        got = table.read(5, 12)
        assert got.dtype.isnative is False and got.shape == (7,)
        for name in ("A", "B", "C", "S"):
            np.testing.assert_array_equal(got[name], expected[name][5:12])
        runs = table.read_runs([40, 0, 10], [43, 2, 10])  # in the order given; an empty run is fine
        np.testing.assert_array_equal(runs["A"], expected["A"][[40, 41, 42, 0, 1]])
        assert table.read(50, 50).shape == (0,)
        with pytest.raises(IndexError):
            table.read(49, 51)
    finally:
        os.close(handle)


def test_a_truncated_file_is_an_error_naming_file_and_table(tmp_path):
    path = table_file(tmp_path / "t.fits")
    handle, table, _ = open_rows(path)
    try:
        table.read(0, 10)
        os.truncate(path, path.stat().st_size - 2880)
        with pytest.raises(CatalogError, match=rf"^{path}: T: the file changed while being read \(now \d+ bytes, "
                                               r"was \d+\): another program truncated or rewrote it"):
            table.read(0, 10)  # even rows that are still there: the file is not the one checked
    finally:
        os.close(handle)


def test_a_rewritten_file_is_an_error(tmp_path):
    path = table_file(tmp_path / "t.fits")
    handle, table, _ = open_rows(path)
    try:
        status = path.stat()
        os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
        with pytest.raises(CatalogError, match=r"the file changed while being read \(modified\)"):
            table.read(0, 1)
    finally:
        os.close(handle)


def test_rows_past_the_end_of_the_file_are_an_error_not_a_fault(tmp_path):
    path = table_file(tmp_path / "t.fits", n=10)
    handle, table, _ = open_rows(path, n_rows=10**6)  # a header promising more rows than the file has
    try:
        with pytest.raises(CatalogError, match=r"T: the file ended at byte \d+ while being read"):
            table.read(0, 10**6)
    finally:
        os.close(handle)


def test_read_at_stops_at_the_end_of_the_file(tmp_path):
    path = tmp_path / "b.bin"
    path.write_bytes(b"0123456789")
    handle = os.open(path, os.O_RDONLY)
    try:
        assert read_at(handle, 4, 3) == b"3456"
        assert read_at(handle, 8, 6) == b"6789"
        assert read_at(handle, 0, 0) == b""
    finally:
        os.close(handle)
