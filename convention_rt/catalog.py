"""The catalog format: read (streamed in chunks), validate and write.

A catalog is a FITS file with three HDUs (see ``docs/catalog-format.md``):

* the primary HDU, whose header carries ``CRTFMT`` / ``CRTVER`` and provenance;
* ``OBJECTS``: one row per object: ``OBJECT_ID``, ``RA``, ``DEC``,
  ``FIRST_EPOCH``, ``N_EPOCHS`` and optionally ``LABEL`` and ``TYPING``;
* ``EPOCHS``: one row per epoch, grouped by object: ``OBJECT_ID``, ``MJD`` and
  either ``BAND`` + a single-band ``STAMP`` (layout ``FRAMES``) or a multi-band
  ``STAMP`` cube + optional ``PRESENT`` flags (layout ``CUBES``), with the band
  names declared in the ``BANDS`` keyword.

:class:`Catalog` reads the rows of each chunk with positional reads
(:class:`~convention_rt.fits_rows.TableRows`) and yields :class:`ObjectChunk`
batches of bounded size, so catalogs far larger than memory stream through in
constant memory, and a file truncated by another program while it is read
gives a :class:`~convention_rt.errors.CatalogError`, not a crash.  :class:`CatalogWriter` streams epochs to a
temporary file and renames it into place only when complete.
"""

from __future__ import annotations

import math
import os
import re
import stat
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from astropy.io import fits
from numpy.typing import ArrayLike, NDArray

from convention_rt import preprocess
from convention_rt.errors import BadInputError, CatalogError, UsageError
from convention_rt.fits_rows import TableRows, read_at
from convention_rt.fits_stream import AtomicWriter, StreamingTable
from convention_rt.model_card import ModelCard
from convention_rt.object_arrays import MJD_LIMIT, mjd_problem
from convention_rt.photometry import (HEADER_KEYWORDS, ZERO_POINT_COLUMN, ZERO_POINT_RANGE, DomainCheck, Photometry,
                                     compare)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATUS_OK",
    "COMPRESSION_MAGIC",
    "Catalog",
    "CatalogSummary",
    "CatalogWarning",
    "CatalogWriter",
    "ObjectChunk",
    "chunk_from_objects",
    "clean_frames",
    "summarise",
]

FORMAT_NAME = "CONVENTION-RT CATALOG"
FORMAT_VERSION = 1
STATUS_OK = "ok"
MOSTLY_BAD_FRACTION = 0.5
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

StampPolicy = Literal["crop", "pad", "error"]
InvalidPolicy = Literal["flag", "warn", "raise"]
Layout = Literal["FRAMES", "CUBES"]

_STAMP_POLICIES = ("crop", "pad", "error")
_INVALID_POLICIES = ("flag", "warn", "raise")


@dataclass
class ObjectChunk:
    """A batch of objects with their single-band frames (ragged).

    Attributes
    ----------
    object_ids : ndarray, shape (n,)
        int64 or str, as stored in the catalog.
    ra, dec : ndarray, shape (n,), float64
    labels : ndarray, shape (n,), str, or None
        Class labels ("" where unknown), when the catalog has them.
    typing : ndarray, shape (n,), str, or None
        ``"spec"``, ``"phot"`` or "" per object, when the catalog has them.
    frames : ndarray, shape (F, H, W), float32, native byte order
        Time-ordered frames of all objects, stacked.
    band : ndarray, shape (F,), int32
        Index of each frame's band in :attr:`bands`.
    mjd : ndarray, shape (F,), float64
    n_bad : ndarray, shape (F,), int32
        Bad pixels in each frame: NaN, inf, or of magnitude above
        :data:`convention_rt.preprocess.MAX_PIXEL_MAGNITUDE` (replaced later, by normalisation).
    offsets : ndarray, shape (n + 1,), int64
        Object ``i`` owns frames ``offsets[i]:offsets[i + 1]``.
    bands : tuple of str
        Band names of the catalog.
    invalid : list of str
        Per object: "" when usable, else why it cannot be classified.
    notes : list of list of str
        Per object: things fixed or dropped on the way (sorted epochs, bad pixels, ...).
    """

    object_ids: NDArray[Any]
    ra: NDArray[np.float64]
    dec: NDArray[np.float64]
    labels: NDArray[np.str_] | None
    typing: NDArray[np.str_] | None
    frames: NDArray[np.float32]
    band: NDArray[np.int32]
    mjd: NDArray[np.float64]
    n_bad: NDArray[np.int32]
    offsets: NDArray[np.int64]
    bands: tuple[str, ...]
    invalid: list[str]
    notes: list[list[str]]

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])

    def status(self, i: int) -> str:
        """One-word-per-item status of object ``i``: ``ok`` or ``flagged:<why>``, plus notes."""
        head = f"flagged:{self.invalid[i]}" if self.invalid[i] else STATUS_OK
        return ";".join([head, *self.notes[i]])


