"""The catalog reader: open, check and read a catalog file, streamed in chunks.

A catalog is a FITS file with three HDUs (see ``docs/catalog-format.md``):

* the primary HDU, whose header carries ``CRTFMT`` / ``CRTVER`` and provenance;
* ``OBJECTS``: one row per object: ``OBJECT_ID``, ``RA``, ``DEC``,
  ``FIRST_EPOCH``, ``N_EPOCHS`` and optionally ``LABEL`` and ``TYPING``;
* ``EPOCHS``: one row per epoch, grouped by object: ``OBJECT_ID``, ``MJD`` and
  either ``BAND`` + a single-band ``STAMP`` (layout ``FRAMES``) or a multi-band
  ``STAMP`` cube + optional ``PRESENT`` flags (layout ``CUBES``), with the band
  names declared in the ``BANDS`` keyword.

:class:`Catalog` checks the file's structure and its photometric contract
when it is opened, then reads the rows of each chunk with positional reads
(:class:`~convention_rt.fits_rows.TableRows`) and yields them as
:class:`~convention_rt.chunks.EpochChunk` batches of bounded size (stamps at
the size and in the flux unit asked for, nothing else changed), so catalogs far
larger than memory stream through in constant memory, and a file truncated by
another program while it is read gives a :class:`~convention_rt.errors.CatalogError`,
not a crash.  Band separation, time order and bad pixels are the transform
stage's (:mod:`convention_rt.transform`); :meth:`Catalog.iter_chunks` reads
through it.  Catalogs are written by :class:`~convention_rt.catalog_writer.CatalogWriter`.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from convention_rt import preprocess
from convention_rt.chunks import EpochChunk, Layout, ObjectChunk
from convention_rt.errors import CatalogError, UsageError
from convention_rt.fits_rows import TableRows, read_at
from convention_rt.object_arrays import mjd_problem
from convention_rt.photometry import HEADER_KEYWORDS, ZERO_POINT_COLUMN, DomainCheck, Photometry, compare
from convention_rt.policies import OnInvalid, StampPolicy
from convention_rt.status import Note, ObjectStatus, Reason
from convention_rt.transform import read_chunks

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "COMPRESSION_MAGIC",
    "Catalog",
    "CatalogWarning",
    "EpochChunk",
    "ObjectChunk",
]

FORMAT_NAME = "CONVENTION-RT CATALOG"
FORMAT_VERSION = 1


def _fail(path: Path | str, message: str, **where: Any) -> CatalogError:
    return CatalogError(str(path), message, **where)


class CatalogWarning(UserWarning):
    """A problem of the catalog as a whole (not of one object) under ``on_invalid`` flag or warn."""


#: Leading bytes of compressed files: (magic, compression, command that undoes it).
COMPRESSION_MAGIC: tuple[tuple[bytes, str, str], ...] = (
    (b"\x1f\x8b", "gzip", "gunzip -k"),
    (b"BZh", "bzip2", "bunzip2 -k"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k"),
    (b"PK\x03\x04", "zip", "unzip"),
    (b"(\xb5/\xfd", "zstd", "zstd -d"),
    (b"\x1f\x9d", "compress (.Z)", "uncompress"),
)
_SCAN_ROWS = 65536
"""OBJECTS rows read per block when the catalog is opened."""


class Catalog:
    """An open catalog file, read in chunks by positional reads.

    Parameters
    ----------
    path : str or Path
        The catalog FITS file (uncompressed: it is read by random access).
    stamp_size : int
        Side of the stamps the consumer needs (32 for ConvEntion models).
    stamp_policy : {"error", "crop", "pad"}
        What to do with stamps of another size: refuse, centre-crop larger ones,
        or centre-pad smaller ones with each stamp's median background.
    on_invalid : {"flag", "warn", "raise"}
        Objects that cannot be classified are flagged (kept with a reason),
        flagged with a warning, or stop with a :class:`CatalogError`: applied
        once every check has run on a chunk (:func:`convention_rt.policies.apply_on_invalid`),
        by :meth:`iter_chunks` or by the classifier, not by :meth:`iter_epochs`.
        Problems of the catalog as a whole (``EPOCHS`` rows that no object
        owns) stop the opening under ``raise`` and give one :class:`CatalogWarning`
        otherwise; they are listed in :attr:`problems`.
    target : Photometry, optional
        The photometric domain of the model the stamps are read for (its card's
        ``domain.photometry``).  Stamps are converted to its flux unit and zero
        point, exactly; when the catalog's contract differs from it in what
        cannot be converted (survey profile, pixel scale, sky, stamp kind, a flux
        without zero point), or does not declare it, every object is flagged
        ``out_of_domain:<what>`` (or ``domain_unknown:<what>``).  That is a
        problem of the catalog as a whole: listed in :attr:`problems`, a
        :class:`CatalogError` when the catalog is opened under ``raise``, one
        :class:`CatalogWarning` under ``warn``, silent under ``flag``.  An
        epoch without a finite zero point (``EPOCHS.MAGZP``) flags its object
        ``out_of_domain:zero_point``.  None: stamps are read as stored, unchecked.

    Attributes
    ----------
    problems : list of str
        One line per problem of the catalog as a whole, found when it was opened.
    photometry : Photometry
        The contract the catalog declares (fields it does not declare are None).
    domain : DomainCheck or None
        The catalog's contract against ``target`` (None without a target).
    domain_problem : str
        The line of :attr:`problems` saying how the catalog is out of the
        target's domain ("" when it is not, or without a target).

    Raises
    ------
    CatalogError
        When the file is not a readable catalog: not a regular file,
        compressed, missing or corrupt HDUs or columns, wrong dtypes or
        several values per row, stamp shapes against the policy, no objects;
        or, while reading, when another program truncates or rewrites the file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stamp_size: int = 32,
        stamp_policy: StampPolicy | str = StampPolicy.error,
        on_invalid: OnInvalid | str = OnInvalid.flag,
        target: Photometry | None = None,
    ) -> None:
        self.stamp_policy = StampPolicy.parse(stamp_policy, "stamp_policy")
        self.on_invalid = OnInvalid.parse(on_invalid, "on_invalid")
        self.path = Path(path)
        self.stamp_size = int(stamp_size)
        self.problems: list[str] = []
        self.domain: DomainCheck | None = None
        self.domain_problem = ""
        self._handle: int | None = None
        self._hdul: fits.HDUList | None = None
        try:
            self._identity = self._open_handle()
            self._hdul = self._open()
            self._load_structure()
            self._load_photometry(target)
            self._check_coverage()
        except BaseException:
            self.close()
            raise

    # -- opening and structure ------------------------------------------------
    def _open_handle(self) -> os.stat_result:
        """Open the file for positional reads; refuse what is not a regular, uncompressed file."""
        path = self.path
        try:
            # O_NONBLOCK: opening a named pipe must not wait for a writer
            self._handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            status = os.fstat(self._handle)
        except FileNotFoundError:
            raise _fail(path, "no such file") from None
        except IsADirectoryError:
            raise _fail(path, "is a folder, not a catalog file") from None
        except OSError as exc:
            raise _fail(path, f"cannot be read: {exc.strerror or exc}") from exc
        if stat.S_ISDIR(status.st_mode):
            raise _fail(path, "is a folder, not a catalog file")
        if not stat.S_ISREG(status.st_mode):
            kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(status.st_mode) else
                    "a character device" if stat.S_ISCHR(status.st_mode) else
                    "a block device" if stat.S_ISBLK(status.st_mode) else
                    "a socket" if stat.S_ISSOCK(status.st_mode) else "a special file")
            raise _fail(path, f"is {kind}, not a regular file: catalogs are read by random access, "
                        "so save the catalog to a regular file and pass that")
        magic = read_at(self._handle, 8, 0)
        for prefix, kind, command in COMPRESSION_MAGIC:
            if magic.startswith(prefix):
                raise _fail(path, f"is a {kind}-compressed file: decompress it first (e.g. {command} "
                            f"{path.name}); catalogs are read by random access and must be uncompressed FITS")
        return status

    def _open(self) -> fits.HDUList:
        path = self.path
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # headers only: the rows are read by TableRows, never through astropy or a memory map
                hdul = fits.open(path, memmap=False, mode="readonly", lazy_load_hdus=False)
        except (OSError, ValueError, TypeError, IndexError) as exc:
            # astropy's hints name arguments of its API, not options of ours
            reason = re.split(r"[.;]?\s*(?:If this is really a FITS file|try with)", str(exc))[0]
            raise _fail(path, f"not a readable FITS file ({reason})") from exc
        try:
            if caught:  # astropy warns (and goes on) about damaged HDUs: refuse instead
                raise _fail(path, f"not a readable FITS file ({caught[0].message})")
            self._check_not_truncated(hdul)
        except BaseException:
            hdul.close()
            raise
        return hdul

    def _check_not_truncated(self, hdul: fits.HDUList) -> None:
        size = self._identity.st_size
        for index, hdu in enumerate(hdul):
            info = hdul.fileinfo(index)
            header = hdu.header
            if header.get("XTENSION") == "BINTABLE":
                nbytes = header["NAXIS1"] * header["NAXIS2"] + header.get("PCOUNT", 0)
            else:
                nbytes = 0
                if header.get("NAXIS", 0):
                    nbytes = abs(header["BITPIX"]) // 8
                    for axis in range(1, header["NAXIS"] + 1):
                        nbytes *= header[f"NAXIS{axis}"]
            if info["datLoc"] + nbytes > size:
                name = hdu.name or f"HDU {index}"
                raise _fail(
                    self.path,
                    f"file is truncated: {nbytes} data bytes expected from offset "
                    f"{info['datLoc']}, file has {size}",
                    hdu=name,
                )

    def _hdu(self, name: str) -> fits.BinTableHDU:
        indices = [index for index, hdu in enumerate(self._hdul) if hdu.name.strip().upper() == name]
        if len(indices) > 1:
            raise _fail(self.path, f"{len(indices)} HDUs are named {name} (HDUs {indices[0]} and {indices[1]}): "
                        "a catalog has one; remove or rename the others", hdu=name)
        try:
            hdu = self._hdul[name]
        except KeyError:
            raise _fail(self.path, f"missing the {name} HDU (a binary table)") from None
        if not isinstance(hdu, fits.BinTableHDU):
            raise _fail(self.path, "must be a binary table", hdu=name)
        return hdu

    def _table(self, hdu: fits.BinTableHDU) -> TableRows:
        """The rows of ``hdu``, after checking its column names are unique and its row size."""
        seen: dict[str, int] = {}
        for number, name in enumerate(hdu.columns.names, start=1):
            key = name.strip().upper()
            if key in seen:
                raise _fail(self.path, f"column name appears twice (TTYPE{seen[key]} and TTYPE{number}; "
                            "names are case-insensitive): rename or remove one", hdu=hdu.name, column=key)
            seen[key] = number
        try:
            dtype = hdu.columns.dtype.newbyteorder(">")
        except (ValueError, TypeError, KeyError) as exc:
            raise _fail(self.path, f"cannot read the column definitions ({exc})", hdu=hdu.name) from exc
        if dtype.itemsize != hdu.header["NAXIS1"]:
            raise _fail(self.path, f"row size {hdu.header['NAXIS1']} does not match the columns "
                        f"({dtype.itemsize} bytes)", hdu=hdu.name)
        offset = self._hdul.fileinfo(self._hdul.index_of(hdu.name))["datLoc"]
        return TableRows(self._handle, self.path, hdu.name, dtype, offset, hdu.header["NAXIS2"], self._identity)

    def _column(self, hdu: fits.BinTableHDU, table: TableRows, name: str, kinds: str, *, what: str,
                required: bool = True, shape: tuple[int, ...] | None = ()) -> str | None:
        """The field name of column ``name`` in ``table``'s rows, after checking it.

        The column's dtype kind must be in ``kinds``; each row must hold one
        value (``shape=()``), or an array of ``shape`` (``None``: any shape,
        checked by the caller).
        """
        names = {c.strip().upper(): c for c in hdu.columns.names}
        if name not in names:
            if required:
                raise _fail(self.path, "missing column", hdu=hdu.name, column=name)
            return None
        column = hdu.columns[names[name]]
        if column.bscale not in (None, 1) or column.bzero not in (None, 0):
            raise _fail(self.path, "scaled columns (TSCAL/TZERO) are not supported", hdu=hdu.name, column=name)
        field_dtype = table.dtype.fields[names[name]][0]
        kind = "b" if column.format.format == "L" else field_dtype.base.kind
        if kind not in kinds:
            raise _fail(self.path, f"must be {what} (got TFORM {column.format})", hdu=hdu.name, column=name)
        if shape is not None and field_dtype.shape != shape:
            count = int(np.prod(field_dtype.shape))
            dims = f", TDIM {column.dim}" if column.dim else ""
            wanted = "one value" if shape == () else f"shape {shape}"
            raise _fail(self.path, f"must hold {wanted} per row, got {count} (TFORM {column.format}{dims}): "
                        "write one value per row in a column of repeat count 1", hdu=hdu.name, column=name)
        return names[name]

    def _load_structure(self) -> None:
        path = self.path
        primary = self._hdul[0].header
        version = primary.get("CRTVER")
        if primary.get("CRTFMT") != FORMAT_NAME or version is None:
            raise _fail(path, f"not a convention-rt catalog (primary header lacks CRTFMT = '{FORMAT_NAME}')",
                        hdu="PRIMARY", column="CRTFMT")
        if version != FORMAT_VERSION:
            raise _fail(path, f"catalog format version {version} is not supported (this reads {FORMAT_VERSION})",
                        hdu="PRIMARY", column="CRTVER")
        self.header = primary

        objects = self._hdu("OBJECTS")
        epochs = self._hdu("EPOCHS")
        layout = str(epochs.header.get("LAYOUT", "FRAMES")).upper()
        if layout not in ("FRAMES", "CUBES"):
            raise _fail(path, f"LAYOUT must be FRAMES or CUBES, got {layout!r}", hdu="EPOCHS", column="LAYOUT")
        self.layout: Layout = layout  # type: ignore[assignment]
        bands = [b.strip() for b in str(epochs.header.get("BANDS", "")).split(",") if b.strip()]
        if not bands or len(set(bands)) != len(bands):
            raise _fail(path, "keyword BANDS must list distinct band names, e.g. 'g,r,i'",
                        hdu="EPOCHS", column="BANDS")
        self.bands: tuple[str, ...] = tuple(bands)

        self._objects = self._table(objects)
        o = self._objects
        self._f_object_id = self._column(objects, o, "OBJECT_ID", "iuS", what="integer or string")
        self._f_ra = self._column(objects, o, "RA", "f", what="floating point (D)")
        self._f_dec = self._column(objects, o, "DEC", "f", what="floating point (D)")
        self._f_first = self._column(objects, o, "FIRST_EPOCH", "iu", what="integer (K)")
        self._f_count = self._column(objects, o, "N_EPOCHS", "iu", what="integer (K)")
        self._f_label = self._column(objects, o, "LABEL", "S", required=False, what="a string (A)")
        self._f_typing = self._column(objects, o, "TYPING", "S", required=False, what="a string (A)")
        self._id_dtype = o.dtype.fields[self._f_object_id][0]

        self._epochs = self._table(epochs)
        e = self._epochs
        self._f_epoch_object = self._column(epochs, e, "OBJECT_ID", "iuS", what="integer or string")
        if e.dtype.fields[self._f_epoch_object][0].kind != self._id_dtype.kind and not (
            e.dtype.fields[self._f_epoch_object][0].kind in "iu" and self._id_dtype.kind in "iu"
        ):
            raise _fail(path, "OBJECT_ID type differs from OBJECTS.OBJECT_ID", hdu="EPOCHS", column="OBJECT_ID")
        self._f_mjd = self._column(epochs, e, "MJD", "f", what="float64 (D)")
        self._f_zero_point = self._column(epochs, e, ZERO_POINT_COLUMN, "f", required=False, what="float64 (D)")
        if e.dtype.fields[self._f_mjd][0].itemsize != 8:
            raise _fail(path, "must be float64 (TFORM D): float32 loses the time resolution",
                        hdu="EPOCHS", column="MJD")
        self._f_stamp = self._column(epochs, e, "STAMP", "f", what="float32 (E)", shape=None)
        stamp_dtype = e.dtype.fields[self._f_stamp][0]
        if stamp_dtype.base.itemsize != 4:
            raise _fail(path, f"must be float32 (TFORM E), got {stamp_dtype.base}", hdu="EPOCHS", column="STAMP")
        stamp_shape = stamp_dtype.shape
        if layout == "FRAMES":
            self._f_band = self._column(epochs, e, "BAND", "S", what="a string (A)")
            self._f_present = None
            if len(stamp_shape) != 2:
                raise _fail(path, f"FRAMES stamps must be 2-D (TDIM '(W,H)'), got shape {stamp_shape}",
                            hdu="EPOCHS", column="STAMP")
        else:
            self._f_band = None
            if len(stamp_shape) != 3 or stamp_shape[0] != len(bands):
                raise _fail(path, f"CUBES stamps must have shape (bands={len(bands)}, H, W) "
                            f"(TDIM '(W,H,{len(bands)})'), got {stamp_shape}",
                            hdu="EPOCHS", column="STAMP")
            self._f_present = self._column(epochs, e, "PRESENT", "b", required=False, what="logical (L)",
                                           shape=(len(bands),))

        self.stamp_shape: tuple[int, int] = tuple(int(s) for s in stamp_shape[-2:])  # type: ignore[assignment]
        if min(self.stamp_shape, default=0) < 1:
            dim = epochs.columns[self._f_stamp].dim
            raise _fail(path, f"stamps must be at least 1x1 pixels, got {self.stamp_shape[0]}x"
                        f"{self.stamp_shape[1]} (TDIM {dim!r}, TFORM {epochs.columns[self._f_stamp].format}): "
                        "write the stamps with their real size", hdu="EPOCHS", column="STAMP")
        self._check_stamp_shape()
        self.n_objects = o.n_rows
        self.n_epochs = e.n_rows
        if self.n_objects == 0:
            raise _fail(path, "the catalog has no objects", hdu="OBJECTS")
        self._load_objects()

    def _load_objects(self) -> None:
        """Read OBJECT_ID, FIRST_EPOCH and N_EPOCHS of every object (16 bytes + id per object)."""
        n = self.n_objects
        ids = np.empty(n, dtype=self._id_dtype.newbyteorder("="))
        self._first = np.empty(n, dtype=np.int64)
        self._count = np.empty(n, dtype=np.int64)
        for start in range(0, n, _SCAN_ROWS):
            stop = min(start + _SCAN_ROWS, n)
            rows = self._objects.read(start, stop)
            ids[start:stop] = rows[self._f_object_id]
            self._first[start:stop] = rows[self._f_first]
            self._count[start:stop] = rows[self._f_count]
        if ids.dtype.kind == "S":
            ids = np.char.strip(ids)
        self._duplicate = _repeats(ids)

    def _load_photometry(self, target: Photometry | None) -> None:
        """Read the catalog's photometric contract; compare it with ``target`` and apply the policy."""
        try:
            self.photometry = Photometry.from_header(self.header, zero_point_column=self._f_zero_point is not None)
        except ValueError as exc:
            keyword, _, message = str(exc).partition(": ")
            known = keyword in HEADER_KEYWORDS.values()
            raise _fail(self.path, f"{message if known else exc} (see the catalog format's photometric contract)",
                        hdu="PRIMARY", column=keyword if known else None) from exc
        if target is None:
            return
        self.domain = compare(self.photometry, target)
        if self.domain.in_domain:
            return
        undeclared = self.photometry.undeclared()
        fix = (f"declare {', '.join(undeclared)} in the primary header if the stamps are like the model's"
               if not self.domain.differs else "classify it with a model trained on such stamps")
        message = (f"{self.domain.reason}: {self.domain.summary()}; the model was trained on "
                   f"{target.describe()}: its probabilities would mean nothing here ({fix})")
        error = CatalogError(str(self.path), message, hdu="PRIMARY")
        if self.on_invalid == OnInvalid.raise_:
            raise error
        self.domain_problem = str(error)
        self.problems.append(self.domain_problem)
        if self.on_invalid == OnInvalid.warn:
            warnings.warn(str(error), CatalogWarning, stacklevel=3)

    def epochs_per_object(self) -> NDArray[np.int64]:
        """``N_EPOCHS`` of every object, in catalog order, shape (n_objects,), int64 (a copy)."""
        return self._count.copy()

    def _check_coverage(self) -> None:
        """Find EPOCHS rows inside no object's FIRST_EPOCH..FIRST_EPOCH+N_EPOCHS-1 range.

        Works on the objects' ranges (sorted), not on a per-row mask, so memory
        stays proportional to the number of objects.  Ranges are clipped to
        the table without overflow whatever the stored values.
        """
        n = self.n_epochs
        first, count = self._first, self._count
        start = np.clip(first, 0, n)
        room = n - start  # in 0..n
        # where the range starts before row 0, first + count cannot overflow (opposite signs)
        stop = np.where(first >= 0, start + np.minimum(np.maximum(count, 0), room),
                        np.clip(np.where(first < 0, first, 0) + np.maximum(count, 0), 0, n))
        keep = stop > start
        start, stop = start[keep], stop[keep]
        order = np.argsort(start, kind="stable")
        start, stop = start[order], stop[order]
        reach = np.maximum.accumulate(stop) if stop.size else stop
        gap_start = np.concatenate(([0], reach))
        gap_stop = np.concatenate((start, [n]))
        gaps = gap_stop > gap_start
        gap_start, gap_stop = gap_start[gaps], gap_stop[gaps]
        if not gap_start.size:
            return
        orphans = int((gap_stop - gap_start).sum())
        owner = self._epochs.read(int(gap_start[0]), int(gap_start[0]) + 1)[self._f_epoch_object][0]
        owner = owner.decode("ascii", "replace").strip() if isinstance(owner, bytes) else int(owner)
        more = f", and {gap_start.size - 1} more run(s) of rows" if gap_start.size > 1 else ""
        span = f"{gap_start[0]}" if gap_stop[0] - gap_start[0] == 1 else f"{gap_start[0]}..{gap_stop[0] - 1}"
        message = (f"{orphans} row(s) belong to no object (rows {span}, OBJECT_ID {owner}{more}): every row must "
                   "lie in one object's OBJECTS.FIRST_EPOCH..FIRST_EPOCH+N_EPOCHS-1 range; fix those columns "
                   "or remove the rows")
        error = CatalogError(str(self.path), message, hdu="EPOCHS")
        if self.on_invalid == OnInvalid.raise_:
            raise error
        self.problems.append(str(error))
        warnings.warn(str(error), CatalogWarning, stacklevel=3)

    def _check_stamp_shape(self) -> None:
        height, width = self.stamp_shape
        size = self.stamp_size
        if (height, width) == (size, size):
            return
        larger = height >= size and width >= size
        smaller = height <= size and width <= size
        if (self.stamp_policy == "crop" and larger) or (self.stamp_policy == "pad" and smaller):
            return
        hint = "use --stamp-policy crop" if larger else "use --stamp-policy pad" if smaller else \
            "resample the stamps to a square size first"
        raise _fail(self.path, f"stamps are {height}x{width}, the model needs {size}x{size} ({hint})",
                    hdu="EPOCHS", column="STAMP")

    @property
    def id_width(self) -> int | None:
        """Width of string object ids, None for integer ids."""
        return self._id_dtype.itemsize if self._id_dtype.kind == "S" else None

    @property
    def has_labels(self) -> bool:
        """Whether OBJECTS has a LABEL column."""
        return self._f_label is not None

    # -- context management -----------------------------------------------------
    def close(self) -> None:
        """Close the file."""
        handle, self._handle = self._handle, None
        if handle is not None:
            os.close(handle)
        hdul, self._hdul = self._hdul, None
        if hdul is not None:
            hdul.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------
    def iter_epochs(self, max_objects: int = 1024, max_epochs: int = 65536, *, start: int = 0,
                    stop: int | None = None) -> Iterator[EpochChunk]:
        """Yield the catalog's epochs as stored, in chunks of at most ``max_objects`` objects.

        A chunk also stops before exceeding ``max_epochs`` epoch rows (an
        object with more rows than that comes alone), so memory stays bounded
        whatever the catalog's size.  Objects whose rows cannot be read as
        theirs are flagged (and own no epochs): a repeated id, rows out of the
        table, no rows, rows of another object, non-finite or implausible
        times, stamps out of the target's domain, epochs without a zero point.

        Parameters
        ----------
        max_objects, max_epochs : int
            Bounds of a chunk.
        start, stop : int, optional
            Read only the objects of OBJECTS rows ``start:stop`` (default: all),
            e.g. one worker's share of the catalog.

        Yields
        ------
        EpochChunk

        Raises
        ------
        CatalogError
            Whenever the file was truncated or rewritten since it was opened.
        """
        stop = self.n_objects if stop is None else stop
        if max_objects < 1 or max_epochs < 1:
            raise UsageError("max_objects and max_epochs must be at least 1")
        if not 0 <= start <= stop <= self.n_objects:
            raise UsageError(f"objects {start}:{stop} are not within the catalog's 0:{self.n_objects}")
        if self._handle is None:
            raise UsageError(f"{self.path}: the catalog is closed")
        counts = self._count
        first = start
        while first < stop:
            end = first + 1
            rows = max(int(counts[first]), 0)
            while end < stop and end - first < max_objects:
                extra = max(int(counts[end]), 0)
                if rows + extra > max_epochs:
                    break
                rows += extra
                end += 1
            yield self._read_epochs(first, end)
            first = end

    def iter_chunks(self, max_objects: int = 1024, max_epochs: int = 65536, *, start: int = 0,
                    stop: int | None = None) -> Iterator[ObjectChunk]:
        """Yield the catalog as clean single-band frames: :meth:`iter_epochs` through the transform stage.

        See :func:`convention_rt.transform.read_chunks`, which also applies
        ``on_invalid`` (under ``raise``, a :class:`CatalogError` at the first
        object that cannot be classified).
        """
        return read_chunks(self, max_objects, max_epochs, start=start, stop=stop)

    @property
    def domain_flag(self) -> tuple[Reason, str] | None:
        """The flag (reason, fields) every object gets when the catalog is out of the target's domain, else None."""
        return self.domain.flag if self.domain is not None else None

    def _read_epochs(self, start: int, stop: int) -> EpochChunk:
        n = stop - start
        first = self._first[start:stop].tolist()
        count = self._count[start:stop].tolist()
        statuses = [ObjectStatus() for _ in range(n)]
        objects = self._objects.read(start, stop)

        n_epochs = self.n_epochs
        for i in range(n):
            if self._duplicate[start + i]:
                statuses[i].flag_as(Reason.duplicate_id)
            elif count[i] < 0 or first[i] < 0 or first[i] > n_epochs or count[i] > n_epochs - first[i]:
                statuses[i].flag_as(Reason.epoch_rows_out_of_range)  # (checked without forming first + count)
            elif count[i] == 0:
                statuses[i].flag_as(Reason.no_epochs)

        # Rows of the valid objects, in object order, read as few contiguous runs.
        usable = np.array([not status.flagged for status in statuses], dtype=bool)
        lengths = np.where(usable, np.asarray(count, dtype=np.int64), 0)
        row_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=row_offsets[1:])
        run_start = np.asarray(first, dtype=np.int64)[usable]
        run_stop = run_start + lengths[usable]
        if run_start.size:
            joined = run_start[1:] == run_stop[:-1]
            run_start, run_stop = run_start[np.r_[True, ~joined]], run_stop[np.r_[~joined, True]]
        epochs = self._epochs.read_runs(run_start, run_stop)
        mjd = epochs[self._f_mjd].astype(np.float64)

        epoch_ids = epochs[self._f_epoch_object]
        object_ids = objects[self._f_object_id]
        if object_ids.dtype.kind == "S":
            epoch_ids, object_ids = np.char.strip(epoch_ids), np.char.strip(object_ids)
        scale = self._flux_scale(epochs)
        for i in np.flatnonzero(usable):
            block = slice(row_offsets[i], row_offsets[i + 1])
            status = statuses[i]
            if np.any(epoch_ids[block] != object_ids[i]):
                status.flag_as(Reason.epoch_rows_belong_to_another_object)
            elif problem := mjd_problem(mjd[block]):
                status.flag_as(problem)
            elif self.domain is not None and self.domain.flag is not None:
                status.flag_as(*self.domain.flag)
                if self.domain.note:
                    status.note(Note.domain_unknown, names="/".join(self.domain.unknown))
            elif isinstance(scale, np.ndarray) and not np.all(np.isfinite(scale[block])):
                status.flag_as(Reason.out_of_domain, "zero_point")
                status.note(Note.epochs_without_zero_point, int(np.count_nonzero(~np.isfinite(scale[block]))))

        stamps = self._stamps(epochs[self._f_stamp])
        if isinstance(scale, np.ndarray) or scale != 1.0:  # in float64, then rounded once: exact to float32
            factor = np.where(np.isfinite(scale), scale, 1.0).reshape((-1,) + (1,) * (stamps.ndim - 1)) \
                if isinstance(scale, np.ndarray) else scale
            with np.errstate(invalid="ignore", over="ignore"):
                stamps = np.multiply(stamps, factor, dtype=np.float64).astype(np.float32)
        band, unknown, present = None, (), None
        if self.layout == "FRAMES":
            band, unknown = self._band_index(epochs[self._f_band])
        elif self._f_present is not None:
            present = epochs[self._f_present] == ord("T")
        return EpochChunk(
            object_ids=(self._text(object_ids, "OBJECT_ID", start) if object_ids.dtype.kind == "S"
                        else object_ids.astype(np.int64)),
            ra=objects[self._f_ra].astype(np.float64),
            dec=objects[self._f_dec].astype(np.float64),
            labels=None if self._f_label is None else self._text(objects[self._f_label], "LABEL", start),
            typing=None if self._f_typing is None else self._text(objects[self._f_typing], "TYPING", start),
            layout=self.layout, stamps=stamps, band=band, unknown_bands=unknown, present=present, mjd=mjd,
            offsets=row_offsets, bands=self.bands, statuses=statuses,
        )

    def _flux_scale(self, epochs: np.ndarray) -> float | NDArray[np.float64]:
        """Factor that puts the stamps of the rows read in the target's unit: one number, or one per row.

        1 without a target or when the fluxes cannot be converted (the objects are flagged then).
        """
        domain = self.domain
        if domain is None or domain.flag is not None:
            return 1.0
        if domain.scale is not None:
            return domain.scale
        return domain.epoch_scale(epochs[self._f_zero_point].astype(np.float64))

    def _text(self, values: np.ndarray, column: str, start: int) -> NDArray[np.str_]:
        """An OBJECTS string column as stripped str; bytes outside ASCII are refused (FITS ``A`` is ASCII)."""
        try:
            return _decode(values)
        except UnicodeDecodeError:
            bad = next(k for k, value in enumerate(values.tolist()) if not value.isascii())
            raise _fail(self.path, f"row {start + bad} holds non-ASCII bytes {values[bad]!r}: FITS character "
                        "columns hold ASCII text; rewrite the value in ASCII", hdu="OBJECTS",
                        column=column) from None

    def _stamps(self, raw: np.ndarray) -> NDArray[np.float32]:
        """Stamps of the rows read as native float32, cropped or padded to the target size."""
        stamps = np.ascontiguousarray(raw, dtype=np.float32)  # byte-swaps FITS big-endian data
        height, width = self.stamp_shape
        size = self.stamp_size
        if (height, width) == (size, size):
            return stamps
        if height >= size and width >= size:
            top, left = (height - size) // 2, (width - size) // 2
            return np.ascontiguousarray(stamps[..., top:top + size, left:left + size])
        return _pad_with_background(stamps, size)

    def _band_index(self, raw: np.ndarray) -> tuple[NDArray[np.int32], tuple[str, ...]]:
        """Index of each row's band in ``self.bands``, ``-1 - k`` for the ``k``-th name not declared in BANDS."""
        names = np.char.strip(raw)
        lookup = {name.encode(): index for index, name in enumerate(self.bands)}
        uniques, inverse = np.unique(names, return_inverse=True)
        unknown = [u for u in uniques if u not in lookup]
        codes = np.array([lookup[u] if u in lookup else -1 - unknown.index(u) for u in uniques], dtype=np.int32)
        band = codes[inverse.reshape(-1)] if names.size else np.zeros(0, dtype=np.int32)
        return band, tuple(u.decode(errors="replace") for u in unknown)


