"""Group alerts into objects and write them as a catalog through :class:`CatalogWriter`.

Every input file is read once.  Each kept alert's stamp is spooled to a
temporary file and its metadata kept in memory; when all files are read, the
epochs are grouped by object id, time-ordered, and written.  The catalog's
primary header records the provenance and what was dropped or fixed, which is
only known at the end, so nothing is written before every input was read.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convention_rt._version import __version__
from convention_rt.catalog_writer import INT64_MAX, INT64_MIN, CatalogWriter
from convention_rt.errors import BadInputError, OutputError, UsageError
from convention_rt.ingest.alerts import Alert, AlertError, IngestWarning, Survey
from convention_rt.ingest.cutouts import STAMP_SIZE
from convention_rt.ingest.packets import iter_packets
from convention_rt.policies import OnInvalidAlert, StampKind
from convention_rt.publish import output_path

__all__ = ["ON_INVALID", "IngestReport", "PaddedCutout", "build_catalog", "refuse_input_as_output"]

#: The values of ``on_invalid`` (:class:`~convention_rt.policies.OnInvalidAlert`).
ON_INVALID: tuple[str, ...] = OnInvalidAlert.values()
EXAMPLES_PER_REASON = 5
PADDED_IDS_IN_HEADER = 50


@dataclass(frozen=True)
class PaddedCutout:
    """A cut-out smaller than nominal, padded with its median background."""

    object_id: str | int
    alert_id: int
    shape: tuple[int, int]


@dataclass
class IngestReport:
    """What an ingest read, wrote, dropped and fixed.

    Attributes
    ----------
    path : Path
        The catalog written.
    survey : str
        Survey name.
    stamp : StampKind
        Cut-out kind used as stamps.
    on_invalid : OnInvalidAlert
        Invalid-alert policy.
    files : list of str
        The input files, in the order read.
    n_packets : int
        Alert packets read (including skipped and repeated ones).
    n_objects, n_epochs : int
        Objects and epochs written.
    n_duplicates : int
        Alerts dropped because their alert id (``candid``/``diaSourceId``) was
        already read.
    n_masked_pixels : int
        Pixels set to NaN because a cut-out's mask flags them bad.
    skipped : Counter
        Skipped alerts (or unreadable files) per reason, e.g. ``corrupt_cutout``.
    examples : dict of str to list of str
        The first error messages of each reason.
    padded : list of PaddedCutout
        Every epoch whose cut-out was padded.
    decimal_ids : bool
        Integer object ids (Rubin ``diaObjectId``) were written as decimal
        strings, exactly, because one of them does not fit a signed 64-bit
        integer (an unsigned id of ``2**63`` or more).
    """

    path: Path
    survey: str
    stamp: StampKind
    on_invalid: OnInvalidAlert
    files: list[str]
    n_packets: int = 0
    n_objects: int = 0
    n_epochs: int = 0
    n_duplicates: int = 0
    n_masked_pixels: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    padded: list[PaddedCutout] = field(default_factory=list)
    decimal_ids: bool = False

    @property
    def n_skipped(self) -> int:
        """Alerts and files skipped as invalid."""
        return sum(self.skipped.values())

    def padded_objects(self) -> list[str | int]:
        """Objects with at least one padded epoch, in the order first met."""
        return list(dict.fromkeys(p.object_id for p in self.padded))

    def summary(self) -> str:
        """One line saying what was written."""
        return (f"{self.path}: {self.n_objects} objects, {self.n_epochs} epochs of {self.survey} "
                f"{self.stamp} stamps from {self.n_packets} packets in {len(self.files)} files")

    def notes(self) -> list[str]:
        """One line per kind of thing dropped or fixed (empty when nothing was)."""
        lines = []
        if self.n_skipped:
            reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(self.skipped.items()))
            lines.append(f"skipped {self.n_skipped} invalid alerts or files ({reasons}); first: "
                         f"{next(iter(self.examples.values()))[0]}")
        if self.n_duplicates:
            lines.append(f"dropped {self.n_duplicates} repeated alerts (same alert id)")
        if self.padded:
            objects = self.padded_objects()
            shown = ", ".join(str(o) for o in objects[:5]) + (", ..." if len(objects) > 5 else "")
            lines.append(f"padded {len(self.padded)} short cut-outs (chip edge, or smaller than the stamp) "
                         f"with their median background ({len(objects)} objects: {shown})")
        if self.n_masked_pixels:
            lines.append(f"set {self.n_masked_pixels} pixels flagged bad in cut-out masks to NaN")
        if self.decimal_ids:
            lines.append("object ids of 2**63 or more do not fit OBJECT_ID as a signed 64-bit integer: every "
                         "object id was written as a decimal string")
        return lines


class _EpochStore:
    """Kept epochs: metadata in lists, stamps spooled to an anonymous temporary file."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.object_id: list[str | int] = []
        self.alert_id: list[int] = []
        self.mjd: list[float] = []
        self.band: list[str] = []
        self.ra: list[float] = []
        self.dec: list[float] = []
        self.zero_point: list[float] = []
        self.folder = tempfile.gettempdir()
        try:
            self._spool = tempfile.TemporaryFile(prefix="convention-rt-ingest-")
        except OSError as exc:
            raise self._spool_error(exc) from exc

    def __len__(self) -> int:
        return len(self.mjd)

    def add(self, alert: Alert) -> None:
        self.object_id.append(alert.object_id)
        self.alert_id.append(alert.alert_id)
        self.mjd.append(alert.mjd)
        self.band.append(alert.band)
        self.ra.append(alert.ra)
        self.dec.append(alert.dec)
        self.zero_point.append(alert.zero_point)
        try:
            self._spool.write(np.ascontiguousarray(alert.stamp, dtype=np.float32).tobytes())
        except OSError as exc:
            raise self._spool_error(exc) from exc

    def stamps(self) -> np.memmap:
        """All spooled stamps, shape (N, size, size), float32, read-only."""
        try:
            self._spool.flush()
            return np.memmap(self._spool, dtype=np.float32, mode="r", shape=(len(self), self.size, self.size))
        except OSError as exc:
            raise self._spool_error(exc) from exc

    def _spool_error(self, exc: OSError) -> OutputError:
        """A system error of the spool as one line naming its folder, with what to do."""
        reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
        error = OutputError(f"{self.folder}: cannot write the temporary file that holds the stamps while "
                            f"ingesting: {reason} (free some space there, or set TMPDIR to a folder with room "
                            f"for the stamps, about the size of the catalog)")
        error.errno = exc.errno
        return error

    def close(self) -> None:
        try:
            self._spool.close()
        except OSError:  # buffered stamps that no longer matter: the run failed or they were read already
            pass


