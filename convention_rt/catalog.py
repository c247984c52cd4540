"""The catalog format: read (streamed from memory maps), validate and write.

A catalog is a FITS file with three HDUs (see ``docs/catalog-format.md``):

* the primary HDU, whose header carries ``CRTFMT`` / ``CRTVER`` and provenance;
* ``OBJECTS``: one row per object: ``OBJECT_ID``, ``RA``, ``DEC``,
  ``FIRST_EPOCH``, ``N_EPOCHS`` and optionally ``LABEL`` and ``TYPING``;
* ``EPOCHS``: one row per epoch, grouped by object: ``OBJECT_ID``, ``MJD`` and
  either ``BAND`` + a single-band ``STAMP`` (layout ``FRAMES``) or a multi-band
  ``STAMP`` cube + optional ``PRESENT`` flags (layout ``CUBES``), with the band
  names declared in the ``BANDS`` keyword.

:class:`Catalog` reads the file through memory maps and yields
:class:`ObjectChunk` batches of bounded size, so catalogs far larger than memory
stream through in constant memory.  :class:`CatalogWriter` streams epochs to a
temporary file and renames it into place only when complete.
"""

from __future__ import annotations

import math
import mmap
import re
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
from convention_rt.fits_stream import AtomicWriter, StreamingTable

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "STATUS_OK",
    "Catalog",
    "CatalogSummary",
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
        NaN/inf pixels in each frame (replaced later, by normalisation).
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
    """What :func:`summarise` found in a catalog."""

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

    @property
    def n_invalid(self) -> int:
        """Objects that cannot be classified."""
        return sum(self.invalid.values())


def _fail(path: Path | str, message: str, **where: Any) -> CatalogError:
    return CatalogError(str(path), message, **where)


