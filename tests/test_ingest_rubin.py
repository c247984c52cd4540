"""Tests of Rubin alert ingest on packets built here with fastavro.

The packets follow the field names and types of the ``lsst-alert-packet``
schema (v11.1: ``diaSourceId``, ``diaSource.{diaObjectId, midpointMjdTai, band,
ra, dec}``, ``cutoutScience/Difference/Template`` as nullable bytes), written
with a reduced schema declared in ``helpers.py`` rather than a copy of the package's
schema files (GPL-3.0).  When ``lsst-alert-packet`` is installed, one test
also writes a packet with its real schema.
"""

from __future__ import annotations

import importlib.util
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from convention_rt.catalog import Catalog
from convention_rt.ingest import AlertError, ingest_rubin
from convention_rt.cli.ingest import app
from helpers import (
    RUBIN_CUTOUT_FIELDS,
    RUBIN_DIA_SOURCE,
    ccd_cutout,
    cutout_image,
    rubin_alert_schema,
    rubin_packet,
    write_rubin_alerts,
)

fastavro = pytest.importorskip("fastavro")

RENAMED = {"midpointMjdTai": "midPointTai", "band": "filterName", "dec": "decl"}  # schema 3.x/4.x names
OLD_SCHEMA = rubin_alert_schema({**RUBIN_DIA_SOURCE, "fields": [{**f, "name": RENAMED.get(f["name"], f["name"])}
                                                                for f in RUBIN_DIA_SOURCE["fields"]]})


def exposure_cutout(image: np.ndarray, bad: np.ndarray) -> bytes:
    """A cut-out in the LSST Exposure layout: IMAGE, MASK (bits named by MP_* keywords), VARIANCE."""
    mask = fits.ImageHDU(np.where(bad, 1 << 8, 1 << 5).astype(np.int32), name="MASK")  # NO_DATA or DETECTED
    mask.header["MP_BAD"] = 0
    mask.header["HIERARCH MP_DETECTED"] = 5
    mask.header["HIERARCH MP_NO_DATA"] = 8
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image.astype(np.float32), name="IMAGE"), mask,
                  fits.ImageHDU(np.ones(image.shape, np.float32), name="VARIANCE")]).writeto(buffer)
    return buffer.getvalue()


def padded(cutout: np.ndarray) -> np.ndarray:
    """What a 30 x 30 cut-out becomes: centred in 32 x 32, bordered by its median finite pixel."""
    out = np.full((32, 32), np.nanmedian(np.where(np.isfinite(cutout), cutout, np.nan)), dtype=np.float32)
    out[1:31, 1:31] = cutout
    return out


def read_objects(path: Path) -> dict[int, dict[str, Any]]:
    objects = {}
    with Catalog(path) as catalog:
        for chunk in catalog.iter_chunks():
            for i, object_id in enumerate(chunk.object_ids):
                rows = slice(chunk.offsets[i], chunk.offsets[i + 1])
                objects[int(object_id)] = {"mjd": chunk.mjd[rows], "frames": chunk.frames[rows],
                                           "band": [catalog.bands[b] for b in chunk.band[rows]],
                                           "ra": chunk.ra[i], "dec": chunk.dec[i]}
    return objects