def build_catalog(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    survey: Survey,
    stamp: StampKind | str = StampKind.science,
    on_invalid: OnInvalidAlert | str = OnInvalidAlert.skip,
    overwrite: bool = False,
) -> IngestReport:
    """Read alert packets and write them as a catalog, one object per alert stream object.

    Parameters
    ----------
    paths : sequence of str or Path
        Avro container files and/or Parquet tables of alert packets.
    out : str or Path
        The catalog to write (FRAMES layout, 32 x 32 float32 stamps).
    survey : Survey
        How to read the packets (:data:`~convention_rt.ingest.ztf.ZTF`,
        :data:`~convention_rt.ingest.rubin.RUBIN`).
    stamp : {"science", "difference", "template"}
        Which cut-out of each alert becomes its stamp.
    on_invalid : {"skip", "warn", "raise"}
        For an invalid alert (or an unreadable file): drop and count it, drop
        it with an :class:`IngestWarning`, or stop with its :class:`AlertError`
        (:class:`~convention_rt.policies.OnInvalidAlert`).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    IngestReport

    Raises
    ------
    UsageError
        Bad options, ``out`` exists (without ``overwrite``) or its folder does
        not, or ``out`` is one of the inputs (by any name or link).
    BadInputError
        An input file does not exist, or no alert could be used.
    AlertError
        Under ``on_invalid="raise"``, the first invalid alert or unreadable file.

    Notes
    -----
    Epochs are grouped by object id and sorted by time (then alert id); an
    alert id seen before is dropped.  Objects are written in id order, at the
    mean position of their detections.  The catalog is written atomically: on
    any error nothing is left at ``out``.
    """
    stamp = StampKind.parse(stamp, "stamp")
    on_invalid = OnInvalidAlert.parse(on_invalid, "on_invalid")
    files = [Path(p) for p in paths]
    if not files:
        raise UsageError("no input files given")
    out = output_path(out)
    refuse_input_as_output(files, out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out}: exists already (add --overwrite, or overwrite=True in Python, to replace it)")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: folder {out.parent} does not exist")
    for path in files:
        if not path.is_file():
            raise BadInputError(f"{path}: {'is a folder, not' if path.is_dir() else 'no such'} file")

    report = IngestReport(path=out, survey=survey.name, stamp=stamp, on_invalid=on_invalid,
                          files=[str(p) for p in files])
    store = _EpochStore(STAMP_SIZE)
    try:
        seen: set[int] = set()
        for path in files:
            for alert in _read_file(path, survey, stamp, report):
                if alert.alert_id in seen:
                    report.n_duplicates += 1
                    continue
                seen.add(alert.alert_id)
                store.add(alert)
                report.n_masked_pixels += alert.masked_pixels
                if alert.padded:
                    report.padded.append(PaddedCutout(alert.object_id, alert.alert_id, alert.cutout_shape))
        if not len(store):
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())) or "none"
            inputs = files[0] if len(files) == 1 else f"{len(files)} input files ({files[0]}, ...)"
            raise BadInputError(f"{inputs}: no usable alert ({report.n_packets} packet(s); skipped: {reasons}); "
                                f"nothing written to {out}")
        _write(store, report, survey, overwrite)
    finally:
        store.close()
    return report


