"""Write a FITS binary table row block by row block, then move it into place.

The table's row count is only known at the end: the header is written with
``NAXIS2 = 0``, rows are appended as raw big-endian records, and ``close``
pads the data to a FITS block, rewrites the ``NAXIS2`` card in place and
publishes the temporary file (:mod:`convention_rt.publish`).  Memory stays
flat whatever the number of rows.

FITS headers hold printable ASCII only: a keyword value or comment with other
characters (a file name such as ``été.fits``) is written percent-encoded as
UTF-8 (``%C3%A9t%C3%A9.fits``, ``%`` itself as ``%25``);
``urllib.parse.unquote`` gives the text back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from astropy.io import fits

from convention_rt.errors import UsageError
from convention_rt.publish import AtomicWriter, StagedOutput, output_path

__all__ = ["StreamingTable", "header_text"]

FITS_BLOCK = 2880
# Printable ASCII but "%": kept as they are when a value must be percent-encoded.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_text(value: Any) -> Any:
    """A header value as FITS can hold it: text with non-printable-ASCII characters percent-encoded (UTF-8).

    Printable ASCII text and non-text values are returned unchanged; a
    ``(value, comment)`` pair has both parts treated.
    """
    if isinstance(value, tuple):
        return tuple(header_text(v) for v in value)
    if isinstance(value, str) and not (value.isascii() and value.isprintable()):
        return quote(value, safe=_HEADER_SAFE)
    return value


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
        self.path = output_path(path)
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path}: exists already (add --overwrite to replace it)")
        table = fits.BinTableHDU.from_columns(columns, nrows=0, name=name)
        for key, value in (table_header or {}).items():
            table.header[key] = header_text(value)
        self.header = table.header
        self.dtype = table.data.dtype.newbyteorder(">")
        if self.header["NAXIS1"] != self.dtype.itemsize:
            raise AssertionError("row layout does not match the FITS columns")
        primary = fits.PrimaryHDU()
        for key, value in (primary_header or {}).items():
            primary.header[key] = header_text(value)
        self.rows = 0
        self._closed = False
        self._output = StagedOutput(self.path, overwrite=overwrite)
        self._file = self._output.file
        try:
            with self._output.writing():
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
        if not isinstance(rows, np.ndarray) or rows.dtype != self.dtype or rows.ndim != 1:
            raise UsageError(f"{self.path}: rows must be a block made by empty_rows(), got "
                             f"{getattr(rows, 'dtype', type(rows).__name__)}")
        with self._output.writing():
            self._file.write(rows.tobytes())
        self.rows += rows.shape[0]

    def finish(self) -> Path:
        """Pad, write the row count, and close the temporary file (still under its temporary name)."""
        with self._output.writing():
            self._file.write(b"\0" * ((-self.rows * self.dtype.itemsize) % FITS_BLOCK))
            start = self.header.tostring().index("NAXIS2  =")
            self._file.seek(self._table_offset + start)
            self._file.write(fits.Card("NAXIS2", self.rows, "number of rows").image.encode("ascii"))
            self._file.close()
        return self._output.temporary

    def close(self, append_hdus: list[fits.BinTableHDU] | None = None) -> Path:
        """Finish the file, append any further HDUs, and move it into place."""
        if self._closed:
            return self.path
        try:
            self.finish()
            if append_hdus:
                with self._output.writing(), fits.open(self._output.temporary, mode="append") as hdul:
                    for hdu in append_hdus:
                        hdul.append(hdu)
            self._output.publish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        self._closed = True
        self._output.discard()