def test_packets_become_time_ordered_objects_with_masked_padded_stamps(tmp_path: Path) -> None:
    bad = np.zeros((30, 30), dtype=bool)
    bad[4, 5] = bad[20, 11] = True
    science = {sid: cutout_image(sid) for sid in (11, 12, 13, 21)}
    packets = [
        rubin_packet(1001, 12, 60102.25, "g", cutoutScience=ccd_cutout(science[12], bad)),
        rubin_packet(7, 21, 60100.0, "y", cutoutScience=ccd_cutout(science[21])),
        rubin_packet(1001, 13, 60101.5, "i", cutoutScience=ccd_cutout(science[13])),
        rubin_packet(1001, 11, 60103.0, "r", cutoutScience=ccd_cutout(science[11])),
    ]
    out = tmp_path / "catalog.fits"

    report = ingest_rubin([write_rubin_alerts(tmp_path / "alerts.avro", packets)], out)

    objects = read_objects(out)
    assert sorted(objects) == [7, 1001]
    np.testing.assert_array_equal(objects[1001]["mjd"], [60101.5, 60102.25, 60103.0])
    assert objects[1001]["band"] == ["i", "g", "r"] and objects[7]["band"] == ["y"]
    assert objects[1001]["ra"] == pytest.approx(150.000012, abs=1e-9)
    assert objects[1001]["dec"] == pytest.approx(-30.0, abs=1e-9)
    masked = science[12].copy()
    masked[bad] = np.nan
    np.testing.assert_array_equal(objects[1001]["frames"][1], padded(masked))
    np.testing.assert_array_equal(objects[1001]["frames"][0], padded(science[13]))
    assert (report.n_epochs, report.n_masked_pixels) == (4, 2)
    assert sorted((p.object_id, p.alert_id, p.shape) for p in report.padded) == [
        (7, 21, (30, 30)), (1001, 11, (30, 30)), (1001, 12, (30, 30)), (1001, 13, (30, 30))]
    with Catalog(out) as catalog:
        assert catalog.bands == ("u", "g", "r", "i", "z", "y")
        header = catalog.header
    assert (header["SURVEY"], header["NPADDED"], header["NPADOBJ"], header["NMASKED"]) == ("Rubin", 4, 2, 2)
    assert header["PADOBJS"] == "1001,7"


@pytest.mark.parametrize("stamp", ["science", "difference", "template"])
def test_stamp_kinds_and_exposure_layout(tmp_path: Path, stamp: str) -> None:
    bad = np.zeros((30, 30), dtype=bool)
    bad[0, :] = True
    science, difference, template = cutout_image(1), cutout_image(2), cutout_image(3, (40, 40))
    packet = rubin_packet(5, 1, 60000.0, cutoutScience=exposure_cutout(science, bad),
                          cutoutDifference=ccd_cutout(difference), cutoutTemplate=ccd_cutout(template))

    report = ingest_rubin([write_rubin_alerts(tmp_path / "a.avro", [packet])], tmp_path / "c.fits", stamp=stamp)

    frame = read_objects(tmp_path / "c.fits")[5]["frames"][0]
    science = science.copy()
    science[bad] = np.nan
    expected = {"science": padded(science), "difference": padded(difference), "template": template[4:36, 4:36]}
    np.testing.assert_array_equal(frame, expected[stamp])
    assert report.n_masked_pixels == (30 if stamp == "science" else 0)
    assert bool(report.padded) == (stamp != "template")


def test_repeated_dia_source_ids_are_dropped(tmp_path: Path) -> None:
    packets = [rubin_packet(5, 1, 60000.0), rubin_packet(5, 2, 60001.0), rubin_packet(5, 1, 60000.0)]
    report = ingest_rubin([write_rubin_alerts(tmp_path / "a.avro", packets)], tmp_path / "c.fits")
    assert (report.n_packets, report.n_epochs, report.n_duplicates) == (3, 2, 1)


def test_schema_3_and_4_field_names(tmp_path: Path) -> None:
    packet = rubin_packet(5, 1, 60000.0, "z")
    packet["diaSource"] = {RENAMED.get(k, k): v for k, v in packet["diaSource"].items()}
    ingest_rubin([write_rubin_alerts(tmp_path / "old.avro", [packet], OLD_SCHEMA)], tmp_path / "c.fits")
    got = read_objects(tmp_path / "c.fits")[5]
    assert got["band"] == ["z"] and got["mjd"][0] == 60000.0 and got["dec"] == pytest.approx(-30.0)


BREAKAGES = [
    (dict(object_id=None), "diaSource.diaObjectId: diaSourceId 2", "missing_field", "belongs to no diaObject"),
    (dict(band="w"), "diaSource.band: diaObjectId 5, diaSourceId 2", "unknown_band", "unknown band 'w'"),
    (dict(cutoutScience=None), "cutoutScience: diaObjectId 5, diaSourceId 2", "missing_cutout", "missing cut-out"),
    (dict(cutoutScience=b"SIMPLE  =  T" + bytes(300)), "cutoutScience: diaObjectId 5, diaSourceId 2",
     "corrupt_cutout", "not a readable FITS image"),
]