@dataclass
class CatalogSummary:
    """What :func:`summarise` found in a catalog.

    ``invalid`` and ``notes`` count objects per problem; ``problems`` holds one
    line per problem of the catalog as a whole (:attr:`Catalog.problems`).
    Read for a model (``summarise(..., card=...)``), ``low_information`` counts
    the objects the model would see fewer frames of than its validated minimum,
    and ``domain`` says how the catalog's photometry relates to the model's.
    """

    path: str
    layout: str
    stamp_shape: tuple[int, int]
    n_objects: int = 0
    n_epochs: int = 0
    n_frames: int = 0
    frames_per_band: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    typing: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    bad_pixels: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    photometry: Photometry = field(default_factory=Photometry)
    domain: DomainCheck | None = None
    low_information: Counter = field(default_factory=Counter)

    @property
    def n_invalid(self) -> int:
        """Objects that cannot be classified."""
        return sum(self.invalid.values())

    @property
    def ok(self) -> bool:
        """No object is flagged and the catalog as a whole has no problem."""
        return not self.n_invalid and not self.problems


def _fail(path: Path | str, message: str, **where: Any) -> CatalogError:
    return CatalogError(str(path), message, **where)


def _positive_int(value: object, name: str, what: str, minimum: int = 1) -> int:
    """``value`` as an int after checking it is a whole number of at least ``minimum`` (UsageError naming ``name``)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise UsageError(f"{name} must be a whole number of at least {minimum} ({what}), got {value!r}")
    return int(value)


def _positive_shape(shape: object) -> tuple[int, int]:
    """``stamp_shape`` as (height, width) after checking both sides are whole numbers of at least 1."""
    if (isinstance(shape, str | bytes) or not hasattr(shape, "__len__") or len(shape) != 2  # type: ignore[arg-type]
            or any(isinstance(side, bool) or not isinstance(side, int | np.integer) or side < 1
                   for side in shape)):  # type: ignore[union-attr]
        raise UsageError(f"stamp_shape must be (height, width) in pixels, each at least 1, got {shape!r}")
    return int(shape[0]), int(shape[1])  # type: ignore[index]


def _check_text(text: str, what: str) -> None:
    """Refuse text a FITS character column cannot hold exactly (printable ASCII only)."""
    if not all(" " <= char <= "~" for char in text):
        bad = next(char for char in text if not " " <= char <= "~")
        raise UsageError(f"{what} holds {bad!r}, which a FITS character column cannot store: catalog text "
                         "(ids, labels, band names) must be printable ASCII; transliterate or replace it")


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
        flagged with a warning, or stop the read with a :class:`CatalogError`.
        Problems of the catalog as a whole (``EPOCHS`` rows that no object
        owns) stop the read under ``raise`` and give one :class:`CatalogWarning`
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
        stamp_policy: StampPolicy = "error",
        on_invalid: InvalidPolicy = "flag",
        target: Photometry | None = None,
    ) -> None:
        if stamp_policy not in _STAMP_POLICIES:
            raise UsageError(f"stamp_policy must be one of {_STAMP_POLICIES}, got {stamp_policy!r}")
        if on_invalid not in _INVALID_POLICIES:
            raise UsageError(f"on_invalid must be one of {_INVALID_POLICIES}, got {on_invalid!r}")
        self.path = Path(path)
        self.stamp_size = int(stamp_size)
        self.stamp_policy = stamp_policy
        self.on_invalid = on_invalid
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
        if self.on_invalid == "raise":
            raise error
        self.domain_problem = str(error)
        self.problems.append(self.domain_problem)
        if self.on_invalid == "warn":
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
        if self.on_invalid == "raise":
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
    def iter_chunks(self, max_objects: int = 1024, max_epochs: int = 65536, *, start: int = 0,
                    stop: int | None = None) -> Iterator[ObjectChunk]:
        """Yield the catalog in chunks of at most ``max_objects`` objects.

        A chunk also stops before exceeding ``max_epochs`` epoch rows (an
        object with more rows than that comes alone), so memory stays bounded
        whatever the catalog's size.

        Parameters
        ----------
        max_objects, max_epochs : int
            Bounds of a chunk.
        start, stop : int, optional
            Read only the objects of OBJECTS rows ``start:stop`` (default: all),
            e.g. one worker's share of the catalog.

        Yields
        ------
        ObjectChunk

        Raises
        ------
        CatalogError
            Under ``on_invalid="raise"``, at the first invalid object; and
            whenever the file was truncated or rewritten since it was opened.
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
            yield self._read_chunk(first, end)
            first = end

    def _read_chunk(self, start: int, stop: int) -> ObjectChunk:
        n = stop - start
        first = self._first[start:stop].tolist()
        count = self._count[start:stop].tolist()
        invalid = [""] * n
        notes: list[list[str]] = [[] for _ in range(n)]
        objects = self._objects.read(start, stop)

        n_epochs = self.n_epochs
        for i in range(n):
            if self._duplicate[start + i]:
                invalid[i] = "duplicate_id"
            elif count[i] < 0 or first[i] < 0 or first[i] > n_epochs or count[i] > n_epochs - first[i]:
                invalid[i] = "epoch_rows_out_of_range"  # (checked without forming first + count)
            elif count[i] == 0:
                invalid[i] = "no_epochs"

        # Rows of the valid objects, in object order, read as few contiguous runs.
        usable = np.array([not reason for reason in invalid], dtype=bool)
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
        resorted: NDArray[np.intp] = np.zeros(0, dtype=np.intp)
        if self.layout == "FRAMES":  # time order now, on the rows read: no second copy of the frames later
            order, resorted = _time_order(mjd, row_offsets)
            if order is not None:
                epochs, mjd = epochs[order], mjd[order]

        epoch_ids = epochs[self._f_epoch_object]
        object_ids = objects[self._f_object_id]
        if object_ids.dtype.kind == "S":
            epoch_ids, object_ids = np.char.strip(epoch_ids), np.char.strip(object_ids)
        scale = self._flux_scale(epochs)
        for i in np.flatnonzero(usable):
            block = slice(row_offsets[i], row_offsets[i + 1])
            if np.any(epoch_ids[block] != object_ids[i]):
                invalid[i] = "epoch_rows_belong_to_another_object"
            elif problem := mjd_problem(mjd[block]):
                invalid[i] = problem
            elif self.domain is not None and self.domain.reason:
                invalid[i] = self.domain.reason
                if self.domain.note:
                    notes[i].append(self.domain.note)
            elif isinstance(scale, np.ndarray) and not np.all(np.isfinite(scale[block])):
                invalid[i] = "out_of_domain:zero_point"
                notes[i].append(f"epochs_without_zero_point={int(np.count_nonzero(~np.isfinite(scale[block])))}")

        stamps = self._stamps(epochs[self._f_stamp])
        if isinstance(scale, np.ndarray) or scale != 1.0:  # in float64, then rounded once: exact to float32
            factor = np.where(np.isfinite(scale), scale, 1.0).reshape((-1,) + (1,) * (stamps.ndim - 1)) \
                if isinstance(scale, np.ndarray) else scale
            with np.errstate(invalid="ignore", over="ignore"):
                stamps = np.multiply(stamps, factor, dtype=np.float64).astype(np.float32)
        if self.layout == "FRAMES":
            band = self._band_index(epochs[self._f_band], row_offsets, invalid, notes)
            frame_offsets = row_offsets
            frames = stamps
            frame_mjd = mjd
        else:
            present = None if self._f_present is None else epochs[self._f_present] == ord("T")
            separated = preprocess.separate_bands(stamps, mjd, row_offsets, present)
            frames, band, frame_mjd, frame_offsets = (
                separated.frames, separated.plane, separated.mjd, separated.offsets)
        del epochs, epoch_ids, stamps  # everything needed is copied out: free the rows read

        for i in resorted:
            notes[i].append("epochs_sorted_by_time")
        frames, band, frame_mjd, n_bad, frame_offsets = clean_frames(
            frames, band, frame_mjd, frame_offsets, invalid, notes, sort=False)
        chunk = ObjectChunk(
            object_ids=(self._text(object_ids, "OBJECT_ID", start) if object_ids.dtype.kind == "S"
                        else object_ids.astype(np.int64)),
            ra=objects[self._f_ra].astype(np.float64),
            dec=objects[self._f_dec].astype(np.float64),
            labels=None if self._f_label is None else self._text(objects[self._f_label], "LABEL", start),
            typing=None if self._f_typing is None else self._text(objects[self._f_typing], "TYPING", start),
            frames=frames, band=band, mjd=frame_mjd, n_bad=n_bad, offsets=frame_offsets,
            bands=self.bands, invalid=invalid, notes=notes,
        )
        self._apply_invalid_policy(chunk)
        return chunk

    def _flux_scale(self, epochs: np.ndarray) -> float | NDArray[np.float64]:
        """Factor that puts the stamps of the rows read in the target's unit: one number, or one per row.

        1 without a target or when the fluxes cannot be converted (the objects are flagged then).
        """
        domain = self.domain
        if domain is None or domain.reason:
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

    def _band_index(self, raw: np.ndarray, row_offsets: NDArray[np.int64],
                    invalid: list[str], notes: list[list[str]]) -> NDArray[np.int32]:
        """Index of each row's band in ``self.bands``; -1 for names not declared in BANDS."""
        names = np.char.strip(raw)
        lookup = {name.encode(): index for index, name in enumerate(self.bands)}
        uniques, inverse = np.unique(names, return_inverse=True)
        codes = np.array([lookup.get(u, -1) for u in uniques], dtype=np.int32)
        band = codes[inverse.reshape(-1)] if names.size else np.zeros(0, dtype=np.int32)
        if np.any(band < 0):
            unknown = sorted(u.decode(errors="replace") for u, c in zip(uniques, codes) if c < 0)
            for i in range(len(invalid)):
                block = band[row_offsets[i]:row_offsets[i + 1]]
                dropped = int(np.count_nonzero(block < 0))
                if dropped and not invalid[i]:
                    notes[i].append(f"unknown_band_frames={dropped}({'/'.join(unknown)})")
        return band

    def _apply_invalid_policy(self, chunk: ObjectChunk) -> None:
        catalog_wide = self.domain.reason if self.domain is not None else ""
        for i, reason in enumerate(chunk.invalid):
            if not reason or (catalog_wide and reason == catalog_wide):  # said once, when the catalog was opened
                continue
            message = f"{self.path}: OBJECTS: object {chunk.object_ids[i]}: {reason.replace('_', ' ')}"
            if self.on_invalid == "raise":
                raise CatalogError(str(self.path), reason.replace("_", " "), hdu="OBJECTS",
                                   object_id=chunk.object_ids[i])
            if self.on_invalid == "warn":
                warnings.warn(message, stacklevel=3)


