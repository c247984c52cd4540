"""Classification results: the table of one batch, and writers for FITS, CSV and Parquet.

One row per object, in the columns of :mod:`convention_rt.schema`: object id,
predicted class, a probability column per class, the ensemble spread, frames
used, bands used, status, model name and version.  Flagged objects get NaN
probabilities, an empty class and a status saying why: never a made-up value.
Writers stream row blocks to a temporary file and publish it when complete
(:mod:`convention_rt.publish`), with the results' :mod:`~convention_rt.provenance`
in the file's header (FITS) or metadata (Parquet).
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
from convention_rt.fits_stream import StreamingTable
from convention_rt.provenance import Provenance
from convention_rt.publish import AtomicWriter, StagedOutput, output_path
from convention_rt.schema import OutputColumn, arrow_batch, arrow_schema, prediction_columns
from convention_rt.status import ObjectStatus, format_status

__all__ = ["FORMATS", "Predictions", "PredictionWriter"]

FORMATS = {".fits": "fits", ".fit": "fits", ".csv": "csv", ".parquet": "parquet"}


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
    n_frames : ndarray, shape (n,), int32
        Frames in the window the model saw.
    bands_used : list of str
        Comma-separated bands in that window.
    statuses : list of ObjectStatus
        What happened to each object (:mod:`convention_rt.status`); its text,
        the ``status`` column, is :attr:`status`.
    classes : tuple of str
    model : str
        ``name/version`` of the model.
    provenance : Provenance or None
        Where the results come from (set by the classifier).
    """

    object_ids: NDArray[Any]
    probabilities: NDArray[np.float32]
    spread: NDArray[np.float32]
    n_frames: NDArray[np.int32]
    bands_used: list[str]
    statuses: list[ObjectStatus]
    classes: tuple[str, ...]
    model: str
    provenance: Provenance | None = None

    def __len__(self) -> int:
        return int(self.object_ids.shape[0])

    @property
    def status(self) -> list[str]:
        """Per object: ``ok``, ``low_information:<why>`` (probabilities kept) or ``flagged:<why>`` (NaN
        probabilities), then notes, ``;``-separated (:func:`~convention_rt.status.format_status`)."""
        return [format_status(status) for status in self.statuses]

    @property
    def ok(self) -> NDArray[np.bool_]:
        """Objects that were classified (``ok`` or ``low_information``), shape (n,), bool."""
        return ~np.isnan(self.probabilities).any(axis=1) if len(self) else np.zeros(0, bool)

    @property
    def predicted(self) -> list[str]:
        """Most probable class per object ("" when flagged)."""
        best = np.nan_to_num(self.probabilities, nan=-1.0).argmax(axis=1) if len(self) else []
        return [self.classes[k] if ok else "" for k, ok in zip(best, self.ok)]

    def columns(self) -> dict[str, Any]:
        """The values of each column of :func:`~convention_rt.schema.prediction_columns`, in its order.

        Numbers as numpy arrays (``n_frames`` int32, probabilities and spread
        float32), text as lists of str, object ids as given.
        """
        n = len(self)
        name, _, version = self.model.partition("/")
        return {"object_id": self.object_ids, "predicted_class": self.predicted,
                **{f"p_{c}": self.probabilities[:, k] for k, c in enumerate(self.classes)},
                "spread": self.spread, "n_frames": self.n_frames, "bands_used": self.bands_used,
                "status": self.status, "model": [name] * n, "model_version": [version] * n}

    def rows(self) -> list[dict[str, Any]]:
        """The table as dictionaries, one per object (column name -> value as a Python scalar)."""
        columns = self.columns()
        return [{key: _scalar(values[i]) for key, values in columns.items()} for i in range(len(self))]


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
    provenance : Provenance, optional
        Where the results come from (:meth:`Classifier.provenance
        <convention_rt.classifier.Classifier.provenance>`): FITS header keywords,
        Parquet key-value metadata (CSV has no place for it).
    header : dict, optional
        More keywords, written after those of ``provenance``.

    Raises
    ------
    UsageError
        Unknown suffix, existing file (without ``overwrite``), a folder at
        ``path``, or classes / ``id_width`` that cannot make a table.
    OutputError
        The temporary file cannot be created (permissions, missing folder, ...).
    """

    def __init__(self, path: str | Path, classes: tuple[str, ...], *, id_width: int | None = None,
                 overwrite: bool = False, provenance: Provenance | None = None,
                 header: dict[str, Any] | None = None) -> None:
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
        self.columns: tuple[OutputColumn, ...] = prediction_columns(self.classes, id_width=self.id_width)
        self.rows_written = 0
        self._closed = False
        self._header = {**(provenance.header() if provenance is not None else {}), **(header or {})}
        if self.format == "fits":
            self._table = StreamingTable(self.path, [fits.Column(c.name, c.fits_form) for c in self.columns],
                                         name="PREDICTIONS", primary_header=self._header, overwrite=overwrite)
            return
        if self.format == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise UsageError("Parquet output needs pyarrow: pip install 'convention-rt[ingest]'") from exc
            self._pa = pa
            metadata = {str(k): str(v[0] if isinstance(v, tuple) else v) for k, v in self._header.items()}
            self._schema = arrow_schema(self.columns, metadata)
        self._output = StagedOutput(self.path, overwrite=overwrite, text=self.format == "csv")
        try:
            with self._output.writing():
                if self.format == "csv":
                    self._csv = csv.writer(self._output.file)
                    self._csv.writerow([c.name for c in self.columns])
                else:
                    self._parquet = pq.ParquetWriter(self._output.file, self._schema)
        except BaseException:
            self._output.discard()
            raise

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
        values = predictions.columns()
        values["object_id"] = self._object_ids(predictions)
        if self.format == "fits":
            rows = self._table.empty_rows(n)
            for column in self.columns:
                if column.name == "object_id" and column.kind == "string":
                    rows[column.name] = [i.encode() for i in values[column.name]]  # checked: they fit
                elif column.kind == "string":
                    rows[column.name] = [_fit(text, column.width) for text in values[column.name]]
                else:
                    rows[column.name] = values[column.name]
            self._table.append(rows)
        elif self.format == "csv":
            with self._output.writing():
                for i in range(n):
                    row = [_scalar(values[c.name][i]) for c in self.columns]
                    self._csv.writerow(["" if isinstance(v, float) and np.isnan(v) else v for v in row])
        else:
            with self._output.writing():
                self._parquet.write_table(self._pa.Table.from_batches([arrow_batch(self._schema, values)]))
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


def _scalar(value: Any) -> Any:
    """A table value as a Python scalar: numpy numbers as int or float, the rest as it is."""
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fit(text: str, width: int) -> bytes:
    """``text`` as UTF-8 if it fits in ``width`` bytes, else cut at a character and ended with '+' (never silently)."""
    data = text.encode()
    if len(data) <= width:
        return data
    return data[: width - 1].decode(errors="ignore").encode() + b"+"