def _repeats(ids: np.ndarray) -> NDArray[np.bool_]:
    """True for every occurrence of an id after its first."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    repeat = np.zeros(ids.shape[0], dtype=bool)
    repeat[order[1:]] = sorted_ids[1:] == sorted_ids[:-1]
    return repeat


def _decode(values: np.ndarray) -> NDArray[np.str_]:
    """FITS ASCII strings (bytes) as stripped str; raises UnicodeDecodeError on other bytes."""
    return np.char.strip(np.char.decode(np.asarray(values), "ascii"))


def _pad_with_background(stamps: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """Centre-pad stamps (..., h, w) to (..., size, size) with the median of each stamp's good pixels."""
    height, width = stamps.shape[-2:]
    flat = stamps.reshape(-1, height * width).astype(np.float64)
    good = np.abs(flat) <= preprocess.MAX_PIXEL_MAGNITUDE  # NaN, inf and sentinels are bad pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-bad stamps give NaN: counted later
        level = np.nanmedian(np.where(good, flat, np.nan), axis=1) if flat.size else flat[:, 0]
    out = np.repeat(level.astype(np.float32), size * size).reshape(*stamps.shape[:-2], size, size)
    top, left = (size - height) // 2, (size - width) // 2
    out[..., top:top + height, left:left + width] = stamps
    return out

