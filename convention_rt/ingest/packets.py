"""Read alert packets from files: Avro container files and (Fink-style) Parquet tables.

The format is detected from the file's first bytes, not its name.  fastavro
and pyarrow belong to the optional ``ingest`` extra and are imported only when a
file of their format is read.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from convention_rt.errors import UsageError
from convention_rt.ingest.alerts import AlertError

__all__ = ["AVRO_MAGIC", "PARQUET_MAGIC", "iter_packets", "require"]

AVRO_MAGIC = b"Obj\x01"
PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH_ROWS = 256


def require(module: str) -> ModuleType:
    """Import an optional dependency of ingest, or say how to install it.

    Raises
    ------
    UsageError
        When ``module`` is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(f"reading alert packets needs {module}: install convention-rt[ingest] "
                         f"(pip install 'convention-rt[ingest]')") from exc


def iter_packets(path: str | Path, columns: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the alert packets of one file, in file order.

    Parameters
    ----------
    path : str or Path
        An Avro container file (one or many alerts) or a Parquet table with one
        alert per row.
    columns : sequence of str, optional
        Top-level fields the caller needs; a Parquet reader reads only those
        (all must exist).  Avro packets always come whole.

    Yields
    ------
    dict
        One packet, nested records as dicts, ``bytes`` for binary fields.

    Raises
    ------
    AlertError
        With ``reason="unreadable_file"`` when the file cannot be opened, is
        neither format, or is corrupt (possibly after some packets were yielded).
    UsageError
        When the reader the format needs is not installed.
    """
    source = str(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise AlertError(source, "file", f"cannot read ({exc.strerror or exc})", reason="unreadable_file") from exc
    if magic == AVRO_MAGIC:
        yield from _avro_packets(source)
    elif magic == PARQUET_MAGIC:
        yield from _parquet_packets(source, columns)
    else:
        raise AlertError(source, "file", f"neither an Avro container file nor a Parquet file "
                         f"(starts with {magic!r})", reason="unreadable_file")


def _avro_packets(source: str) -> Iterator[dict[str, Any]]:
    fastavro = require("fastavro")
    errors = (ValueError, EOFError, LookupError, TypeError, OverflowError, zlib.error,
              fastavro.schema.SchemaParseException, fastavro.read.SchemaResolutionError)
    count = 0
    with open(source, "rb") as handle:
        try:
            for packet in fastavro.reader(handle):
                yield packet
                count += 1
        except errors as exc:
            raise AlertError(source, "Avro container", f"corrupt after {count} packets "
                             f"({type(exc).__name__}: {exc})", reason="unreadable_file") from exc


def _parquet_packets(source: str, columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    pyarrow = require("pyarrow")
    parquet = require("pyarrow.parquet")
    errors = (pyarrow.ArrowException, ValueError, OSError, EOFError)
    try:
        table = parquet.ParquetFile(source)
    except errors as exc:
        raise AlertError(source, "Parquet table", f"unreadable ({type(exc).__name__}: {exc})",
                         reason="unreadable_file") from exc
    missing = [name for name in columns or () if name not in set(table.schema_arrow.names)]
    if missing:
        table.close()
        raise AlertError(source, missing[0], "missing column", reason="unreadable_file")
    count = 0
    try:
        for batch in table.iter_batches(batch_size=PARQUET_BATCH_ROWS,
                                        columns=None if columns is None else list(columns)):
            for packet in batch.to_pylist():
                yield packet
                count += 1
    except errors as exc:
        raise AlertError(source, "Parquet table", f"corrupt after {count} rows ({type(exc).__name__}: {exc})",
                         reason="unreadable_file") from exc
    finally:
        table.close()
