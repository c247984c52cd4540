"""Rubin (LSST) alert packets -> :class:`~convention_rt.ingest.alerts.Alert` records.

A Rubin packet (``lsst-alert-packet`` schema, 5.0 to 11.x; the 3.x/4.x field
names ``midPointTai``/``filterName``/``decl`` are read too) carries one
``diaSource`` (``diaSourceId``, ``diaObjectId``, ``midpointMjdTai``, ``band``,
``ra``, ``dec``), its history (``prvDiaSources``, without cut-outs, not used)
and the cut-outs ``cutoutScience``/``cutoutDifference``/``cutoutTemplate`` as
FITS bytes with image, variance and mask planes (about 30 x 30 pixels).

Photometry (:func:`photometry`): Rubin pixels are 0.2 arcsec and every cut-out
is in nanojansky (AB zero point 31.4), background-subtracted: the science
cut-out comes from the calibrated exposure (``calexp``), the template from a
background-subtracted coadd.  A cut-out whose ``BUNIT`` says another unit is
refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convention_rt.ingest import cutouts
from convention_rt.ingest.alerts import Alert, FieldReader, StampKind, Survey
from convention_rt.photometry import Photometry

__all__ = ["BANDS", "CUTOUT_FIELDS", "PIXEL_SCALE", "RUBIN", "parse_packet", "photometry"]

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
CUTOUT_FIELDS: dict[str, str] = {
    "science": "cutoutScience",
    "difference": "cutoutDifference",
    "template": "cutoutTemplate",
}
PIXEL_SCALE = 0.2
"""Arcsec per pixel of the LSST camera."""
FLUX_UNIT = "nJy"


def photometry(stamp: StampKind) -> Photometry:
    """What a Rubin cut-out of kind ``stamp`` is (see the module's docstring)."""
    return Photometry(profile="lsst", pixel_scale=PIXEL_SCALE, flux_unit=FLUX_UNIT, sky_subtracted=True,
                      stamp_kind=stamp)


def columns(stamp: StampKind) -> tuple[str, ...]:
    """The packet fields :func:`parse_packet` reads for stamp kind ``stamp``."""
    return ("diaSource", CUTOUT_FIELDS[stamp])


def parse_packet(packet: Mapping[str, Any], source: str, stamp: StampKind) -> Alert:
    """Read one Rubin packet into an :class:`Alert`.

    Parameters
    ----------
    packet : mapping
        A decoded alert with ``diaSource`` and the cut-out field of ``stamp``.
    source : str
        The file the packet comes from (named in errors).
    stamp : {"science", "difference", "template"}
        Which cut-out becomes the epoch's stamp.

    Returns
    -------
    Alert
        ``mjd`` = ``midpointMjdTai`` (MJD, TAI); the cut-out's image plane with
        pixels of the mask's bad planes (:data:`~convention_rt.ingest.cutouts.BAD_MASK_PLANES`)
        set to NaN, centre-padded (and flagged) or centre-cropped to 32 x 32.

    Raises
    ------
    AlertError
        Missing or invalid field, a source with no ``diaObjectId`` (e.g. a
        solar-system detection), unknown band, missing or corrupt cut-out.
    """
    fields = FieldReader(source)
    dia_source = fields.record(packet, "diaSource")
    source_id = fields.identifier(dia_source, "diaSourceId", "diaSource.")
    fields.ids.append(("diaSourceId", source_id))
    if dia_source.get("diaObjectId") is None:
        raise fields.error("diaSource.diaObjectId", "null: the source belongs to no diaObject (e.g. a "
                           "solar-system detection) and has no light curve", "missing_field")
    object_id = fields.identifier(dia_source, "diaObjectId", "diaSource.")
    fields.ids.insert(0, ("diaObjectId", object_id))
    mjd = fields.real(dia_source, ("midpointMjdTai", "midPointTai"), "diaSource.", low=0.0)
    band = fields.value(dia_source, ("band", "filterName"), "diaSource.")
    if band not in BANDS:
        raise fields.error("diaSource.band", f"unknown band {band!r} (Rubin has {', '.join(BANDS)})",
                           "unknown_band")
    ra = fields.real(dia_source, "ra", "diaSource.", low=0.0, high=360.0)
    dec = fields.real(dia_source, ("dec", "decl"), "diaSource.", low=-90.0, high=90.0)

    name = CUTOUT_FIELDS[stamp]
    data = packet.get(name)
    if not data:
        raise fields.error(name, "missing cut-out", "missing_cutout")
    try:
        image, masked, unit = cutouts.decode_cutout(data)
        pixels, padded = cutouts.fit_stamp(image, cutouts.STAMP_SIZE)
    except cutouts.CutoutError as exc:
        raise fields.error(name, str(exc), "corrupt_cutout") from exc
    if unit is not None and unit.replace(" ", "").lower() not in ("njy", "nanojansky"):
        raise fields.error(f"{name}.BUNIT", f"pixels in {unit!r}; Rubin cut-outs are in nJy, and another unit "
                           f"would be taken for it", "bad_value")
    return Alert(object_id=object_id, alert_id=source_id, mjd=mjd, band=band, ra=ra, dec=dec, stamp=pixels,
                 cutout_shape=(int(image.shape[0]), int(image.shape[1])), padded=padded, masked_pixels=masked)


RUBIN = Survey(name="Rubin", bands=BANDS, string_ids=False, columns=columns, parse=parse_packet,
               photometry=photometry)
"""How :func:`~convention_rt.ingest.build.build_catalog` reads Rubin packets."""
