"""The columns of a result table, defined once for every output: FITS, CSV, Parquet and Spark.

One row per object: ``object_id``, ``predicted_class``, ``p_<class>`` per class,
``spread``, ``n_frames``, ``bands_used``, ``status``, ``model``, ``model_version``.
Each :class:`OutputColumn` says what its values are (``kind``) and so its numpy
dtype, its FITS ``TFORM``, its Arrow type (Parquet files and datasets) and its
Spark SQL type; :func:`prediction_columns` lists them for a model's classes.
pyarrow and pyspark are imported only when their types are asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql.types import DataType, StructType

__all__ = ["BANDS_WIDTH", "MODEL_WIDTH", "STATUS_WIDTH", "VERSION_WIDTH", "OutputColumn", "arrow_batch",
           "arrow_schema", "prediction_columns", "spark_schema"]

#: Bytes of the FITS text columns (longer text is cut with a trailing ``+``; ids are refused instead).
BANDS_WIDTH = 32
STATUS_WIDTH = 200
MODEL_WIDTH = 32
VERSION_WIDTH = 16
CLASS_MIN_WIDTH = 8

Kind = Literal["int64", "int32", "float32", "string"]
_NUMPY = {"int64": np.dtype(np.int64), "int32": np.dtype(np.int32), "float32": np.dtype(np.float32),
          "string": np.dtype(object)}
_FITS = {"int64": "K", "int32": "J", "float32": "E"}


@dataclass(frozen=True)
class OutputColumn:
    """One column of a result table.

    Attributes
    ----------
    name : str
        The same in every format (FITS keeps lower-case ``TTYPE``).
    kind : {"int64", "int32", "float32", "string"}
        What its values are.
    width : int or None
        Bytes of a FITS string column (UTF-8); None for numbers, and for string
        ids of a table that is never FITS (Spark).
    """

    name: str
    kind: Kind
    width: int | None = None

    @property
    def dtype(self) -> np.dtype:
        """numpy dtype of the values (``object`` for text)."""
        return _NUMPY[self.kind]

    @property
    def fits_form(self) -> str:
        """FITS ``TFORM``: ``K``, ``J``, ``E`` or ``<width>A``."""
        if self.kind != "string":
            return _FITS[self.kind]
        if self.width is None:
            raise ValueError(f"column {self.name}: a FITS string column needs a width")
        return f"{self.width}A"

    def arrow_type(self) -> pa.DataType:
        """Arrow type (Parquet)."""
        import pyarrow as pa

        return {"int64": pa.int64, "int32": pa.int32, "float32": pa.float32, "string": pa.string}[self.kind]()

    def spark_type(self) -> DataType:
        """Spark SQL type."""
        from pyspark.sql import types

        return {"int64": types.LongType, "int32": types.IntegerType, "float32": types.FloatType,
                "string": types.StringType}[self.kind]()


def prediction_columns(classes: Sequence[str], *, id_width: int | None = None, string_ids: bool | None = None,
                       object_id: bool = True) -> tuple[OutputColumn, ...]:
    """The columns of a result table for a model's ``classes``.

    Parameters
    ----------
    classes : sequence of str
        In the order of the probability columns.
    id_width : int, optional
        Bytes of string object ids (FITS); None for integer ids unless ``string_ids``.
    string_ids : bool, optional
        Whether object ids are text (default: ``id_width`` is given).
    object_id : bool
        Include the ``object_id`` column (the Spark UDF's result has none: the
        DataFrame has its ids).

    Returns
    -------
    tuple of OutputColumn
    """
    string_ids = id_width is not None if string_ids is None else string_ids
    class_width = max(CLASS_MIN_WIDTH, max((len(c.encode()) for c in classes), default=0))
    ids = [OutputColumn("object_id", "string", id_width) if string_ids else OutputColumn("object_id", "int64")]
    return (*(ids if object_id else []),
            OutputColumn("predicted_class", "string", class_width),
            *[OutputColumn(f"p_{c}", "float32") for c in classes],
            OutputColumn("spread", "float32"),
            OutputColumn("n_frames", "int32"),
            OutputColumn("bands_used", "string", BANDS_WIDTH),
            OutputColumn("status", "string", STATUS_WIDTH),
            OutputColumn("model", "string", MODEL_WIDTH),
            OutputColumn("model_version", "string", VERSION_WIDTH))


def arrow_schema(columns: Sequence[OutputColumn], metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """The Arrow schema of ``columns``, with key-value ``metadata`` (provenance)."""
    import pyarrow as pa

    return pa.schema([pa.field(c.name, c.arrow_type()) for c in columns], metadata=dict(metadata or {}) or None)


def arrow_batch(schema: pa.Schema, values: Mapping[str, Any]) -> pa.RecordBatch:
    """A record batch of ``schema`` from the values of each column; NaN stays NaN (never null)."""
    import pyarrow as pa

    return pa.RecordBatch.from_arrays([pa.array(values[f.name], type=f.type) for f in schema], schema=schema)


def spark_schema(columns: Sequence[OutputColumn]) -> StructType:
    """The Spark SQL schema of ``columns``."""
    from pyspark.sql import types

    return types.StructType([types.StructField(c.name, c.spark_type()) for c in columns])