def _check_photometry(photometry: Any, header: dict[str, Any]) -> Photometry:
    """``photometry`` if a writer can declare it, agreeing with any contract keyword in ``header``."""
    if not isinstance(photometry, Photometry):
        raise UsageError(f"photometry must be a convention_rt.photometry.Photometry declaring what the stamps are "
                         f"(survey profile, pixel scale, flux unit and zero point, sky, stamp kind), got "
                         f"{photometry!r}")
    missing = [k for k in photometry.undeclared() if k != HEADER_KEYWORDS["zero_point"]]
    if missing:
        raise UsageError(f"photometry must declare every field of the photometric contract; missing "
                         f"{', '.join(missing)} ({photometry.describe()})")
    declared = photometry.header()
    for keyword, item in header.items():
        given = item[0] if isinstance(item, tuple) else item
        if keyword.upper() == ZERO_POINT_COLUMN and photometry.zero_point_per_epoch:
            raise UsageError("header keyword MAGZP: the zero point varies per epoch (the MAGZP column); remove it")
        if keyword.upper() in declared and not _same_value(given, declared[keyword.upper()][0]):
            raise UsageError(f"header keyword {keyword.upper()} = {given!r} disagrees with the photometry "
                             f"declared ({declared[keyword.upper()][0]!r}); remove it or fix one of them")
    return photometry


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return str(a).strip().lower() == str(b).strip().lower()
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return a is b or (isinstance(a, (bool, np.bool_)) and isinstance(b, (bool, np.bool_)) and bool(a) == bool(b))
    return math.isclose(float(a), float(b), rel_tol=1e-9)