class Catalog:
    """An open catalog file, read through memory maps.

    Parameters
    ----------
    path : str or Path
        The catalog FITS file.
    stamp_size : int
        Side of the stamps the consumer needs (32 for ConvEntion models).
    stamp_policy : {"error", "crop", "pad"}
        What to do with stamps of another size: refuse, centre-crop larger ones,
        or centre-pad smaller ones with each stamp's median background.
    on_invalid : {"flag", "warn", "raise"}
        Objects that cannot be classified are flagged (kept with a reason),
        flagged with a warning, or stop the read with a :class:`CatalogError`.

    Raises
    ------
    CatalogError
        When the file is not a readable catalog: missing or corrupt HDUs or
        columns, wrong dtypes, stamp shapes against the policy, no objects.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        stamp_size: int = 32,
        stamp_policy: StampPolicy = "error",
        on_invalid: InvalidPolicy = "flag",
    ) -> None:
        if stamp_policy not in _STAMP_POLICIES:
            raise UsageError(f"stamp_policy must be one of {_STAMP_POLICIES}, got {stamp_policy!r}")
        if on_invalid not in _INVALID_POLICIES:
            raise UsageError(f"on_invalid must be one of {_INVALID_POLICIES}, got {on_invalid!r}")
        self.path = Path(path)
        self.stamp_size = int(stamp_size)
        self.stamp_policy = stamp_policy
        self.on_invalid = on_invalid
        self._hdul = self._open()
        try:
            self._load_structure()
        except BaseException:
            self.close()
            raise

    # -- opening and structure ------------------------------------------------
    def _open(self) -> fits.HDUList:
        path = self.path
        if path.is_dir():
            raise _fail(path, "is a folder, not a catalog file")
        if not path.is_file():
            raise _fail(path, "no such file")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                hdul = fits.open(path, memmap=True, mode="readonly", lazy_load_hdus=False)
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
        size = self.path.stat().st_size
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
        try:
            hdu = self._hdul[name]
        except KeyError:
            raise _fail(self.path, f"missing the {name} HDU (a binary table)") from None
        if not isinstance(hdu, fits.BinTableHDU):
            raise _fail(self.path, "must be a binary table", hdu=name)
        return hdu

    def _column(self, hdu: fits.BinTableHDU, name: str, kinds: str, *, required: bool = True,
                what: str = "", rows: np.ndarray | None = None) -> np.ndarray | None:
        """A raw (unconverted, memory-mapped) column of ``hdu``; dtype kind must be in ``kinds``.

        ``rows`` is the table's raw record array when the caller mapped it itself.
        """
        names = [c.upper() for c in hdu.columns.names]
        if name not in names:
            if required:
                raise _fail(self.path, "missing column", hdu=hdu.name, column=name)
            return None
        column = hdu.columns[name]
        if column.bscale not in (None, 1) or column.bzero not in (None, 0):
            raise _fail(self.path, "scaled columns (TSCAL/TZERO) are not supported", hdu=hdu.name, column=name)
        try:
            data = (hdu.data.view(np.ndarray) if rows is None else rows)[column.name]
        except (ValueError, TypeError, OSError) as exc:
            raise _fail(self.path, f"cannot read column ({exc})", hdu=hdu.name, column=name) from exc
        kind = "b" if column.format.format == "L" else data.dtype.kind
        if kind not in kinds:
            raise _fail(self.path, f"must be {what} (got TFORM {column.format})", hdu=hdu.name, column=name)
        return data

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

        self._object_id = self._column(objects, "OBJECT_ID", "iuS", what="integer or string")
        self._ra = self._column(objects, "RA", "f", what="floating point (D)")
        self._dec = self._column(objects, "DEC", "f", what="floating point (D)")
        self._first = self._column(objects, "FIRST_EPOCH", "iu", what="integer (K)")
        self._count = self._column(objects, "N_EPOCHS", "iu", what="integer (K)")
        self._label = self._column(objects, "LABEL", "S", required=False, what="a string (A)")
        self._typing = self._column(objects, "TYPING", "S", required=False, what="a string (A)")

        epoch_rows = self._map_rows(epochs)
        self._epoch_object = self._column(epochs, "OBJECT_ID", "iuS", what="integer or string", rows=epoch_rows)
        if self._epoch_object.dtype.kind != self._object_id.dtype.kind and not (
            self._epoch_object.dtype.kind in "iu" and self._object_id.dtype.kind in "iu"
        ):
            raise _fail(path, "OBJECT_ID type differs from OBJECTS.OBJECT_ID", hdu="EPOCHS", column="OBJECT_ID")
        self._mjd = self._column(epochs, "MJD", "f", what="float64 (D)", rows=epoch_rows)
        if self._mjd.dtype.itemsize != 8:
            raise _fail(path, "must be float64 (TFORM D): float32 loses the time resolution",
                        hdu="EPOCHS", column="MJD")
        self._stamp = self._column(epochs, "STAMP", "f", what="float32 (E)", rows=epoch_rows)
        if self._stamp.dtype.itemsize != 4:
            raise _fail(path, f"must be float32 (TFORM E), got {self._stamp.dtype}", hdu="EPOCHS", column="STAMP")
        if layout == "FRAMES":
            self._band = self._column(epochs, "BAND", "S", what="a string (A)", rows=epoch_rows)
            self._present = None
            if self._stamp.ndim != 3:
                raise _fail(path, f"FRAMES stamps must be 2-D (TDIM '(W,H)'), got shape {self._stamp.shape[1:]}",
                            hdu="EPOCHS", column="STAMP")
        else:
            self._band = None
            if self._stamp.ndim != 4 or self._stamp.shape[1] != len(bands):
                raise _fail(path, f"CUBES stamps must have shape (bands={len(bands)}, H, W) "
                            f"(TDIM '(W,H,{len(bands)})'), got {self._stamp.shape[1:]}",
                            hdu="EPOCHS", column="STAMP")
            self._present = self._column(epochs, "PRESENT", "b", required=False, what="logical (L)",
                                          rows=epoch_rows)
            if self._present is not None and self._present.shape[1:] != (len(bands),):
                raise _fail(path, f"must hold {len(bands)} flags per epoch", hdu="EPOCHS", column="PRESENT")

        self.stamp_shape: tuple[int, int] = tuple(int(s) for s in self._stamp.shape[-2:])  # type: ignore[assignment]
        self._check_stamp_shape()
        self.n_objects = int(objects.header["NAXIS2"])
        self.n_epochs = int(epochs.header["NAXIS2"])
        if self.n_objects == 0:
            raise _fail(path, "the catalog has no objects", hdu="OBJECTS")
        self._duplicate = self._find_duplicates()

    def _map_rows(self, hdu: fits.BinTableHDU) -> np.ndarray:
        """The table's rows as a record array over our own read-only memory map.

        Mapping the file ourselves lets :meth:`_release` hand the pages of
        rows already read back to the system, so resident memory stays flat
        however large the catalog.
        """
        dtype = hdu.columns.dtype.newbyteorder(">")
        if dtype.itemsize != hdu.header["NAXIS1"]:
            raise _fail(self.path, f"row size {hdu.header['NAXIS1']} does not match the columns "
                        f"({dtype.itemsize} bytes)", hdu=hdu.name)
        self._data_offset = self._hdul.fileinfo(self._hdul.index_of(hdu.name))["datLoc"]
        self._row_bytes = dtype.itemsize
        self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self._mmap, dtype=dtype, count=hdu.header["NAXIS2"], offset=self._data_offset)

    def _release(self, first_row: int, stop_row: int) -> None:
        """Drop the mapped pages of rows [first_row, stop_row) from this process (they stay cached)."""
        if not hasattr(mmap, "MADV_DONTNEED") or stop_row <= first_row:
            return
        start = self._data_offset + first_row * self._row_bytes
        stop = self._data_offset + stop_row * self._row_bytes
        start -= start % mmap.PAGESIZE
        self._mmap.madvise(mmap.MADV_DONTNEED, start, stop - start)

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

    def _find_duplicates(self) -> NDArray[np.bool_]:
        """True for every occurrence of an object id after its first."""
        ids = np.asarray(self._object_id)
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        repeat = np.zeros(ids.shape[0], dtype=bool)
        repeat[order[1:]] = sorted_ids[1:] == sorted_ids[:-1]
        return repeat

    @property
    def id_width(self) -> int | None:
        """Width of string object ids, None for integer ids."""
        return self._object_id.dtype.itemsize if self._object_id.dtype.kind == "S" else None

    @property
    def has_labels(self) -> bool:
        """Whether OBJECTS has a LABEL column."""
        return self._label is not None

    # -- context management -----------------------------------------------------
    def close(self) -> None:
        """Release the memory maps."""
        for name in ("_epoch_object", "_mjd", "_stamp", "_band", "_present"):
            setattr(self, name, None)  # views into the map must go before it closes
        memory_map = getattr(self, "_mmap", None)
        if memory_map is not None:
            try:
                memory_map.close()
            except BufferError:  # a caller still holds a view: the map closes when it is collected
                pass
            self._mmap = None
            self._file.close()
        hdul = getattr(self, "_hdul", None)
        if hdul is not None:
            hdul.close()
            self._hdul = None

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
        """
        stop = self.n_objects if stop is None else stop
        if max_objects < 1 or max_epochs < 1:
            raise UsageError("max_objects and max_epochs must be at least 1")
        if not 0 <= start <= stop <= self.n_objects:
            raise UsageError(f"objects {start}:{stop} are not within the catalog's 0:{self.n_objects}")
        counts = np.asarray(self._count, dtype=np.int64)
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
        first = np.asarray(self._first[start:stop], dtype=np.int64)
        count = np.asarray(self._count[start:stop], dtype=np.int64)
        invalid = [""] * n
        notes: list[list[str]] = [[] for _ in range(n)]

        for i in range(n):
            if self._duplicate[start + i]:
                invalid[i] = "duplicate_id"
            elif count[i] < 0 or first[i] < 0 or first[i] + count[i] > self.n_epochs:
                invalid[i] = "epoch_rows_out_of_range"
            elif count[i] == 0:
                invalid[i] = "no_epochs"

        # Rows of the valid objects, gathered in object order (one slice when contiguous).
        usable = np.array([not reason for reason in invalid], dtype=bool)
        lengths = np.where(usable, count, 0)
        row_offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=row_offsets[1:])
        if usable.any():
            lo = int(first[usable].min())
            hi = int((first + count)[usable].max())
            contiguous = bool(np.all(first[usable] == lo + row_offsets[:-1][usable])) and hi - lo == row_offsets[-1]
            rows = slice(lo, hi) if contiguous else np.concatenate(
                [np.arange(first[i], first[i] + count[i]) for i in range(n) if usable[i]]
            )
        else:
            rows = slice(0, 0)

        epoch_ids = np.asarray(self._epoch_object[rows])
        mjd = np.asarray(self._mjd[rows], dtype=np.float64)
        object_ids = np.asarray(self._object_id[start:stop])
        if object_ids.dtype.kind == "S":
            epoch_ids, object_ids = np.char.strip(epoch_ids), np.char.strip(object_ids)
        for i in np.flatnonzero(usable):
            block = slice(row_offsets[i], row_offsets[i + 1])
            if np.any(epoch_ids[block] != object_ids[i]):
                invalid[i] = "epoch_rows_belong_to_another_object"
            elif not np.all(np.isfinite(mjd[block])):
                invalid[i] = "non_finite_mjd"

        stamps = self._stamps(rows)
        if self.layout == "FRAMES":
            band = self._band_index(rows, row_offsets, invalid, notes)
            frame_offsets = row_offsets
            frames = stamps
            frame_mjd = mjd
        else:
            present = None if self._present is None else self._present[rows] == ord("T")
            separated = preprocess.separate_bands(stamps, mjd, row_offsets, present)
            frames, band, frame_mjd, frame_offsets = (
                separated.frames, separated.plane, separated.mjd, separated.offsets)

        if isinstance(rows, slice):  # everything of these rows is copied out: unmap them
            self._release(rows.start, rows.stop)
        elif rows.size:
            self._release(int(rows.min()), int(rows.max()) + 1)
        frames, band, frame_mjd, n_bad, frame_offsets = clean_frames(
            frames, band, frame_mjd, frame_offsets, invalid, notes, sort=self.layout == "FRAMES")
        chunk = ObjectChunk(
            object_ids=_decode(object_ids) if object_ids.dtype.kind == "S" else object_ids.astype(np.int64),
            ra=np.asarray(self._ra[start:stop], dtype=np.float64),
            dec=np.asarray(self._dec[start:stop], dtype=np.float64),
            labels=None if self._label is None else _decode(self._label[start:stop]),
            typing=None if self._typing is None else _decode(self._typing[start:stop]),
            frames=frames, band=band, mjd=frame_mjd, n_bad=n_bad, offsets=frame_offsets,
            bands=self.bands, invalid=invalid, notes=notes,
        )
        self._apply_invalid_policy(chunk)
        return chunk

    def _stamps(self, rows: slice | NDArray[np.int64]) -> NDArray[np.float32]:
        """Stamps of ``rows`` as native float32, cropped or padded to the target size."""
        raw = self._stamp[rows]
        try:
            stamps = np.ascontiguousarray(raw, dtype=np.float32)  # byte-swaps FITS big-endian data
        except (OSError, ValueError) as exc:
            raise _fail(self.path, f"cannot read stamps ({exc})", hdu="EPOCHS", column="STAMP") from exc
        height, width = self.stamp_shape
        size = self.stamp_size
        if (height, width) == (size, size):
            return stamps
        if height >= size and width >= size:
            top, left = (height - size) // 2, (width - size) // 2
            return np.ascontiguousarray(stamps[..., top:top + size, left:left + size])
        return _pad_with_background(stamps, size)

    def _band_index(self, rows: slice | NDArray[np.int64], row_offsets: NDArray[np.int64],
                    invalid: list[str], notes: list[list[str]]) -> NDArray[np.int32]:
        """Index of each row's band in ``self.bands``; -1 for names not declared in BANDS."""
        names = np.char.strip(np.asarray(self._band[rows]))
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
        for i, reason in enumerate(chunk.invalid):
            if not reason:
                continue
            message = f"{self.path}: OBJECTS: object {chunk.object_ids[i]}: {reason.replace('_', ' ')}"
            if self.on_invalid == "raise":
                raise CatalogError(str(self.path), reason.replace("_", " "), hdu="OBJECTS",
                                   object_id=chunk.object_ids[i])
            if self.on_invalid == "warn":
                warnings.warn(message, stacklevel=3)


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
        if not np.all(np.isfinite(times)):
            invalid[i] = "non_finite_mjd"
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
    counts = np.diff(offsets)
    owner = np.repeat(np.arange(n), counts)
    for i in range(n):
        if invalid[i]:
            keep[offsets[i]:offsets[i + 1]] = False
    if sort and mjd.size > 1:
        backwards = (np.diff(mjd) < 0) & (owner[1:] == owner[:-1])
        if backwards.any():
            for i in np.unique(owner[1:][backwards]):
                notes[i].append("epochs_sorted_by_time")
            order = np.lexsort((mjd, owner))
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