def refuse_input_as_output(inputs: Sequence[Path], out: Path) -> None:
    """Stop before any work when ``out`` is one of the inputs (the same file, by any name or link).

    Raises
    ------
    UsageError
        Naming ``out`` and the input it is; or a name too long for a file.
    """
    output_path(out)
    if not out.exists():
        return
    for path in inputs:
        try:
            same = path.exists() and os.path.samefile(path, out)
        except OSError:  # an unreadable input is reported by the ingest itself
            continue
        if same:
            raise UsageError(f"{out}: is the input file {path}; choose another --out")


def _read_file(path: Path, survey: Survey, stamp: StampKind, report: IngestReport) -> Iterator[Alert]:
    """The valid alerts of one file; invalid ones go to :func:`_reject`."""
    with closing(iter_packets(path, survey.columns(stamp))) as packets:
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except AlertError as error:  # the rest of the file is unreadable
                _reject(error, report)
                return
            report.n_packets += 1
            try:
                yield survey.parse(packet, str(path), stamp)
            except AlertError as error:
                _reject(error, report)


def _reject(error: AlertError, report: IngestReport) -> None:
    if report.on_invalid == OnInvalidAlert.raise_:
        raise error
    report.skipped[error.reason] += 1
    examples = report.examples.setdefault(error.reason, [])
    if len(examples) < EXAMPLES_PER_REASON:
        examples.append(str(error))
    if report.on_invalid == OnInvalidAlert.warn:
        warnings.warn(str(error), IngestWarning, stacklevel=2)