def _repeats(ids: np.ndarray) -> NDArray[np.bool_]:
    """True for every occurrence of an id after its first."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    repeat = np.zeros(ids.shape[0], dtype=bool)
    repeat[order[1:]] = sorted_ids[1:] == sorted_ids[:-1]
    return repeat


def chunk_from_objects(
    objects: Sequence[tuple[ArrayLike, Sequence[str], ArrayLike]],
    bands: Sequence[str],
    object_ids: Sequence[Any] | None = None,
    stamp_size: int = 32,
) -> ObjectChunk:
    """Build a chunk from objects held in memory (alert streams, the Python API).

    The same checks as for catalogs apply (time order, unknown bands, bad pixels).

    Parameters
    ----------
    objects : sequence of (stamps, bands, mjd)
        Per object: stamps (T, H, W) float, band names (T,), mjd (T,) float.
    bands : sequence of str
        Known band names; frames in other bands are dropped and noted.
    object_ids : sequence, optional
        Ids for the output (default 0..n-1).
    stamp_size : int
        Required stamp side.

    Raises
    ------
    BadInputError
        Stamps of the wrong shape, or lengths that disagree.
    """
    n = len(objects)
    ids = np.arange(n) if object_ids is None else np.asarray(object_ids)
    if ids.shape != (n,):
        raise BadInputError(f"object_ids has shape {ids.shape} for {n} objects")
    lookup = {name: index for index, name in enumerate(bands)}
    frames, band, mjd, counts = [], [], [], []
    invalid = [""] * n
    notes: list[list[str]] = [[] for _ in range(n)]
    for i, (stamps, names, times) in enumerate(objects):
        stamps = np.asarray(stamps, dtype=np.float32)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        names = [str(b) for b in names]
        if stamps.ndim == 2:
            stamps = stamps[None]
        if stamps.shape[1:] != (stamp_size, stamp_size) or not (stamps.shape[0] == times.size == len(names)):
            raise BadInputError(f"object {ids[i]}: stamps {stamps.shape}, {len(names)} bands and {times.size} "
                                f"times must agree as (T, {stamp_size}, {stamp_size}), (T,), (T,)")
        codes = np.array([lookup.get(name, -1) for name in names], dtype=np.int32)
        if (codes < 0).any():
            unknown = "/".join(sorted({name for name, c in zip(names, codes) if c < 0}))
            notes[i].append(f"unknown_band_frames={int((codes < 0).sum())}({unknown})")
        if problem := mjd_problem(times):
            invalid[i] = problem
        elif times.size == 0:
            invalid[i] = "no_epochs"
        frames.append(stamps)
        band.append(codes)
        mjd.append(times)
        counts.append(times.size)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    all_frames = np.concatenate(frames) if n else np.zeros((0, stamp_size, stamp_size), np.float32)
    cleaned = clean_frames(all_frames, np.concatenate(band) if n else np.zeros(0, np.int32),
                           np.concatenate(mjd) if n else np.zeros(0), offsets, invalid, notes)
    return ObjectChunk(object_ids=ids, ra=np.full(n, np.nan), dec=np.full(n, np.nan), labels=None, typing=None,
                       frames=cleaned[0], band=cleaned[1], mjd=cleaned[2], n_bad=cleaned[3], offsets=cleaned[4],
                       bands=tuple(bands), invalid=invalid, notes=notes)


def clean_frames(frames: NDArray[np.float32], band: NDArray[np.int32], mjd: NDArray[np.float64],
                 offsets: NDArray[np.int64], invalid: list[str], notes: list[list[str]], *,
                 sort: bool = True) -> tuple[NDArray[np.float32], NDArray[np.int32], NDArray[np.float64],
                                             NDArray[np.int32], NDArray[np.int64]]:
    """The checks every source of frames goes through (catalogs and in-memory objects).

    Frames of invalid objects and of unknown bands (``band < 0``) are removed;
    frames are sorted by time within each object (noted when they were not);
    bad pixels are counted and frames that are mostly bad are dropped (noted);
    objects left without frames become invalid.  ``invalid`` and ``notes`` are
    updated in place.

    Returns
    -------
    frames, band, mjd, n_bad, offsets
        As in :class:`ObjectChunk`.
    """
    n = offsets.shape[0] - 1
    keep = band >= 0
    for i in range(n):
        if invalid[i]:
            keep[offsets[i]:offsets[i + 1]] = False
    if sort:
        order, resorted = _time_order(mjd, offsets)
        if order is not None:
            for i in resorted:
                notes[i].append("epochs_sorted_by_time")
            frames, band, mjd, keep = frames[order], band[order], mjd[order], keep[order]
    frames, band, mjd, offsets = _compress(frames, band, mjd, offsets, keep)

    n_bad = preprocess.count_bad_pixels(frames)
    mostly_bad = n_bad > MOSTLY_BAD_FRACTION * frames.shape[1] * frames.shape[2]
    for i in range(n):
        block = slice(offsets[i], offsets[i + 1])
        bad_pixels = int(n_bad[block].sum())
        if bad_pixels:
            notes[i].append(f"bad_pixels={bad_pixels}")
            dropped = int(mostly_bad[block].sum())
            if dropped:
                notes[i].append(f"mostly_bad_frames_dropped={dropped}")
    if mostly_bad.any():
        keep = ~mostly_bad
        frames, band, mjd, offsets = _compress(frames, band, mjd, offsets, keep)
        n_bad = n_bad[keep]
    for i in range(n):
        if not invalid[i] and offsets[i + 1] == offsets[i]:
            if any(note.startswith("mostly_bad_frames_dropped") for note in notes[i]):
                invalid[i] = "all_frames_mostly_bad"
            else:
                invalid[i] = "no_usable_frames"
    return frames, band, mjd, n_bad, offsets


def _time_order(mjd: NDArray[np.float64], offsets: NDArray[np.int64]) -> tuple[NDArray[np.intp] | None,
                                                                              NDArray[np.intp]]:
    """The permutation that puts each object's epochs in time order, and the objects it reorders.

    Returns ``(None, [])`` when every object's epochs are already in order.
    """
    nothing = np.zeros(0, dtype=np.intp)
    if mjd.size < 2:
        return None, nothing
    owner = np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets))
    backwards = (np.diff(mjd) < 0) & (owner[1:] == owner[:-1])
    if not backwards.any():
        return None, nothing
    return np.lexsort((mjd, owner)), np.unique(owner[1:][backwards])


def _decode(values: np.ndarray) -> NDArray[np.str_]:
    """FITS ASCII strings (bytes) as stripped str; raises UnicodeDecodeError on other bytes."""
    return np.char.strip(np.char.decode(np.asarray(values), "ascii"))


def _compress(frames, band, mjd, offsets, keep):
    """Keep the frames where ``keep``; offsets follow."""
    if keep.all():
        return frames, band, mjd, offsets
    kept_before = np.zeros(keep.shape[0] + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    new_offsets = kept_before[offsets]
    return (np.ascontiguousarray(frames[keep]), np.ascontiguousarray(band[keep]),
            np.ascontiguousarray(mjd[keep]), new_offsets)


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


def summarise(catalog: Catalog, max_objects: int = 1024, *, card: ModelCard | None = None) -> CatalogSummary:
    """Read a whole catalog, chunk by chunk, and count what it holds.

    Parameters
    ----------
    catalog : Catalog
        Opened with ``target=card.domain.photometry`` to check it against a model's domain.
    max_objects : int
        Objects per chunk.
    card : ModelCard, optional
        The model the catalog is meant for: objects of which the model would see
        fewer frames (in its bands, at most its ``seq_len``) than its domain's
        ``min_frames`` are counted in ``low_information["few_frames"]``.

    Returns
    -------
    CatalogSummary
    """
    summary = CatalogSummary(path=str(catalog.path), layout=catalog.layout,
                             stamp_shape=catalog.stamp_shape,
                             n_objects=catalog.n_objects, n_epochs=catalog.n_epochs,
                             problems=list(catalog.problems), photometry=catalog.photometry,
                             domain=catalog.domain)
    min_frames = card.domain.min_frames if card is not None and card.domain is not None else 0
    known = np.array([card.band_id(b) > 0 for b in catalog.bands] if card is not None else [], dtype=bool)
    for chunk in catalog.iter_chunks(max_objects=max_objects):
        if min_frames:
            in_model_bands = known[chunk.band] if chunk.band.size else np.zeros(0, dtype=bool)
            for i in range(len(chunk)):
                seen = min(int(in_model_bands[chunk.offsets[i]:chunk.offsets[i + 1]].sum()), card.seq_len)
                if not chunk.invalid[i] and 0 < seen < min_frames:
                    summary.low_information["few_frames"] += 1
                    examples = summary.examples.setdefault("low_information:few_frames", [])
                    if len(examples) < 5:
                        examples.append(str(chunk.object_ids[i]))
        summary.n_frames += chunk.frames.shape[0]
        summary.bad_pixels += int(chunk.n_bad.sum())
        for index, frames in zip(*np.unique(chunk.band, return_counts=True)):
            summary.frames_per_band[catalog.bands[index]] += int(frames)
        if chunk.labels is not None:
            summary.classes.update(str(label) or "(none)" for label in chunk.labels)
        if chunk.typing is not None:
            summary.typing.update(str(kind) or "(none)" for kind in chunk.typing)
        for i in range(len(chunk)):
            problems = ([chunk.invalid[i]] if chunk.invalid[i] else []) + [
                note.split("=")[0] for note in chunk.notes[i]]
            for problem in problems:
                counter = summary.invalid if problem == chunk.invalid[i] else summary.notes
                counter[problem] += 1
                examples = summary.examples.setdefault(problem, [])
                if len(examples) < 5:
                    examples.append(str(chunk.object_ids[i]))
    return summary


class CatalogWriter(AtomicWriter):
    """Write a catalog object by object, streaming epochs to disk.

    The file is built under a temporary name in the destination folder and
    renamed into place by :meth:`close`; if anything fails (or the ``with``
    block raises) the temporary file is removed and nothing is left behind.

    Parameters
    ----------
    path : str or Path
        Destination file.
    bands : sequence of str
        Band names of the catalog (the ``BANDS`` keyword).
    photometry : Photometry
        What the stamps are, written to the primary header (``PROFILE``,
        ``PIXSCALE``, ``FLUXUNIT``, ``MAGZP``, ``SKYSUB``, ``CUTOUT``): required,
        every field declared.  Only the zero point of ``DN`` may be unknown
        (None); with ``zero_point_per_epoch`` it is the ``MAGZP`` column of
        ``EPOCHS``, given to :meth:`add_object` per epoch.
    layout : {"FRAMES", "CUBES"}
        Single-band frames with a ``BAND`` column, or multi-band cubes whose
        planes follow ``bands``.
    stamp_shape : (int, int)
        Stamp height and width.
    id_width : int or None
        None for integer (int64) object ids; the maximum length for string ids.
    label_width : int
        Maximum length of class labels (0: no LABEL/TYPING columns).

    Notes
    -----
    Text (string ids, labels, band names) must be printable ASCII, the
    content of a FITS character column; string ids must not start or end with
    a space.  Anything else is refused with a :class:`UsageError` naming the
    object before any of it is written, so what is written reads back exactly.
    header : dict, optional
        Extra primary-header keywords (provenance), e.g. ``{"SOURCE": "..."}``;
        a keyword of the photometric contract here must agree with ``photometry``.
    overwrite : bool
        Replace an existing file.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[str],
        *,
        photometry: Photometry,
        layout: Layout = "FRAMES",
        stamp_shape: tuple[int, int] = (32, 32),
        id_width: int | None = None,
        label_width: int = 16,
        header: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        bands = tuple(str(b) for b in bands)
        if not bands or len(set(bands)) != len(bands) or any("," in b or b != b.strip() or not b for b in bands):
            raise UsageError(f"bands must be distinct non-empty names without commas or spaces at either end, "
                             f"got {bands}")
        for band in bands:
            _check_text(band, f"band name {band!r}")
        if layout not in ("FRAMES", "CUBES"):
            raise UsageError(f"layout must be FRAMES or CUBES, got {layout!r}")
        self.photometry = _check_photometry(photometry, header or {})
        self.bands = bands
        self.layout = layout
        self.stamp_shape = _positive_shape(stamp_shape)
        self.id_width = None if id_width is None else _positive_int(id_width, "id_width", "characters of string "
                                                                    "object ids (None for integer ids)")
        self.label_width = _positive_int(label_width, "label_width", "characters of the LABEL column; 0 for "
                                                                  "none", minimum=0)
        self._band_width = max(8, max(len(b) for b in bands))
        self._objects: dict[str, list[Any]] = {k: [] for k in
                                                ("OBJECT_ID", "RA", "DEC", "FIRST_EPOCH", "N_EPOCHS",
                                                 "LABEL", "TYPING")}
        self._seen_ids: set[Any] = set()
        columns, table_header = self._epoch_columns()
        self._table = StreamingTable(
            self.path, columns, name="EPOCHS", overwrite=overwrite, table_header=table_header,
            primary_header={"CRTFMT": (FORMAT_NAME, "file format"),
                            "CRTVER": (FORMAT_VERSION, "file format version"), **(header or {}),
                            **self.photometry.header()},
        )

    def _epoch_columns(self) -> tuple[list[fits.Column], dict[str, Any]]:
        height, width = self.stamp_shape
        id_format = "K" if self.id_width is None else f"{self.id_width}A"
        if self.layout == "FRAMES":
            columns = [
                fits.Column("OBJECT_ID", id_format),
                fits.Column("MJD", "D", unit="d"),
                fits.Column("BAND", f"{self._band_width}A"),
                fits.Column("STAMP", f"{height * width}E", dim=f"({width},{height})"),
            ]
        else:
            nb = len(self.bands)
            columns = [
                fits.Column("OBJECT_ID", id_format),
                fits.Column("MJD", "D", unit="d"),
                fits.Column("STAMP", f"{nb * height * width}E", dim=f"({width},{height},{nb})"),
                fits.Column("PRESENT", f"{nb}L"),
            ]
        if self.photometry.zero_point_per_epoch:
            columns.append(fits.Column(ZERO_POINT_COLUMN, "D", unit="mag"))
        header = {"LAYOUT": (self.layout, "FRAMES (single-band) or CUBES (multi-band)"),
                  "BANDS": (",".join(self.bands), "band names; cube planes follow this order")}
        return columns, header

    def _check_id(self, object_id: Any) -> Any:
        if self.id_width is None:
            if isinstance(object_id, (bool, np.bool_)) or not isinstance(object_id, (int, np.integer)):
                raise UsageError(f"object id {object_id!r} must be an integer (this writer has integer ids)")
            value = int(object_id)
            if not INT64_MIN <= value <= INT64_MAX:
                raise UsageError(f"object id {value} does not fit in int64 (OBJECT_ID is K): write the ids as "
                                 "strings (id_width=20 holds any 64-bit integer in decimal)")
        else:
            value = str(object_id)
            _check_text(value, f"object id {value!r}")
            if not value or len(value) > self.id_width or value != value.strip():
                raise UsageError(f"object id {value!r} must have 1..{self.id_width} characters, without "
                                 "spaces at either end")
        if value in self._seen_ids:
            raise UsageError(f"object id {value!r} was written already")
        return value

    def add_object(
        self,
        object_id: int | str,
        *,
        mjd: ArrayLike,
        stamps: ArrayLike,
        bands: Sequence[str] | None = None,
        present: ArrayLike | None = None,
        ra: float = math.nan,
        dec: float = math.nan,
        label: str = "",
        typing: str = "",
        zero_point: ArrayLike | None = None,
    ) -> None:
        """Append one object and its epochs.

        Parameters
        ----------
        object_id : int or str
        mjd : array_like, shape (T,), float64
            Epoch times; written in the order given (the reader sorts).
        stamps : array_like, float32
            ``(T, H, W)`` single-band stamps (FRAMES) or ``(T, B, H, W)`` cubes (CUBES).
        bands : sequence of str, length T
            Band of each stamp (FRAMES only).
        present : array_like, shape (T, B), bool, optional
            Which cube planes exist (CUBES only; default all).
        ra, dec : float
            Position in degrees (NaN when unknown).
        label : str
            Class label, "" when unknown.
        typing : {"", "spec", "phot"}
            How the label was obtained.
        zero_point : array_like, shape (T,), float64
            AB zero point of each epoch's stamp (the ``MAGZP`` column): required
            when the writer's photometry has ``zero_point_per_epoch``, refused otherwise.
        """
        value = self._check_id(object_id)
        mjd_arr = np.asarray(mjd, dtype=np.float64).reshape(-1)
        stamps_arr = np.asarray(stamps, dtype=np.float32)
        n = mjd_arr.shape[0]
        height, width = self.stamp_shape
        expected = (n, height, width) if self.layout == "FRAMES" else (n, len(self.bands), height, width)
        if stamps_arr.shape != expected:
            raise UsageError(f"object {value}: stamps must have shape {expected}, got {stamps_arr.shape}")
        if mjd_problem(mjd_arr):
            raise UsageError(f"object {value}: mjd must be finite times within +-{MJD_LIMIT:g} days (MJD)")
        if typing not in ("", "spec", "phot"):
            raise UsageError(f"object {value}: typing must be '', 'spec' or 'phot', got {typing!r}")
        _check_text(label, f"object {value}: label {label!r}")
        if len(label) > self.label_width:
            raise UsageError(f"object {value}: label {label!r} is longer than {self.label_width} characters")

        if self.photometry.zero_point_per_epoch:
            if zero_point is None:
                raise UsageError(f"object {value}: the catalog's zero point varies per epoch: give zero_point, "
                                 f"one AB zero point per epoch")
            zero_points = np.asarray(zero_point, dtype=np.float64).reshape(-1)
            low, high = ZERO_POINT_RANGE
            if zero_points.shape != (n,) or not np.all(np.isfinite(zero_points)) \
                    or not np.all((zero_points > low) & (zero_points < high)):
                raise UsageError(f"object {value}: zero_point must hold {n} finite AB zero points between {low:g} "
                                 f"and {high:g}, one per epoch, "
                                 f"got {np.asarray(zero_point).tolist()!r}")
        elif zero_point is not None:
            raise UsageError(f"object {value}: zero_point per epoch given, but the catalog's photometry has one "
                             f"zero point (declare zero_point_per_epoch=True)")
        rows = self._table.empty_rows(n)
        if self.photometry.zero_point_per_epoch:
            rows[ZERO_POINT_COLUMN] = zero_points
        rows["OBJECT_ID"] = value if self.id_width is None else value.encode()
        rows["MJD"] = mjd_arr
        rows["STAMP"] = stamps_arr
        if self.layout == "FRAMES":
            if bands is None or len(bands) != n:
                raise UsageError(f"object {value}: FRAMES layout needs one band name per stamp")
            unknown = set(bands) - set(self.bands)
            if unknown:
                raise UsageError(f"object {value}: bands {sorted(unknown)} are not among {self.bands}")
            rows["BAND"] = np.array([b.encode() for b in bands], dtype=f"S{self._band_width}")
        else:
            flags = np.ones((n, len(self.bands)), dtype=bool) if present is None else np.asarray(present, bool)
            if flags.shape != (n, len(self.bands)):
                raise UsageError(f"object {value}: present must have shape {(n, len(self.bands))}")
            rows["PRESENT"] = np.where(flags, ord("T"), ord("F"))
        first_row = self._table.rows
        self._table.append(rows)
        self._seen_ids.add(value)
        for key, item in (("OBJECT_ID", value), ("RA", float(ra)), ("DEC", float(dec)),
                          ("FIRST_EPOCH", first_row), ("N_EPOCHS", n), ("LABEL", label),
                          ("TYPING", typing)):
            self._objects[key].append(item)

    def close(self) -> Path:
        """Finish the file (the OBJECTS table goes last) and move it into place; returns its path.

        On any error the temporary file is removed before the error propagates.
        """
        try:
            objects = self._objects_hdu()
        except BaseException:
            self.abort()
            raise
        return self._table.close(append_hdus=[objects])

    def _objects_hdu(self) -> fits.BinTableHDU:
        id_format = "K" if self.id_width is None else f"{self.id_width}A"
        o = self._objects
        columns = [
            fits.Column("OBJECT_ID", id_format, array=np.array(o["OBJECT_ID"],
                        dtype=np.int64 if self.id_width is None else f"S{self.id_width}")),
            fits.Column("RA", "D", unit="deg", array=np.array(o["RA"], dtype=np.float64)),
            fits.Column("DEC", "D", unit="deg", array=np.array(o["DEC"], dtype=np.float64)),
            fits.Column("FIRST_EPOCH", "K", array=np.array(o["FIRST_EPOCH"], dtype=np.int64)),
            fits.Column("N_EPOCHS", "K", array=np.array(o["N_EPOCHS"], dtype=np.int64)),
        ]
        if self.label_width:
            columns.append(fits.Column("LABEL", f"{self.label_width}A",
                                       array=np.array(o["LABEL"], dtype=f"U{self.label_width}")))
            columns.append(fits.Column("TYPING", "4A", array=np.array(o["TYPING"], dtype="U4")))
        return fits.BinTableHDU.from_columns(columns, name="OBJECTS")

    def abort(self) -> None:
        """Discard the partial file."""
        self._table.abort()