def _decode(values: np.ndarray) -> NDArray[np.str_]:
    """FITS ASCII strings (bytes) as stripped str."""
    return np.char.strip(np.char.decode(np.asarray(values), "ascii", errors="replace"))


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
    """Centre-pad stamps (..., h, w) to (..., size, size) with each stamp's median."""
    height, width = stamps.shape[-2:]
    flat = stamps.reshape(-1, height * width).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stamps give NaN: counted later
        level = np.nanmedian(np.where(np.isfinite(flat), flat, np.nan), axis=1) if flat.size else flat[:, 0]
    out = np.repeat(level.astype(np.float32), size * size).reshape(*stamps.shape[:-2], size, size)
    top, left = (size - height) // 2, (size - width) // 2
    out[..., top:top + height, left:left + width] = stamps
    return out


def summarise(catalog: Catalog, max_objects: int = 1024) -> CatalogSummary:
    """Read a whole catalog, chunk by chunk, and count what it holds.

    Parameters
    ----------
    catalog : Catalog
    max_objects : int
        Objects per chunk.

    Returns
    -------
    CatalogSummary
    """
    summary = CatalogSummary(path=str(catalog.path), layout=catalog.layout,
                             stamp_shape=catalog.stamp_shape,
                             n_objects=catalog.n_objects, n_epochs=catalog.n_epochs)
    for chunk in catalog.iter_chunks(max_objects=max_objects):
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
    layout : {"FRAMES", "CUBES"}
        Single-band frames with a ``BAND`` column, or multi-band cubes whose
        planes follow ``bands``.
    stamp_shape : (int, int)
        Stamp height and width.
    id_width : int or None
        None for integer object ids; the maximum length for string ids.
    label_width : int
        Maximum length of class labels (0: no LABEL/TYPING columns).
    header : dict, optional
        Extra primary-header keywords (provenance), e.g. ``{"SOURCE": "..."}``.
    overwrite : bool
        Replace an existing file.
    """

    def __init__(
        self,
        path: str | Path,
        bands: Sequence[str],
        *,
        layout: Layout = "FRAMES",
        stamp_shape: tuple[int, int] = (32, 32),
        id_width: int | None = None,
        label_width: int = 16,
        header: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        bands = tuple(str(b) for b in bands)
        if not bands or len(set(bands)) != len(bands) or any("," in b or not b.strip() for b in bands):
            raise UsageError(f"bands must be distinct non-empty names without commas, got {bands}")
        if layout not in ("FRAMES", "CUBES"):
            raise UsageError(f"layout must be FRAMES or CUBES, got {layout!r}")
        self.bands = bands
        self.layout = layout
        self.stamp_shape = (int(stamp_shape[0]), int(stamp_shape[1]))
        self.id_width = id_width
        self.label_width = int(label_width)
        self._band_width = max(8, max(len(b) for b in bands))
        self._objects: dict[str, list[Any]] = {k: [] for k in
                                                ("OBJECT_ID", "RA", "DEC", "FIRST_EPOCH", "N_EPOCHS",
                                                 "LABEL", "TYPING")}
        self._seen_ids: set[Any] = set()
        columns, table_header = self._epoch_columns()
        self._table = StreamingTable(
            self.path, columns, name="EPOCHS", overwrite=overwrite, table_header=table_header,
            primary_header={"CRTFMT": (FORMAT_NAME, "file format"),
                            "CRTVER": (FORMAT_VERSION, "file format version"), **(header or {})},
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
        header = {"LAYOUT": (self.layout, "FRAMES (single-band) or CUBES (multi-band)"),
                  "BANDS": (",".join(self.bands), "band names; cube planes follow this order")}
        return columns, header

    def _check_id(self, object_id: Any) -> Any:
        if self.id_width is None:
            if isinstance(object_id, (bool, np.bool_)) or not isinstance(object_id, (int, np.integer)):
                raise UsageError(f"object id {object_id!r} must be an integer (this writer has integer ids)")
            value = int(object_id)
        else:
            value = str(object_id)
            if not value or len(value.encode()) > self.id_width:
                raise UsageError(f"object id {value!r} must have 1..{self.id_width} bytes")
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
        """
        value = self._check_id(object_id)
        mjd_arr = np.asarray(mjd, dtype=np.float64).reshape(-1)
        stamps_arr = np.asarray(stamps, dtype=np.float32)
        n = mjd_arr.shape[0]
        height, width = self.stamp_shape
        expected = (n, height, width) if self.layout == "FRAMES" else (n, len(self.bands), height, width)
        if stamps_arr.shape != expected:
            raise UsageError(f"object {value}: stamps must have shape {expected}, got {stamps_arr.shape}")
        if not np.all(np.isfinite(mjd_arr)):
            raise UsageError(f"object {value}: mjd must be finite")
        if typing not in ("", "spec", "phot"):
            raise UsageError(f"object {value}: typing must be '', 'spec' or 'phot', got {typing!r}")
        if len(label.encode()) > self.label_width:
            raise UsageError(f"object {value}: label {label!r} is longer than {self.label_width} bytes")

        rows = self._table.empty_rows(n)
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
        """Finish the file (the OBJECTS table goes last) and move it into place; returns its path."""
        return self._table.close(append_hdus=[self._objects_hdu()])

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
