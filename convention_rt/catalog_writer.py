"""Write catalogs: :class:`CatalogWriter` streams objects and their epochs to a catalog file.

The format is described in ``docs/catalog-format.md`` and read by
:class:`convention_rt.catalog.Catalog`.  Epochs are streamed to a temporary file
(:class:`~convention_rt.fits_stream.StreamingTable`) that is published whole by
:meth:`CatalogWriter.close` (:mod:`convention_rt.publish`), or removed on error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import ArrayLike

from convention_rt.catalog import FORMAT_NAME, FORMAT_VERSION, Layout
from convention_rt.errors import UsageError
from convention_rt.fits_stream import StreamingTable
from convention_rt.object_arrays import MJD_LIMIT, mjd_problem
from convention_rt.photometry import HEADER_KEYWORDS, ZERO_POINT_COLUMN, ZERO_POINT_RANGE, Photometry
from convention_rt.publish import AtomicWriter

__all__ = ["INT64_MAX", "INT64_MIN", "CatalogWriter"]

#: The range of integer object ids (``OBJECT_ID`` is FITS ``K``, int64).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


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