def broken_packets(change: dict) -> list[dict]:
    arguments = {"object_id": 5, "source_id": 2, "mjd": 60001.0, "band": "r"}
    cutouts = {k: v for k, v in change.items() if k.startswith("cutout")}
    arguments.update({k: v for k, v in change.items() if not k.startswith("cutout")})
    return [rubin_packet(5, 1, 60000.0), rubin_packet(**arguments, **cutouts)]


@pytest.mark.parametrize(("change", "where", "reason", "message"), BREAKAGES)
def test_invalid_alert_raises(tmp_path: Path, change: dict, where: str, reason: str, message: str) -> None:
    path = write_rubin_alerts(tmp_path / "broken.avro", broken_packets(change))
    with pytest.raises(AlertError, match=rf"^{re.escape(f'{path}: {where}: ')}.*{re.escape(message)}") as info:
        ingest_rubin([path], tmp_path / "c.fits", on_invalid="raise")
    assert info.value.reason == reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.avro"]


@pytest.mark.parametrize(("change", "where", "reason", "message"), BREAKAGES)
def test_invalid_alert_is_skipped_under_flag(tmp_path: Path, change: dict, where: str, reason: str,
                                             message: str) -> None:
    path = write_rubin_alerts(tmp_path / "broken.avro", broken_packets(change))
    report = ingest_rubin([path], tmp_path / "c.fits")
    assert report.skipped == {reason: 1} and report.n_epochs == 1
    assert where in report.examples[reason][0]


def test_cli_rubin(tmp_path: Path) -> None:
    path = write_rubin_alerts(tmp_path / "a.avro", [rubin_packet(5, 1, 60000.0), rubin_packet(6, 2, 60000.0)])
    result = CliRunner().invoke(app, ["rubin", str(path), "--out", str(tmp_path / "c.fits"), "--stamp", "template"])
    assert result.exit_code == 0, result.output
    assert "2 objects, 2 epochs of Rubin template stamps" in result.stdout
    assert "warning: padded 2 short cut-outs" in result.stderr


def _blank(kind: Any) -> Any:
    """A valid value of an Avro type: null where allowed, else zero or empty."""
    if isinstance(kind, list):
        return None if "null" in kind else _blank(kind[0])
    if isinstance(kind, dict):
        if kind["type"] == "record":
            return {f["name"]: f.get("default", _blank(f["type"])) for f in kind["fields"]}
        return [] if kind["type"] == "array" else _blank(kind["type"])
    return {"long": 0, "int": 0, "double": 0.0, "float": 0.0, "string": "", "boolean": False, "bytes": b""}[kind]


def test_real_lsst_alert_packet_schema(tmp_path: Path) -> None:
    try:  # the schema files only: importing the package needs its other dependencies
        spec = importlib.util.find_spec("lsst.alert.packet")
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lsst-alert-packet is not installed")
    root = Path(next(iter(spec.submodule_search_locations))) / "schema"
    major, minor = (root / "latest.txt").read_text().strip().split(".")
    folder = root / major / minor
    names = ["diaSource", "diaForcedSource", "diaObject", "ssSource", "mpc_orbits", "alert"]
    files = [folder / f"lsst.v{major}_{minor}.{name}.avsc" for name in names]
    schema = fastavro.schema.load_schema_ordered([str(f) for f in files if f.is_file()])
    packet = _blank(schema)
    packet["diaSource"].update(diaSourceId=3, diaObjectId=9, midpointMjdTai=60500.0, ra=10.0, dec=-5.0, band="u")
    packet["cutoutScience"] = ccd_cutout(cutout_image(3))
    path = tmp_path / "real.avro"
    with open(path, "wb") as handle:
        fastavro.writer(handle, schema, [packet])
    report = ingest_rubin([path], tmp_path / "c.fits")
    assert (report.n_objects, report.n_epochs) == (1, 1)
    assert read_objects(tmp_path / "c.fits")[9]["band"] == ["u"]


