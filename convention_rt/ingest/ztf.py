"""ZTF alert packets -> :class:`~convention_rt.ingest.alerts.Alert` records.

A ZTF packet (schema 3.x/4.x, as Avro or Fink-style Parquet) carries one
detection (``candidate``), its history (``prv_candidates``, which has no
cut-outs and is therefore not used) and three cut-outs
``{fileName, stampData}`` whose ``stampData`` is a gzipped 63 x 63 FITS image.

Photometry (:func:`photometry`): ZTF pixels are 1.01 arcsec; the science and
difference cut-outs are in detector counts (DN) of AB zero point
``candidate.magzpsci``, which varies per epoch and is kept in the catalog's
``MAGZP`` column; the science image carries the sky, the difference image does
not.  The template (reference) cut-out has its own zero point, which the packet
does not carry: a catalog of templates cannot be converted to physical fluxes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from convention_rt.ingest import cutouts
from convention_rt.ingest.alerts import Alert, FieldReader, StampKind, Survey
from convention_rt.ingest.cutouts import PadSide
from convention_rt.photometry import Photometry

__all__ = ["BANDS", "CUTOUT_FIELDS", "CUTOUT_SIZE", "FID_BANDS", "PIXEL_SCALE", "ZTF", "parse_packet",
           "photometry"]

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
PIXEL_SCALE = 1.01
"""Arcsec per pixel of the ZTF camera."""
ZERO_POINT_RANGE = (10.0, 40.0)
"""Plausible AB zero points of one count (``magzpsci`` is about 26 for 30 s exposures)."""


def photometry(stamp: StampKind) -> Photometry:
    """What a ZTF cut-out of kind ``stamp`` is (see the module's docstring)."""
    if stamp == "template":
        return Photometry(profile="ztf", pixel_scale=PIXEL_SCALE, flux_unit="DN", sky_subtracted=False,
                          stamp_kind="template")
    return Photometry(profile="ztf", pixel_scale=PIXEL_SCALE, flux_unit="DN", zero_point_per_epoch=True,
                      sky_subtracted=stamp == "difference", stamp_kind=stamp)


def columns(stamp: StampKind) -> tuple[str, ...]:
    """The packet fields :func:`parse_packet` reads for stamp kind ``stamp``."""
    return ("objectId", "candid", "candidate", CUTOUT_FIELDS[stamp])


def parse_packet(packet: Mapping[str, Any], source: str, stamp: StampKind) -> Alert:
    """Read one ZTF packet into an :class:`Alert`.

    Parameters
    ----------
    packet : mapping
        A decoded alert: ``objectId``, ``candid``, ``candidate`` (``jd``,
        ``fid``, ``ra``, ``dec``, ``magzpsci`` (for science and difference
        stamps), optionally ``xpos``/``ypos``) and the cut-out field of ``stamp``.
    source : str
        The file the packet comes from (named in errors).
    stamp : {"science", "difference", "template"}
        Which cut-out becomes the epoch's stamp.

    Returns
    -------
    Alert
        ``mjd = jd - 2400000.5``; band from ``fid`` (1 g, 2 r, 3 i); the
        cut-out centre-cropped to 32 x 32, padded first when a chip edge cut it
        (on the side of the edge, judged from ``xpos``/``ypos``), in counts;
        ``zero_point = magzpsci`` (NaN for templates).

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
    zero_point = math.nan
    if stamp != "template":  # the counts of a science or difference stamp mean nothing without it
        zero_point = fields.real(candidate, "magzpsci", "candidate.", low=ZERO_POINT_RANGE[0],
                                 high=ZERO_POINT_RANGE[1])

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
                 padded=padded, zero_point=zero_point)


def _edge_side(position: Any, length: int) -> PadSide:
    """Which end of an axis a cut-out lost pixels at: the chip edge nearer to the source."""
    if not isinstance(position, (int, float)) or not math.isfinite(position):
        return "centre"
    return "low" if position < length / 2 else "high"


ZTF = Survey(name="ZTF", bands=BANDS, string_ids=True, columns=columns, parse=parse_packet, photometry=photometry)
"""How :func:`~convention_rt.ingest.build.build_catalog` reads ZTF packets."""
