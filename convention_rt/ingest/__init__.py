"""Build catalogs from alert packets: ZTF (Avro or Fink-style Parquet) and Rubin (Avro).

Needs the optional ``ingest`` extra (fastavro, pyarrow), imported only when a
file of that format is read::

    pip install 'convention-rt[ingest]'

>>> from convention_rt.ingest import ingest_ztf
>>> report = ingest_ztf(["alerts.parquet"], "catalog.fits")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from convention_rt.ingest.alerts import STAMP_KINDS, AlertError, IngestWarning
from convention_rt.ingest.build import ON_INVALID, IngestReport, PaddedCutout, build_catalog
from convention_rt.ingest.rubin import RUBIN
from convention_rt.ingest.ztf import ZTF
from convention_rt.policies import OnInvalidAlert, StampKind

__all__ = [
    "ON_INVALID",
    "STAMP_KINDS",
    "AlertError",
    "IngestReport",
    "IngestWarning",
    "PaddedCutout",
    "ingest_rubin",
    "ingest_ztf",
]


def ingest_ztf(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    stamp: StampKind | str = StampKind.science,
    on_invalid: OnInvalidAlert | str = OnInvalidAlert.skip,
    overwrite: bool = False,
) -> IngestReport:
    """Write a catalog from ZTF alert packets.

    Parameters
    ----------
    paths : sequence of str or Path
        Avro container files (one or many alerts each) and/or Fink-style
        Parquet tables (one alert per row).
    out : str or Path
        The catalog to write: string object ids (``objectId``), bands
        ``g,r,i``, one 32 x 32 float32 stamp per alert.
    stamp : {"science", "difference", "template"}
        Which cut-out becomes the stamp.
    on_invalid : {"skip", "warn", "raise"}
        Drop and count invalid alerts, drop them with a warning, or stop at the
        first one (:class:`~convention_rt.policies.OnInvalidAlert`; an invalid
        alert is never kept, so there is no ``flag``).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    IngestReport

    Raises
    ------
    UsageError
        Bad options, ``out`` exists, or fastavro/pyarrow is not installed.
    BadInputError
        A missing input file, no usable alert, or (``on_invalid="raise"``) an
        :class:`AlertError` naming the file, the field and the alert.
    """
    return build_catalog(paths, out, survey=ZTF, stamp=stamp, on_invalid=on_invalid, overwrite=overwrite)


def ingest_rubin(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    stamp: StampKind | str = StampKind.science,
    on_invalid: OnInvalidAlert | str = OnInvalidAlert.skip,
    overwrite: bool = False,
) -> IngestReport:
    """Write a catalog from Rubin alert packets.

    Parameters
    ----------
    paths : sequence of str or Path
        Avro container files of ``lsst-alert-packet`` alerts (or Parquet tables
        with the same fields).
    out : str or Path
        The catalog to write: integer object ids (``diaObjectId``; all
        written as decimal strings when one is ``2**63`` or more, see
        :attr:`IngestReport.decimal_ids`), bands ``u,g,r,i,z,y``, one 32 x 32
        float32 stamp per alert (mask-flagged pixels NaN).
    stamp : {"science", "difference", "template"}
        Which cut-out becomes the stamp.
    on_invalid : {"skip", "warn", "raise"}
        Drop and count invalid alerts, drop them with a warning, or stop at the
        first one (:class:`~convention_rt.policies.OnInvalidAlert`; an invalid
        alert is never kept, so there is no ``flag``).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    IngestReport

    Raises
    ------
    UsageError
        Bad options, ``out`` exists, or fastavro/pyarrow is not installed.
    BadInputError
        A missing input file, no usable alert, or (``on_invalid="raise"``) an
        :class:`AlertError` naming the file, the field and the alert.
    """
    return build_catalog(paths, out, survey=RUBIN, stamp=stamp, on_invalid=on_invalid, overwrite=overwrite)