# -- ids that need all 64 bits ----------------------------------------------------------------------
def write_parquet(path: Path, packets: list[dict]) -> Path:
    """Packets as a Parquet table whose ids are unsigned 64-bit columns (Avro's long is signed)."""
    pyarrow = pytest.importorskip("pyarrow")
    parquet = pytest.importorskip("pyarrow.parquet")
    uint64, double = pyarrow.uint64(), pyarrow.float64()
    dia_source = pyarrow.struct([("diaSourceId", uint64), ("diaObjectId", uint64), ("midpointMjdTai", double),
                                 ("ra", double), ("dec", double), ("band", pyarrow.string())])
    schema = pyarrow.schema([("diaSourceId", uint64), ("diaSource", dia_source),
                             *((name, pyarrow.binary()) for name in RUBIN_CUTOUT_FIELDS)])
    rows = [{k: v for k, v in packet.items() if k != "prvDiaSources"} for packet in packets]
    parquet.write_table(pyarrow.Table.from_pylist(rows, schema=schema), path)
    return path


def with_source_id(packet: dict, source_id: int) -> dict:
    """``packet`` (made with a small id, which seeds its cut-out) under another diaSourceId."""
    packet["diaSourceId"] = packet["diaSource"]["diaSourceId"] = source_id
    return packet


def test_unsigned_ids_beyond_int64_are_kept_exactly_as_decimal_ids(tmp_path: Path) -> None:
    top = 2**64 - 1
    packets = [
        with_source_id(rubin_packet(top, 1, 60100.0, "g"), 2**63 + 1),
        with_source_id(rubin_packet(5, 2, 60100.0, "r"), 2**64 - 2),
        with_source_id(rubin_packet(top, 3, 60100.0, "i"), 2**63),  # same time: ordered by diaSourceId
        with_source_id(rubin_packet(top, 3, 60100.0, "i"), 2**63),  # the same source again: dropped
    ]
    out = tmp_path / "c.fits"

    report = ingest_rubin([write_parquet(tmp_path / "unsigned.parquet", packets)], out)

    assert (report.n_objects, report.n_epochs, report.n_duplicates, report.decimal_ids) == (2, 3, 1, True)
    assert any("written as a decimal string" in line for line in report.notes())
    with Catalog(out) as catalog:
        assert catalog.id_width == 20 and catalog.header["IDDECIM"] is True
        (chunk,) = list(catalog.iter_chunks())
    assert chunk.object_ids.tolist() == ["5", str(top)]  # numeric order, not text order
    rows = slice(chunk.offsets[1], chunk.offsets[2])
    assert [catalog.bands[b] for b in chunk.band[rows]] == ["i", "g"]
    np.testing.assert_array_equal(chunk.frames[rows], [padded(cutout_image(3)), padded(cutout_image(1))])


def test_ids_within_int64_stay_integers_at_both_ends(tmp_path: Path) -> None:
    low, high = -(2**63), 2**63 - 1
    packets = [with_source_id(rubin_packet(high, 1, 60100.0), low),
               with_source_id(rubin_packet(low, 2, 60100.0), high), rubin_packet(high, 3, 60099.0)]
    report = ingest_rubin([write_rubin_alerts(tmp_path / "ends.avro", packets)], tmp_path / "c.fits")
    assert report.decimal_ids is False and not any("decimal" in line for line in report.notes())
    objects = read_objects(tmp_path / "c.fits")
    assert sorted(objects) == [low, high]
    np.testing.assert_array_equal(objects[high]["mjd"], [60099.0, 60100.0])


def test_ids_beyond_64_bits_are_invalid_alerts(tmp_path: Path) -> None:
    from convention_rt.ingest.rubin import parse_packet

    with pytest.raises(AlertError, match=r"x.avro: diaSource.diaObjectId: diaSourceId 1: 18446744073709551616 fits "
                                         "neither a signed nor an unsigned 64-bit integer"):
        parse_packet(rubin_packet(2**64, 1, 60000.0), "x.avro", "science")
