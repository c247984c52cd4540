"""Write a FITS binary table row block by row block, then move it into place.

The table's row count is only known at the end: the header is written with
``NAXIS2 = 0``, rows are appended as raw big-endian records, and ``close``
pads the data to a FITS block, rewrites the ``NAXIS2`` card in place and
renames the temporary file.  Memory stays flat whatever the number of rows.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from convention_rt.errors import UsageError

__all__ = ["AtomicWriter", "StreamingTable"]

FITS_BLOCK = 2880


class AtomicWriter:
    """The writers' context protocol: :meth:`close` (into place) on success, :meth:`abort` on error."""

    def close(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 (returns the subclass)
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class StreamingTable(AtomicWriter):
    """A FITS file (primary HDU + one binary table) written in blocks of rows.

    Parameters
    ----------
    path : str or Path
        Destination; written under a hidden temporary name beside it first.
    columns : list of astropy.io.fits.Column
        Column definitions (names, formats, dims, units); no data.
    name : str
        ``EXTNAME`` of the table.
    primary_header, table_header : dict, optional
        Extra keywords.
    overwrite : bool
        Replace an existing destination.
    """

    def __init__(self, path: str | Path, columns: list[fits.Column], *, name: str,
                 primary_header: dict[str, Any] | None = None, table_header: dict[str, Any] | None = None,
                 overwrite: bool = False) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path}: exists already (add --overwrite to replace it)")
        table = fits.BinTableHDU.from_columns(columns, nrows=0, name=name)
        for key, value in (table_header or {}).items():
            table.header[key] = value
        self.header = table.header
        self.dtype = table.data.dtype.newbyteorder(">")
        if self.header["NAXIS1"] != self.dtype.itemsize:
            raise AssertionError("row layout does not match the FITS columns")
        self.rows = 0
        self._closed = False
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        self._file = open(self._tmp, "x+b")  # noqa: SIM115 (closed by close() or abort())
        try:
            primary = fits.PrimaryHDU()
            for key, value in (primary_header or {}).items():
                primary.header[key] = value
            self._file.write(primary.header.tostring().encode("ascii"))
            self._table_offset = self._file.tell()
            self._file.write(self.header.tostring().encode("ascii"))
        except BaseException:
            self.abort()
            raise

    def empty_rows(self, n: int) -> np.ndarray:
        """A zeroed block of ``n`` rows to fill (big-endian, FITS layout)."""
        return np.zeros(n, dtype=self.dtype)

    def append(self, rows: np.ndarray) -> None:
        """Append a block made by :meth:`empty_rows`."""
        if self._closed:
            raise UsageError(f"{self.path}: this writer is closed")
        if rows.dtype != self.dtype:
            raise AssertionError("rows must come from empty_rows()")
        self._file.write(rows.tobytes())
        self.rows += rows.shape[0]

    def finish(self) -> Path:
        """Pad, write the row count, and close the temporary file (still under its temporary name)."""
        self._file.write(b"\0" * ((-self.rows * self.dtype.itemsize) % FITS_BLOCK))
        start = self.header.tostring().index("NAXIS2  =")
        self._file.seek(self._table_offset + start)
        self._file.write(fits.Card("NAXIS2", self.rows, "number of rows").image.encode("ascii"))
        self._file.close()
        return self._tmp

    def close(self, append_hdus: list[fits.BinTableHDU] | None = None) -> Path:
        """Finish the file, append any further HDUs, and move it into place."""
        if self._closed:
            return self.path
        try:
            self.finish()
            if append_hdus:
                with fits.open(self._tmp, mode="append") as hdul:
                    for hdu in append_hdus:
                        hdul.append(hdu)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        self._closed = True
        try:
            self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)