def _write(store: _EpochStore, report: IngestReport, survey: Survey, overwrite: bool) -> None:
    report.decimal_ids = not survey.string_ids and any(not INT64_MIN <= i <= INT64_MAX for i in store.object_id)
    string_ids = survey.string_ids or report.decimal_ids
    mjd = np.array(store.mjd, dtype=np.float64)
    if survey.string_ids:
        id_keys: tuple[np.ndarray, ...] = (np.array(store.object_id),)
    else:  # integer ids in numeric order, exact also beyond int64
        id_keys = _int_keys(store.object_id)
    order = np.lexsort((*_int_keys(store.alert_id), mjd, *id_keys))
    new_object = np.zeros(order.size, dtype=bool)
    new_object[0] = True
    for key in id_keys:
        sorted_key = key[order]
        new_object[1:] |= sorted_key[1:] != sorted_key[:-1]
    starts = np.flatnonzero(new_object)
    stops = np.r_[starts[1:], order.size]
    band = np.array(store.band)
    zero_point = np.array(store.zero_point, dtype=np.float64)
    photometry = survey.photometry(report.stamp)
    ra = np.array(store.ra, dtype=np.float64)
    dec = np.array(store.dec, dtype=np.float64)
    report.n_objects = int(starts.size)
    report.n_epochs = len(store)
    id_width = max(len(str(i)) for i in store.object_id) if string_ids else None

    stamps = store.stamps()
    try:
        with CatalogWriter(report.path, survey.bands, photometry=photometry, layout="FRAMES",
                           stamp_shape=(store.size, store.size), id_width=id_width, label_width=0,
                           header=_header(report), overwrite=overwrite) as writer:
            for start, stop in zip(starts, stops, strict=True):
                rows = order[start:stop]
                object_id = store.object_id[rows[0]]
                object_ra, object_dec = _mean_position(ra[rows], dec[rows])
                writer.add_object(str(object_id) if string_ids else object_id, mjd=mjd[rows],
                                  stamps=stamps[rows], bands=band[rows].tolist(), ra=object_ra, dec=object_dec,
                                  zero_point=zero_point[rows] if photometry.zero_point_per_epoch else None)
    finally:
        del stamps


def _int_keys(values: Sequence[int]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Sort keys (low, high) of Python ints of up to 95 bits, exact: ``value = high * 2**32 + low``."""
    high = np.fromiter((v >> 32 for v in values), dtype=np.int64, count=len(values))
    low = np.fromiter((v & 0xFFFFFFFF for v in values), dtype=np.int64, count=len(values))
    return low, high


def _mean_position(ra: NDArray[np.float64], dec: NDArray[np.float64]) -> tuple[float, float]:
    """Mean direction of detections in degrees (safe across RA = 0)."""
    ra_rad, dec_rad = np.radians(ra), np.radians(dec)
    x = float(np.mean(np.cos(dec_rad) * np.cos(ra_rad)))
    y = float(np.mean(np.cos(dec_rad) * np.sin(ra_rad)))
    z = float(np.mean(np.sin(dec_rad)))
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.atan2(z, math.hypot(x, y)))


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")


def _header(report: IngestReport) -> dict[str, Any]:
    """Primary-header provenance: inputs, policy, and counts of what was dropped or fixed.

    Variable-length strings carry no comment: astropy would truncate it with a warning.
    """
    objects = report.padded_objects()
    listed = ",".join(str(o) for o in objects[:PADDED_IDS_IN_HEADER]) + (",..." if len(objects) >
                                                                          PADDED_IDS_IN_HEADER else "")
    reasons = ",".join(f"{k}={v}" for k, v in sorted(report.skipped.items()))
    return {
        "SURVEY": (report.survey, "alert stream of the epochs"),
        "CREATOR": (f"convention-rt {__version__} ingest", "software"),
        "DATE": (datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC time of writing"),
        "ONINVAL": (report.on_invalid.value, "policy for invalid alerts"),
        "NFILES": (len(report.files), "input files"),
        "SOURCES": _ascii(",".join(Path(f).name for f in report.files)),
        "NPACKETS": (report.n_packets, "alert packets read"),
        "NSKIPPED": (report.n_skipped, "invalid alerts or files skipped"),
        "SKIPWHY": reasons,
        "NDUPLIC": (report.n_duplicates, "repeated alert ids dropped"),
        "NPADDED": (len(report.padded), "epochs whose cut-out was padded"),
        "NPADOBJ": (len(objects), "objects with padded epochs"),
        "PADOBJS": _ascii(listed),
        "NMASKED": (report.n_masked_pixels, "pixels set to NaN from masks"),
        "IDDECIM": (report.decimal_ids, "integer object ids written as decimal text"),
    }
