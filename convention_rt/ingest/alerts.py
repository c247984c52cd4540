"""What the alert readers hand to the catalog builder: alerts, their errors, survey descriptions.

A reader turns one packet (a mapping, as decoded from Avro or Parquet) into an
:class:`Alert`, or raises an :class:`AlertError` that names the file, the field
and the alert.  The builder decides, per the ``on_invalid`` policy, whether that
error stops the ingest or only skips the alert.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from convention_rt.errors import BadInputError
from convention_rt.photometry import Photometry
from convention_rt.policies import StampKind

__all__ = [
    "Alert",
    "AlertError",
    "FieldReader",
    "IngestWarning",
    "SkipReason",
    "StampKind",
    "STAMP_KINDS",
    "Survey",
]

#: The cut-out kinds (:class:`~convention_rt.policies.StampKind`).
STAMP_KINDS: tuple[str, ...] = StampKind.values()

ID_MIN, ID_MAX = -(2**63), 2**64 - 1
"""Range of alert and object ids: signed (Avro ``long``) or unsigned (Parquet ``uint64``) 64-bit integers."""

#: Why an alert (or a whole file) is skipped: the codes that count skipped alerts.
SkipReason = Literal["unreadable_file", "missing_field", "bad_value", "missing_cutout", "corrupt_cutout",
                 "unknown_band"]


class IngestWarning(UserWarning):
    """An alert dropped under ``on_invalid="warn"``."""


class AlertError(BadInputError):
    """An alert packet (or a whole file) that cannot become an epoch.

    The message is one line: ``file: field: objectId X, candid Y: what is wrong``.

    Parameters
    ----------
    source : str
        The input file.
    field : str
        The packet field at fault (dotted for nested fields), or the container
        format for a file that cannot be read.
    message : str
        What is wrong; newlines are folded.
    reason : SkipReason
        Short code used to count skipped alerts, e.g. ``"corrupt_cutout"``.
    ids : sequence of (str, object)
        Identifiers of the alert, e.g. ``(("objectId", "ZTF18..."), ("candid", 1))``.
    """

    def __init__(self, source: str, field: str, message: str, *, reason: SkipReason,
                 ids: Sequence[tuple[str, object]] = ()) -> None:
        where = f"{source}: {field}"
        if ids:
            where += ": " + ", ".join(f"{name} {value}" for name, value in ids)
        super().__init__(f"{where}: {' '.join(str(message).split())}")
        self.source = source
        self.field = field
        self.reason = reason
        self.ids = tuple(ids)


@dataclass(frozen=True)
class Alert:
    """One epoch of one object, as read from an alert packet.

    Attributes
    ----------
    object_id : str or int
        ``objectId`` (ZTF) or ``diaObjectId`` (Rubin), as read: a Python int
        is exact, also above ``2**63 - 1`` (unsigned 64-bit ids).
    alert_id : int
        ``candid`` (ZTF) or ``diaSourceId`` (Rubin): repeated ids are dropped;
        exact Python int, signed or unsigned 64-bit.
    mjd : float
        Epoch time, Modified Julian Date.
    band : str
        Band name, one of the survey's bands.
    ra, dec : float
        Position of the detection in degrees.
    stamp : ndarray, shape (S, S), float32, native byte order
        The chosen cut-out fitted to the catalog's stamp size; NaN where the
        cut-out has no valid pixel.
    cutout_shape : (int, int)
        Shape of the cut-out as it came in the packet.
    padded : bool
        True when the cut-out was smaller than nominal and had to be padded.
    masked_pixels : int
        Pixels set to NaN because the cut-out's mask plane flags them bad.
    zero_point : float
        AB zero point of the stamp's pixels when it varies per epoch (ZTF
        ``magzpsci``); NaN when the survey's unit fixes it (Rubin nJy).
    """

    object_id: str | int
    alert_id: int
    mjd: float
    band: str
    ra: float
    dec: float
    stamp: NDArray[np.float32]
    cutout_shape: tuple[int, int]
    padded: bool
    masked_pixels: int = 0
    zero_point: float = math.nan


@dataclass(frozen=True)
class Survey:
    """How to read one survey's alert packets.

    Attributes
    ----------
    name : str
        Survey name written to the catalog header (``SURVEY``).
    bands : tuple of str
        The catalog's bands, in order.
    string_ids : bool
        Object ids are strings (ZTF ``objectId``) rather than integers.
    columns : callable
        ``columns(stamp)`` -> the top-level fields a reader needs for that stamp
        kind (lets a Parquet reader skip the other cut-outs).
    parse : callable
        ``parse(packet, source, stamp)`` -> :class:`Alert`; raises :class:`AlertError`.
    photometry : callable
        ``photometry(stamp)`` -> the :class:`~convention_rt.photometry.Photometry`
        of that stamp kind (written to the catalog's header).
    """

    name: str
    bands: tuple[str, ...]
    string_ids: bool
    columns: Callable[[StampKind], tuple[str, ...]]
    parse: Callable[[Mapping[str, Any], str, StampKind], Alert]
    photometry: Callable[[StampKind], Photometry]


class FieldReader:
    """Typed access to packet fields; every failure is an :class:`AlertError`.

    Parameters
    ----------
    source : str
        The file the packet comes from (named in errors).

    Attributes
    ----------
    ids : list of (str, object)
        Identifiers read so far, quoted in later errors.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.ids: list[tuple[str, object]] = []

    def error(self, field: str, message: str, reason: SkipReason) -> AlertError:
        """An :class:`AlertError` about ``field`` of the current alert."""
        return AlertError(self.source, field, message, reason=reason, ids=self.ids)

    def value(self, record: Mapping[str, Any], names: str | Sequence[str], prefix: str = "") -> Any:
        """The first present, non-null field among ``names`` (schema versions rename fields)."""
        names = (names,) if isinstance(names, str) else tuple(names)
        if not isinstance(record, Mapping):
            raise self.error(prefix.rstrip(".") or names[0], f"must be a record, got {type(record).__name__}",
                             "bad_value")
        for name in names:
            if record.get(name) is not None:
                return record[name]
        raise self.error(prefix + names[0], "missing or null", "missing_field")

    def record(self, record: Mapping[str, Any], name: str, prefix: str = "") -> Mapping[str, Any]:
        """A nested record field."""
        value = self.value(record, name, prefix)
        if not isinstance(value, Mapping):
            raise self.error(prefix + name, f"must be a record, got {type(value).__name__}", "bad_value")
        return value

    def text(self, record: Mapping[str, Any], name: str, prefix: str = "") -> str:
        """A non-empty string field."""
        value = self.value(record, name, prefix)
        if not isinstance(value, str) or not value.strip():
            raise self.error(prefix + name, f"must be a non-empty string, got {value!r}", "bad_value")
        return value.strip()

    def integer(self, record: Mapping[str, Any], names: str | Sequence[str], prefix: str = "") -> int:
        """An integer field."""
        value = self.value(record, names, prefix)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            name = names if isinstance(names, str) else names[0]
            raise self.error(prefix + name, f"must be an integer, got {value!r}", "bad_value")
        return int(value)

    def identifier(self, record: Mapping[str, Any], names: str | Sequence[str], prefix: str = "") -> int:
        """A 64-bit id: an integer of a signed (Avro ``long``) or unsigned (Parquet ``uint64``) column.

        Returned as a Python int, exact whatever its size.
        """
        value = self.integer(record, names, prefix)
        if not ID_MIN <= value <= ID_MAX:
            name = names if isinstance(names, str) else names[0]
            raise self.error(prefix + name, f"{value} fits neither a signed nor an unsigned 64-bit integer",
                             "bad_value")
        return value

    def ascii_text(self, record: Mapping[str, Any], name: str, prefix: str = "") -> str:
        """A non-empty string field of printable ASCII characters (what a FITS character column holds)."""
        value = self.text(record, name, prefix)
        if not all(" " <= char <= "~" for char in value):
            raise self.error(prefix + name, f"{value!r} is not printable ASCII: a catalog stores it in a FITS "
                             "character column, which holds ASCII only", "bad_value")
        return value

    def real(self, record: Mapping[str, Any], names: str | Sequence[str], prefix: str = "",
             *, low: float = -math.inf, high: float = math.inf) -> float:
        """A finite number field within ``[low, high]``."""
        value = self.value(record, names, prefix)
        name = names if isinstance(names, str) else names[0]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.error(prefix + name, f"must be a number, got {value!r}", "bad_value")
        number = float(value)
        if not (math.isfinite(number) and low <= number <= high):
            raise self.error(prefix + name, f"must be a finite number in [{low}, {high}], got {number}",
                             "bad_value")
        return number
