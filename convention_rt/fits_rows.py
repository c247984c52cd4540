"""Read rows of a FITS binary table by positional reads, never through a memory map.

A memory-mapped read of a file that another process truncates meanwhile faults
(``SIGBUS``) and kills the reader without a message.  :class:`TableRows`
instead copies the rows it is asked for from the file into a fresh buffer with
``os.preadv`` (a short read is an ordinary return value, never a fault), and
checks before every read that the file still has the size and modification
time it had when it was opened.  Memory is bounded by the rows asked for, and
the pages read stay in the system's cache, not in the process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convention_rt.errors import CatalogError

__all__ = ["TableRows", "read_at"]

_MAX_READ = 1 << 30
"""Largest single read request (Linux transfers at most about 2 GiB per call)."""


class TableRows:
    """The rows of one binary table of an open file, read on demand.

    Parameters
    ----------
    handle : int
        A file descriptor opened for reading (owned by the caller).
    path : str or Path
        The file's name, for error messages.
    hdu : str
        The table's ``EXTNAME``, for error messages.
    dtype : numpy.dtype
        Big-endian record dtype of one row (``itemsize`` = ``NAXIS1``).
    offset : int
        Byte offset of the table's first row in the file.
    n_rows : int
        ``NAXIS2``.
    identity : os.stat_result
        ``os.fstat(handle)`` when the file was opened and checked: a later
        read refuses a file whose size or modification time differs.
    """

    def __init__(self, handle: int, path: str | Path, hdu: str, dtype: np.dtype, offset: int, n_rows: int,
                 identity: os.stat_result) -> None:
        self.handle = handle
        self.path = str(path)
        self.hdu = hdu
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self.n_rows = int(n_rows)
        self._size = identity.st_size
        self._mtime = identity.st_mtime_ns

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (``0 <= start <= stop <= n_rows``) as a new record array, big-endian.

        Raises
        ------
        CatalogError
            The file changed (was truncated or rewritten) since it was opened.
        """
        return self.read_runs(np.array([start], dtype=np.int64), np.array([stop], dtype=np.int64))

    def read_runs(self, starts: Sequence[int] | np.ndarray, stops: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows of the runs ``starts[k]:stops[k]``, concatenated in the order given.

        Parameters
        ----------
        starts, stops : array_like of int, shape (k,)
            Row ranges within ``0:n_rows``; each is one contiguous read.

        Returns
        -------
        ndarray, shape (sum(stops - starts),), record dtype :attr:`dtype`
        """
        starts = np.asarray(starts, dtype=np.int64)
        stops = np.asarray(stops, dtype=np.int64)
        if np.any(starts < 0) or np.any(stops < starts) or np.any(stops > self.n_rows):
            raise IndexError(f"rows outside 0:{self.n_rows} of {self.hdu}")
        itemsize = self.dtype.itemsize
        lengths = (stops - starts) * itemsize
        buffer = np.empty(int(lengths.sum()), dtype=np.uint8)
        self._check_unchanged()
        view = memoryview(buffer)
        position = 0
        for start, length in zip(starts.tolist(), lengths.tolist()):
            self._read_into(view[position:position + length], self.offset + start * itemsize)
            position += length
        return buffer.view(self.dtype)

    def _check_unchanged(self) -> None:
        status = os.fstat(self.handle)
        if status.st_size != self._size or status.st_mtime_ns != self._mtime:
            now = f"now {status.st_size} bytes, was {self._size}" if status.st_size != self._size else \
                "modified"
            raise CatalogError(self.path, f"the file changed while being read ({now}): another program "
                               "truncated or rewrote it; read it again once it is complete", hdu=self.hdu)

    def _read_into(self, view: memoryview, offset: int) -> None:
        done = 0
        while done < len(view):
            part = view[done:done + _MAX_READ]
            count = _pread_into(self.handle, part, offset + done)
            if count == 0:
                raise CatalogError(self.path, f"the file ended at byte {offset + done} while being read "
                                   "(another program truncated it); read it again once it is complete",
                                   hdu=self.hdu)
            done += count


def read_at(handle: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes of the file ``handle`` from byte ``offset`` (fewer at its end)."""
    buffer = bytearray(size)
    count = _pread_into(handle, memoryview(buffer), offset) if size else 0
    return bytes(buffer[:count])


def _pread_into(handle: int, view: memoryview, offset: int) -> int:
    """Read into ``view`` from ``offset`` without moving the file position; bytes read (0 at end of file)."""
    if hasattr(os, "preadv"):
        return os.preadv(handle, [view], offset)
    if hasattr(os, "pread"):  # platforms without preadv: one more copy
        data = os.pread(handle, len(view), offset)
    else:  # platforms without pread move the file position; a TableRows handle is not shared
        os.lseek(handle, offset, os.SEEK_SET)
        data = os.read(handle, len(view))
    view[:len(data)] = data
    return len(data)
