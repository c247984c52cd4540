"""Classification results: the table of one batch, and writers for FITS, CSV and Parquet.

One row per object: object id, predicted class, a probability column per
class, the ensemble spread, frames used, bands used, status, model name and
version.  Flagged objects get NaN probabilities, an empty class and a status
saying why: never a made-up value.  Writers stream row blocks to a temporary
file and rename it into place when complete.
"""

from __future__ import annotations

import csv
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from numpy.typing import NDArray

from convention_rt.errors import UsageError
from convention_rt.fits_stream import AtomicWriter, StreamingTable

__all__ = ["FORMATS", "Predictions", "PredictionWriter"]

FORMATS = {".fits": "fits", ".fit": "fits", ".csv": "csv", ".parquet": "parquet"}
STATUS_WIDTH = 200
BANDS_WIDTH = 32


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
        ``ok`` or ``flagged:<why>``, then notes, ``;``-separated.
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
        """Objects that were classified, shape (n,), bool."""
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

    Parameters
    ----------
    path : str or Path
        ``.fits``/``.fit``, ``.csv`` or ``.parquet``.
    classes : tuple of str
    id_width : int or None
        None for integer object ids, else the maximum string length.
    overwrite : bool
        Replace an existing file.
    header : dict, optional
        Provenance keywords (FITS header; Parquet key-value metadata; CSV ignores them).
    """

    def __init__(self, path: str | Path, classes: tuple[str, ...], *, id_width: int | None = None,
                 overwrite: bool = False, header: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.format = FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise UsageError(f"{self.path}: output must end in .fits, .csv or .parquet")
        if self.path.exists() and not overwrite:
            raise UsageError(f"{self.path}: exists already (add --overwrite to replace it)")
        self.classes = classes
        self.id_width = id_width
        self.rows_written = 0
        self._header = header or {}
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        if self.format == "fits":
            self._table = StreamingTable(self.path, self._fits_columns(), name="PREDICTIONS",
                                         primary_header=self._header, overwrite=overwrite)
        elif self.format == "csv":
            self._file = open(self._tmp, "x", newline="", encoding="utf-8")  # noqa: SIM115
            self._csv = csv.writer(self._file)
            self._csv.writerow(self._column_names())
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise UsageError("Parquet output needs pyarrow: pip install 'convention-rt[ingest]'") from exc
            self._pa = pa
            self._schema = self._arrow_schema(pa)
            self._parquet = pq.ParquetWriter(str(self._tmp), self._schema)

    def _column_names(self) -> list[str]:
        return ["object_id", "predicted_class", *[f"p_{c}" for c in self.classes], "spread", "n_frames",
                "bands_used", "status", "model", "model_version"]

    def _fits_columns(self) -> list[fits.Column]:
        class_width = max(8, max(len(c) for c in self.classes))
        return [
            fits.Column("OBJECT_ID", "K" if self.id_width is None else f"{self.id_width}A"),
            fits.Column("PREDICTED_CLASS", f"{class_width}A"),
            *[fits.Column(f"P_{c.upper()}", "E") for c in self.classes],
            fits.Column("SPREAD", "E"),
            fits.Column("N_FRAMES", "J"),
            fits.Column("BANDS_USED", f"{BANDS_WIDTH}A"),
            fits.Column("STATUS", f"{STATUS_WIDTH}A"),
            fits.Column("MODEL", "32A"),
            fits.Column("MODEL_VERSION", "16A"),
        ]

    def _arrow_schema(self, pa: Any) -> Any:
        fields = [pa.field("object_id", pa.int64() if self.id_width is None else pa.string()),
                  pa.field("predicted_class", pa.string()),
                  *[pa.field(f"p_{c}", pa.float32()) for c in self.classes],
                  pa.field("spread", pa.float32()), pa.field("n_frames", pa.int32()),
                  pa.field("bands_used", pa.string()), pa.field("status", pa.string()),
                  pa.field("model", pa.string()), pa.field("model_version", pa.string())]
        metadata = {str(k): str(v[0] if isinstance(v, tuple) else v) for k, v in self._header.items()}
        return pa.schema(fields, metadata=metadata)

    def write(self, predictions: Predictions) -> None:
        """Append a batch of results."""
        n = len(predictions)
        if n == 0:
            return
        name, _, version = predictions.model.partition("/")
        if self.format == "fits":
            rows = self._table.empty_rows(n)
            rows["OBJECT_ID"] = predictions.object_ids if self.id_width is None else \
                np.char.encode(predictions.object_ids.astype(str), "ascii")
            rows["PREDICTED_CLASS"] = np.array(predictions.predicted, dtype="S")
            for k, c in enumerate(self.classes):
                rows[f"P_{c.upper()}"] = predictions.probabilities[:, k]
            rows["SPREAD"] = predictions.spread
            rows["N_FRAMES"] = predictions.n_frames
            rows["BANDS_USED"] = [b.encode("ascii")[:BANDS_WIDTH] for b in predictions.bands_used]
            rows["STATUS"] = [_fit(s, STATUS_WIDTH).encode("ascii") for s in predictions.status]
            rows["MODEL"] = name.encode("ascii")
            rows["MODEL_VERSION"] = version.encode("ascii")
            self._table.append(rows)
        elif self.format == "csv":
            for row in predictions.rows():
                self._csv.writerow(["" if isinstance(v, float) and np.isnan(v) else v for v in row.values()])
        else:
            pa = self._pa
            columns = {key: [row[key] for row in predictions.rows()] for key in self._column_names()}
            self._parquet.write_table(pa.table(columns, schema=self._schema))
        self.rows_written += n

    def close(self) -> Path:
        """Finish the file and move it into place."""
        if self.format == "fits":
            return self._table.close()
        try:
            if self.format == "csv":
                self._file.close()
            else:
                self._parquet.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Discard the partial file."""
        if self.format == "fits":
            self._table.abort()
            return
        try:
            if self.format == "csv":
                self._file.close()
            else:
                self._parquet.close()
        finally:
            self._tmp.unlink(missing_ok=True)



def _fit(text: str, width: int) -> str:
    """``text`` if it fits in ``width`` ASCII bytes, else cut with a trailing '+' (never silently)."""
    text = text.encode("ascii", errors="replace").decode("ascii")
    return text if len(text) <= width else text[: width - 1] + "+"
