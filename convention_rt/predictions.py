"""Classification results: the table of one batch, and writers for FITS, CSV and Parquet.

One row per object: object id, predicted class, a probability column per
class, the ensemble spread, frames used, bands used, status, model name and
version.  Flagged objects get NaN probabilities, an empty class and a status
saying why: never a made-up value.  Writers stream row blocks to a temporary
file and publish it when complete (:mod:`convention_rt.publish`).
"""

from __future__ import annotations

import contextlib
import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from convention_rt.errors import BadInputError, UsageError
from convention_rt.fits_stream import AtomicWriter, StreamingTable
from convention_rt.publish import StagedOutput, output_path

__all__ = ["FORMATS", "Predictions", "PredictionWriter"]

FORMATS = {".fits": "fits", ".fit": "fits", ".csv": "csv", ".parquet": "parquet"}
STATUS_WIDTH = 200
BANDS_WIDTH = 32
MODEL_WIDTH = 32
VERSION_WIDTH = 16


@dataclass
class Predictions:
    """Results for a batch of objects.

    Attributes
    ----------
    object_ids : ndarray, shape (n,)
    probabilities : ndarray, shape (n, classes), float32
        Ensemble mean; NaN for flagged objects.
    spread : ndarray, shape (n,), float32
        Standard deviation over members of the predicted class's probability
        (0 for a single model); NaN for flagged objects.
    n_frames : ndarray, shape (n,), int64
        Frames in the window the model saw.
    bands_used : list of str
        Comma-separated bands in that window.
    status : list of str
        ``ok``, ``low_information:<why>`` (probabilities kept) or
        ``flagged:<why>`` (NaN probabilities), then notes, ``;``-separated.
    classes : tuple of str
    model : str
        ``name/version`` of the model.
    """

    object_ids: NDArray[Any]
    probabilities: NDArray[np.float32]
    spread: NDArray[np.float32]
    n_frames: NDArray[np.int64]
    bands_used: list[str]
    status: list[str]
    classes: tuple[str, ...]
    model: str

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])

    @property
    def ok(self) -> NDArray[np.bool_]:
        """Objects that were classified (``ok`` or ``low_information``), shape (n,), bool."""
        return ~np.isnan(self.probabilities).any(axis=1) if len(self) else np.zeros(0, bool)

    @property
    def predicted(self) -> list[str]:
        """Most probable class per object ("" when flagged)."""
        best = np.nan_to_num(self.probabilities, nan=-1.0).argmax(axis=1) if len(self) else []
        return [self.classes[k] if ok else "" for k, ok in zip(best, self.ok)]

    def rows(self) -> list[dict[str, Any]]:
        """The table as dictionaries, one per object (column name -> value)."""
        name, _, version = self.model.partition("/")
        out = []
        for i, predicted in enumerate(self.predicted):
            row: dict[str, Any] = {"object_id": self.object_ids[i].item(), "predicted_class": predicted}
            row.update({f"p_{c}": float(self.probabilities[i, k]) for k, c in enumerate(self.classes)})
            row.update({"spread": float(self.spread[i]), "n_frames": int(self.n_frames[i]),
                        "bands_used": self.bands_used[i], "status": self.status[i],
                        "model": name, "model_version": version})
            out.append(row)
        return out


