"""ZTF alert packets -> :class:`~convention_rt.ingest.records.Alert` records.

A ZTF packet (schema 3.x/4.x, as Avro or Fink-style Parquet) carries one
detection (``candidate``), its history (``prv_candidates``, which has no
cut-outs and is therefore not used) and three cut-outs
``{fileName, stampData}`` whose ``stampData`` is a gzipped 63 x 63 FITS image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from convention_rt.ingest import cutouts
from convention_rt.ingest.cutouts import PadSide
from convention_rt.ingest.records import Alert, FieldReader, StampKind, Survey

__all__ = ["BANDS", "CUTOUT_FIELDS", "CUTOUT_SIZE", "FID_BANDS", "ZTF", "parse_packet"]

FID_BANDS: dict[int, str] = {1: "g", 2: "r", 3: "i"}
"""ZTF filter ids (``candidate.fid``) and their bands."""

BANDS: tuple[str, ...] = ("g", "r", "i")
CUTOUT_SIZE = 63
"""Side of a complete ZTF cut-out; smaller ones were cut by a chip edge."""

QUADRANT_SHAPE = (3080, 3072)
"""Rows (y) and columns (x) of a ZTF readout-quadrant image, the frame of ``xpos``/``ypos``."""

CUTOUT_FIELDS: dict[str, str] = {
    "science": "cutoutScience",
    "difference": "cutoutDifference",
    "template": "cutoutTemplate",
}
MJD_OFFSET = 2400000.5


def columns(stamp: StampKind) -> tuple[str, ...]:
    """The packet fields :func:`parse_packet` reads for stamp kind ``stamp``."""
    return ("objectId", "candid", "candidate", CUTOUT_FIELDS[stamp])


def parse_packet(packet: Mapping[str, Any], source: str, stamp: StampKind) -> Alert:
    """Read one ZTF packet into an :class:`Alert`.

    Parameters
    ----------
    packet : mapping
        A decoded alert: ``objectId``, ``candid``, ``candidate`` (``jd``,
        ``fid``, ``ra``, ``dec``, optionally ``xpos``/``ypos``) and the cut-out
        field of ``stamp``.
    source : str
        The file the packet comes from (named in errors).
    stamp : {"science", "difference", "template"}
        Which cut-out becomes the epoch's stamp.

    Returns
    -------
    Alert
        ``mjd = jd - 2400000.5``; band from ``fid`` (1 g, 2 r, 3 i); the
        cut-out centre-cropped to 32 x 32, padded first when a chip edge cut it
        (on the side of the edge, judged from ``xpos``/``ypos``).

    Raises
    ------
    AlertError
        Missing or invalid field (an ``objectId`` that is not printable ASCII,
        a ``candid`` outside 64 bits), unknown ``fid``, missing or corrupt cut-out.
    """
    fields = FieldReader(source)
    object_id = fields.ascii_text(packet, "objectId")
    fields.ids.append(("objectId", object_id))
    candid = fields.identifier(packet, "candid")
    fields.ids.append(("candid", candid))
    candidate = fields.record(packet, "candidate")
    jd = fields.real(candidate, "jd", "candidate.", low=MJD_OFFSET)
    fid = fields.integer(candidate, "fid", "candidate.")
    if fid not in FID_BANDS:
        known = ", ".join(f"{key}={band}" for key, band in FID_BANDS.items())
        raise fields.error("candidate.fid", f"unknown filter id {fid} (ZTF has {known})", "unknown_band")
    ra = fields.real(candidate, "ra", "candidate.", low=0.0, high=360.0)
    dec = fields.real(candidate, "dec", "candidate.", low=-90.0, high=90.0)

    name = CUTOUT_FIELDS[stamp]
    cutout = packet.get(name)
    data = cutout.get("stampData") if isinstance(cutout, Mapping) else None
    if not data:
        raise fields.error(f"{name}.stampData", "missing cut-out", "missing_cutout")
    try:
        image, _ = cutouts.decode_image(data)
        pixels, padded = cutouts.fit_stamp(image, cutouts.STAMP_SIZE, nominal=CUTOUT_SIZE,
                                           pad_side=(_edge_side(candidate.get("ypos"), QUADRANT_SHAPE[0]),
                                                     _edge_side(candidate.get("xpos"), QUADRANT_SHAPE[1])))
    except cutouts.CutoutError as exc:
        raise fields.error(f"{name}.stampData", str(exc), "corrupt_cutout") from exc
    return Alert(object_id=object_id, alert_id=candid, mjd=jd - MJD_OFFSET, band=FID_BANDS[fid], ra=ra,
                 dec=dec, stamp=pixels, cutout_shape=(int(image.shape[0]), int(image.shape[1])),
                 padded=padded)


def _edge_side(position: Any, length: int) -> PadSide:
    """Which end of an axis a cut-out lost pixels at: the chip edge nearer to the source."""
    if not isinstance(position, (int, float)) or not math.isfinite(position):
        return "centre"
    return "low" if position < length / 2 else "high"


ZTF = Survey(name="ZTF", bands=BANDS, string_ids=True, columns=columns, parse=parse_packet)
"""How :func:`~convention_rt.ingest.build.build_catalog` reads ZTF packets."""