class PredictionWriter(AtomicWriter):
    """Stream :class:`Predictions` to a FITS, CSV or Parquet file (chosen by suffix).

    The file is written under a temporary name beside ``path`` and published
    by :meth:`close` (:mod:`convention_rt.publish`): if ``path`` appeared
    meanwhile and ``overwrite`` is False, :meth:`close` fails and leaves it alone.

    Text is kept exactly: CSV (UTF-8) and Parquet hold every object id and
    status as given; FITS string columns hold the UTF-8 bytes of each value
    (``astropy.table.Table.read`` decodes them), and FITS header values that
    are not printable ASCII are percent-encoded (see :mod:`convention_rt.fits_stream`).
    A string object id longer than ``id_width`` bytes is refused; other FITS
    text longer than its column is cut with a trailing ``+``.

    Parameters
    ----------
    path : str or Path
        ``.fits``/``.fit``, ``.csv`` or ``.parquet``.
    classes : tuple of str
        The model's classes, in the order of the probability columns.
    id_width : int or None
        None for integer object ids, else the maximum id length in UTF-8 bytes.
    overwrite : bool
        Replace an existing file.
    header : dict, optional
        Provenance keywords (FITS header; Parquet key-value metadata; CSV ignores them).

    Raises
    ------
    UsageError
        Unknown suffix, existing file (without ``overwrite``), a folder at
        ``path``, or classes / ``id_width`` that cannot make a table.
    OutputError
        The temporary file cannot be created (permissions, missing folder, ...).
    """

    def __init__(self, path: str | Path, classes: tuple[str, ...], *, id_width: int | None = None,
                 overwrite: bool = False, header: dict[str, Any] | None = None) -> None:
        self.path = output_path(path)
        self.format = FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise UsageError(f"{self.path}: output must end in .fits, .csv or .parquet")
        self.classes = _check_classes(classes)
        if id_width is not None and (isinstance(id_width, bool) or not isinstance(id_width, (int, np.integer))
                                     or id_width < 1):
            raise UsageError(f"id_width must be None (integer ids) or a positive int, got {id_width!r}")
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path}: exists already (add --overwrite to replace it)")
        self.id_width = None if id_width is None else int(id_width)
        self.rows_written = 0
        self._closed = False
        self._header = header or {}
        if self.format == "fits":
            self._table = StreamingTable(self.path, self._fits_columns(), name="PREDICTIONS",
                                         primary_header=self._header, overwrite=overwrite)
            return
        if self.format == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise UsageError("Parquet output needs pyarrow: pip install 'convention-rt[ingest]'") from exc
            self._pa = pa
            self._schema = self._arrow_schema(pa)
        self._output = StagedOutput(self.path, overwrite=overwrite, text=self.format == "csv")
        try:
            with self._output.writing():
                if self.format == "csv":
                    self._csv = csv.writer(self._output.file)
                    self._csv.writerow(self._column_names())
                else:
                    self._parquet = pq.ParquetWriter(self._output.file, self._schema)
        except BaseException:
            self._output.discard()
            raise

    def _column_names(self) -> list[str]:
        return ["object_id", "predicted_class", *[f"p_{c}" for c in self.classes], "spread", "n_frames",
                "bands_used", "status", "model", "model_version"]

    def _fits_columns(self) -> list[fits.Column]:
        """The FITS columns, named exactly as the CSV and Parquet ones (FITS allows lower-case TTYPE)."""
        class_width = max(8, max(len(c.encode()) for c in self.classes))
        formats = ["K" if self.id_width is None else f"{self.id_width}A", f"{class_width}A",
                   *["E"] * len(self.classes), "E", "J", f"{BANDS_WIDTH}A", f"{STATUS_WIDTH}A", f"{MODEL_WIDTH}A",
                   f"{VERSION_WIDTH}A"]
        return [fits.Column(name, form) for name, form in zip(self._column_names(), formats, strict=True)]

    def _arrow_schema(self, pa: Any) -> Any:
        fields = [pa.field("object_id", pa.int64() if self.id_width is None else pa.string()),
                  pa.field("predicted_class", pa.string()),
                  *[pa.field(f"p_{c}", pa.float32()) for c in self.classes],
                  pa.field("spread", pa.float32()), pa.field("n_frames", pa.int32()),
                  pa.field("bands_used", pa.string()), pa.field("status", pa.string()),
                  pa.field("model", pa.string()), pa.field("model_version", pa.string())]
        metadata = {str(k): str(v[0] if isinstance(v, tuple) else v) for k, v in self._header.items()}
        return pa.schema(fields, metadata=metadata)

    def _object_ids(self, predictions: Predictions) -> list[Any]:
        """The batch's ids as the id column holds them: int, or str (checked against ``id_width`` bytes)."""
        ids = predictions.object_ids.tolist()
        if self.id_width is None:
            for object_id in ids:
                if isinstance(object_id, bool) or not isinstance(object_id, int):
                    raise UsageError(f"{self.path}: object {object_id!r}: this writer has integer ids "
                                     "(give id_width for string ids)")
            return ids
        ids = [str(i) for i in ids]
        for object_id in ids:
            if len(object_id.encode()) > self.id_width:
                raise BadInputError(f"{self.path}: object {object_id}: id of {len(object_id.encode())} UTF-8 "
                                    f"bytes; the OBJECT_ID column holds {self.id_width}")
        return ids

    def write(self, predictions: Predictions) -> None:
        """Append a batch of results.

        Raises
        ------
        UsageError
            Not :class:`Predictions`, other classes than the writer's, or a closed writer.
        BadInputError
            A string id longer than ``id_width`` bytes (FITS).
        OutputError
            The system refused the write (a full disk, ...); the temporary file is removed.
        """
        if self._closed:
            raise UsageError(f"{self.path}: this writer is closed")
        if not isinstance(predictions, Predictions):
            raise UsageError(f"{self.path}: write() takes Predictions, got {type(predictions).__name__}")
        if tuple(predictions.classes) != self.classes:
            raise UsageError(f"{self.path}: results of classes {', '.join(predictions.classes)}; this file has "
                             f"{', '.join(self.classes)}")
        n = len(predictions)
        if n == 0:
            return
        ids = self._object_ids(predictions)
        name, _, version = predictions.model.partition("/")
        if self.format == "fits":
            rows = self._table.empty_rows(n)
            rows["object_id"] = ids if self.id_width is None else [i.encode() for i in ids]
            rows["predicted_class"] = [c.encode() for c in predictions.predicted]
            for k, c in enumerate(self.classes):
                rows[f"p_{c}"] = predictions.probabilities[:, k]
            rows["spread"] = predictions.spread
            rows["n_frames"] = predictions.n_frames
            rows["bands_used"] = [_fit(b, BANDS_WIDTH) for b in predictions.bands_used]
            rows["status"] = [_fit(s, STATUS_WIDTH) for s in predictions.status]
            rows["model"] = _fit(name, MODEL_WIDTH)
            rows["model_version"] = _fit(version, VERSION_WIDTH)
            self._table.append(rows)
        elif self.format == "csv":
            with self._output.writing():
                for object_id, row in zip(ids, predictions.rows()):
                    row["object_id"] = object_id
                    self._csv.writerow(["" if isinstance(v, float) and np.isnan(v) else v for v in row.values()])
        else:
            pa = self._pa
            rows = predictions.rows()
            columns = {key: [row[key] for row in rows] for key in self._column_names()}
            columns["object_id"] = ids
            with self._output.writing():
                self._parquet.write_table(pa.table(columns, schema=self._schema))
        self.rows_written += n

    def close(self) -> Path:
        """Finish the file and publish it at :attr:`path`; on failure nothing is left."""
        if self._closed:
            return self.path
        if self.format == "fits":
            self._closed = True
            return self._table.close()
        try:
            if self.format == "parquet":
                with self._output.writing():
                    self._parquet.close()
            self._output.publish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard the partial file; safe to call more than once."""
        self._closed = True
        if self.format == "fits":
            self._table.abort()
            return
        try:
            if self.format == "parquet":
                with contextlib.suppress(OSError, self._pa.lib.ArrowException):  # it is discarded anyway
                    self._parquet.close()
        finally:
            self._output.discard()


def _check_classes(classes: Any) -> tuple[str, ...]:
    """``classes`` as a tuple of distinct non-empty str, or a UsageError."""
    if isinstance(classes, str) or not isinstance(classes, (tuple, list)):
        raise UsageError(f"classes must be a tuple of class names, got {classes!r}")
    classes = tuple(classes)
    if not classes or any(not isinstance(c, str) or not c for c in classes) or \
            len({c.upper() for c in classes}) != len(classes):
        raise UsageError(f"classes must be distinct non-empty names (also ignoring case), got {classes!r}")
    return classes


def _fit(text: str, width: int) -> bytes:
    """``text`` as UTF-8 if it fits in ``width`` bytes, else cut at a character and ended with '+' (never silently)."""
    data = text.encode()
    if len(data) <= width:
        return data
    return data[: width - 1].decode(errors="ignore").encode() + b"+"
