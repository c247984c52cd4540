"""Tests of ZTF alert ingest (convention_rt.ingest.ztf, build, packets, cli) on trimmed real packets."""

from __future__ import annotations

import copy
import gzip
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from typer.testing import CliRunner

from convention_rt.catalog import Catalog
from convention_rt.errors import BadInputError, UsageError
from convention_rt.ingest import AlertError, IngestWarning, ingest_ztf
from convention_rt.cli.ingest import app
from helpers import stamp_data

DATA = Path(__file__).parent / "data" / "ztf"
PARQUET = DATA / "20240606_history_3objects.parquet"
AVRO_32 = DATA / "2019_01_10_739260766315010006.avro"
AVRO_33 = DATA / "472263571115115000.avro"
CUTOUTS = {"science": "cutoutScience", "difference": "cutoutDifference", "template": "cutoutTemplate"}


@pytest.fixture
def fastavro() -> Any:
    return pytest.importorskip("fastavro")


@pytest.fixture
def pyarrow() -> Any:
    pytest.importorskip("pyarrow.parquet")
    import pyarrow

    return pyarrow


def read_stamp(data: bytes) -> np.ndarray:
    """A ZTF stampData decoded independently of the code under test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # ZTF's non-standard SIMPLE card
        with fits.open(io.BytesIO(gzip.decompress(data))) as hdul:
            return hdul[0].data.astype(np.float32)


def read_avro(fastavro: Any, path: Path) -> tuple[dict, list[dict]]:
    with open(path, "rb") as handle:
        reader = fastavro.reader(handle)
        return reader.writer_schema, list(reader)


def write_avro(fastavro: Any, path: Path, schema: dict, packets: list[dict]) -> Path:
    with open(path, "wb") as handle:
        fastavro.writer(handle, schema, packets)
    return path


def make_packet(base: dict, object_id: str, candid: int, jd: float, *, fid: int = 2,
                image: np.ndarray | None = None, ypos: float = 1500.0) -> dict:
    packet = copy.deepcopy(base)
    packet["objectId"] = object_id
    packet["candid"] = candid
    packet["candidate"].update(candid=candid, jd=jd, fid=fid, ypos=ypos)
    if image is not None:
        packet["cutoutScience"]["stampData"] = stamp_data(image)
    return packet


@pytest.fixture
def base(fastavro: Any) -> tuple[dict, dict]:
    """Schema and packet of the schema-3.3 real alert, to derive test packets from."""
    schema, packets = read_avro(fastavro, AVRO_33)
    return schema, packets[0]


def epochs_table(path: Path) -> dict[str, np.ndarray]:
    """The EPOCHS rows as written (the reader would drop mostly-NaN frames)."""
    with fits.open(path) as hdul:
        data = hdul["EPOCHS"].data
        return {"OBJECT_ID": np.char.strip(np.asarray(data["OBJECT_ID"]).astype(str)),
                "MJD": np.array(data["MJD"]), "STAMP": np.array(data["STAMP"])}


def catalog_objects(path: Path) -> dict[str, dict[str, Any]]:
    """Object id -> mjd, band names, ra, dec, as the catalog reader yields them."""
    objects = {}
    with Catalog(path) as catalog:
        for chunk in catalog.iter_chunks():
            for i, object_id in enumerate(chunk.object_ids):
                rows = slice(chunk.offsets[i], chunk.offsets[i + 1])
                objects[str(object_id)] = {
                    "mjd": chunk.mjd[rows], "band": [catalog.bands[b] for b in chunk.band[rows]],
                    "ra": chunk.ra[i], "dec": chunk.dec[i], "status": chunk.status(i),
                    "frames": chunk.frames[rows],
                }
    return objects


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# -- real packets -------------------------------------------------------------------------------
def test_parquet_objects_grouped_and_time_ordered(tmp_path: Path, pyarrow: Any) -> None:
    rows = pyarrow.parquet.read_table(PARQUET, columns=["objectId", "candidate"]).to_pylist()
    out = tmp_path / "catalog.fits"

    report = ingest_ztf([PARQUET], out)

    objects = catalog_objects(out)
    assert sorted(objects) == ["ZTF18aamhmsi", "ZTF24aaqnriz", "ZTF24aaqrtfa"]
    assert (report.n_packets, report.n_objects, report.n_epochs) == (9, 3, 9)
    for object_id, got in objects.items():
        mine = [r["candidate"] for r in rows if r["objectId"] == object_id]
        np.testing.assert_allclose(got["mjd"], sorted(c["jd"] - 2400000.5 for c in mine), rtol=0, atol=1e-9)
        assert got["band"] == ["g"] * len(mine)  # fid 1
        assert got["ra"] == pytest.approx(np.mean([c["ra"] for c in mine]), abs=1e-6)
        assert got["dec"] == pytest.approx(np.mean([c["dec"] for c in mine]), abs=1e-6)
    jds = [r["candidate"]["jd"] for r in rows if r["objectId"] == "ZTF24aaqnriz"]
    assert jds != sorted(jds)  # the file is not time-ordered

    with Catalog(out) as catalog:
        header = catalog.header
        assert catalog.bands == ("g", "r", "i")
    assert header["SURVEY"] == "ZTF" and header["CUTOUT"] == "science"
    assert header["SOURCES"] == PARQUET.name
    assert (header["NPACKETS"], header["NSKIPPED"], header["NDUPLIC"], header["NPADDED"]) == (9, 0, 0, 0)


@pytest.mark.parametrize("stamp", ["science", "difference", "template"])
def test_stamps_are_the_centre_crop_of_the_cutout(tmp_path: Path, pyarrow: Any, stamp: str) -> None:
    rows = pyarrow.parquet.read_table(PARQUET, columns=["objectId", "candidate", CUTOUTS[stamp]]).to_pylist()
    out = tmp_path / "catalog.fits"
    ingest_ztf([PARQUET], out, stamp=stamp)

    epochs = epochs_table(out)
    assert epochs["STAMP"].shape == (9, 32, 32)
    n_nan = 0
    for row in rows:
        expected = read_stamp(row[CUTOUTS[stamp]]["stampData"])[15:47, 15:47]
        mjd = row["candidate"]["jd"] - 2400000.5
        match = (epochs["OBJECT_ID"] == row["objectId"]) & (np.abs(epochs["MJD"] - mjd) < 1e-9)
        assert match.sum() == 1
        np.testing.assert_array_equal(epochs["STAMP"][match][0], expected)
        n_nan += int(np.isnan(expected).sum())
    assert n_nan > 0  # the fixture has NaN pixels in a stamp centre, kept as NaN


def test_avro_packets_one_epoch_each_without_prv_candidates(tmp_path: Path, fastavro: Any) -> None:
    out = tmp_path / "catalog.fits"
    report = ingest_ztf([AVRO_32, AVRO_33], out)
    objects = catalog_objects(out)
    assert sorted(objects) == ["ZTF17aaacxxf", "ZTF17aaajnnn"]
    assert report.n_epochs == 2  # the packets' 28 and 11 prv_candidates have no cut-outs
    assert objects["ZTF17aaacxxf"]["band"] == ["r"]
    assert objects["ZTF17aaacxxf"]["mjd"][0] == pytest.approx(2458493.7607639 - 2400000.5, abs=1e-9)
    assert objects["ZTF17aaajnnn"]["ra"] == pytest.approx(179.6402013, abs=1e-9)
    _, packets = read_avro(fastavro, AVRO_33)
    np.testing.assert_array_equal(objects["ZTF17aaajnnn"]["frames"][0],
                                  read_stamp(packets[0]["cutoutScience"]["stampData"])[15:47, 15:47])


def test_current_schema_packets(tmp_path: Path, fastavro: Any) -> None:
    schema = fastavro.schema.load_schema_ordered(
        [str(DATA / "schema" / f"{name}.avsc")
         for name in ("cutout", "candidate", "prv_candidate", "fp_hist", "alert")])
    _, packets = read_avro(fastavro, AVRO_33)
    packet = {**packets[0], "schemavsn": "4.02", "fp_hists": None}
    path = write_avro(fastavro, tmp_path / "v4.avro", schema, [packet])
    report = ingest_ztf([path], tmp_path / "catalog.fits")
    assert (report.n_objects, report.n_epochs) == (1, 1)


# -- constructed packets ------------------------------------------------------------------------
def test_band_map(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    schema, packet = base
    packets = [make_packet(packet, "ZTF99band", 10 + fid, 2460000.5 + fid, fid=fid) for fid in (3, 1, 2)]
    path = write_avro(fastavro, tmp_path / "bands.avro", schema, packets)
    ingest_ztf([path], tmp_path / "catalog.fits")
    got = catalog_objects(tmp_path / "catalog.fits")["ZTF99band"]
    assert got["band"] == ["g", "r", "i"]
    np.testing.assert_allclose(got["mjd"], [60000.0 + 1, 60000.0 + 2, 60000.0 + 3])


def test_grouping_time_order_and_repeated_candids(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    schema, packet = base
    a = [make_packet(packet, "ZTF99aaaaaaa", 100 + i, 2460000.5 + jd) for i, jd in enumerate([3.0, 1.0, 2.0])]
    b = [make_packet(packet, "ZTF99bbbbbbb", 200 + i, 2460000.5 + jd) for i, jd in enumerate([5.0, 4.0])]
    first = write_avro(fastavro, tmp_path / "first.avro", schema, [a[0], b[0], a[1], a[0]])
    second = write_avro(fastavro, tmp_path / "second.avro", schema, [b[1], a[2], a[1]])

    report = ingest_ztf([first, second], tmp_path / "catalog.fits")

    objects = catalog_objects(tmp_path / "catalog.fits")
    np.testing.assert_allclose(objects["ZTF99aaaaaaa"]["mjd"], [60001.0, 60002.0, 60003.0])
    np.testing.assert_allclose(objects["ZTF99bbbbbbb"]["mjd"], [60004.0, 60005.0])
    assert objects["ZTF99aaaaaaa"]["status"] == "ok"
    assert (report.n_packets, report.n_epochs, report.n_duplicates) == (7, 5, 2)
    with Catalog(tmp_path / "catalog.fits") as catalog:
        assert catalog.header["NDUPLIC"] == 2
        assert catalog.header["SOURCES"] == "first.avro,second.avro"


def test_edge_cutout_is_padded_and_flagged(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    schema, packet = base
    rng = np.random.default_rng(7)
    image = rng.normal(120.0, 4.0, (50, 63)).astype(np.float32)  # 13 rows lost at the chip's low edge
    packets = [make_packet(packet, "ZTF99edge", 1, 2460001.5, image=image, ypos=12.0),
               make_packet(packet, "ZTF99full", 2, 2460001.5)]
    path = write_avro(fastavro, tmp_path / "edge.avro", schema, packets)

    report = ingest_ztf([path], tmp_path / "catalog.fits")

    assert [(p.object_id, p.alert_id, p.shape) for p in report.padded] == [("ZTF99edge", 1, (50, 63))]
    full = np.full((63, 63), np.median(image), dtype=np.float32)
    full[13:] = image
    stamp = catalog_objects(tmp_path / "catalog.fits")["ZTF99edge"]["frames"][0]
    np.testing.assert_array_equal(stamp, full[15:47, 15:47])
    with Catalog(tmp_path / "catalog.fits") as catalog:
        assert (catalog.header["NPADDED"], catalog.header["NPADOBJ"]) == (1, 1)
        assert catalog.header["PADOBJS"] == "ZTF99edge"
    assert any("padded 1" in line and "ZTF99edge" in line for line in report.notes())


def truncated_gzip(packet: dict) -> dict:
    packet["cutoutScience"]["stampData"] = packet["cutoutScience"]["stampData"][:500]
    return packet


def garbage_bytes(packet: dict) -> dict:
    packet["cutoutScience"]["stampData"] = bytes(range(256)) * 4
    return packet


def missing_cutout(packet: dict) -> dict:
    packet["cutoutScience"] = None
    return packet


def unknown_fid(packet: dict) -> dict:
    packet["candidate"]["fid"] = 4
    return packet


BREAKAGES = [
    (truncated_gzip, "cutoutScience.stampData", "corrupt_cutout", "truncated gzip stream"),
    (garbage_bytes, "cutoutScience.stampData", "corrupt_cutout", "not a readable FITS image"),
    (missing_cutout, "cutoutScience.stampData", "missing_cutout", "missing cut-out"),
    (unknown_fid, "candidate.fid", "unknown_band", "unknown filter id 4"),
]


@pytest.mark.parametrize(("breakage", "field", "reason", "message"), BREAKAGES)
def test_invalid_alert_raises_naming_file_field_and_alert(
        tmp_path: Path, base: tuple[dict, dict], fastavro: Any, breakage: Any, field: str, reason: str,
        message: str) -> None:
    schema, packet = base
    packets = [make_packet(packet, "ZTF99good", 1, 2460001.5),
               breakage(make_packet(packet, "ZTF99bad", 2, 2460002.5))]
    path = write_avro(fastavro, tmp_path / "broken.avro", schema, packets)

    with pytest.raises(AlertError) as info:
        ingest_ztf([path], tmp_path / "catalog.fits", on_invalid="raise")

    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {field}: objectId ZTF99bad, candid 2: ")
    assert message in text and info.value.reason == reason
    assert only_file(tmp_path) == ["broken.avro"]  # nothing written, no temporary file left


@pytest.mark.parametrize(("breakage", "field", "reason", "message"), BREAKAGES)
def test_invalid_alert_is_skipped_and_counted(
        tmp_path: Path, base: tuple[dict, dict], fastavro: Any, breakage: Any, field: str, reason: str,
        message: str) -> None:
    schema, packet = base
    packets = [make_packet(packet, "ZTF99good", 1, 2460001.5),
               breakage(make_packet(packet, "ZTF99bad", 2, 2460002.5))]
    path = write_avro(fastavro, tmp_path / "broken.avro", schema, packets)

    report = ingest_ztf([path], tmp_path / "catalog.fits")

    assert report.skipped == {reason: 1}
    assert field in report.examples[reason][0] and message in report.examples[reason][0]
    assert sorted(catalog_objects(tmp_path / "catalog.fits")) == ["ZTF99good"]
    with Catalog(tmp_path / "catalog.fits") as catalog:
        assert catalog.header["NSKIPPED"] == 1 and catalog.header["SKIPWHY"] == f"{reason}=1"
        assert catalog.header["ONINVAL"] == "skip"


def test_warn_policy_warns_once_per_skipped_alert(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    schema, packet = base
    packets = [make_packet(packet, "ZTF99good", 1, 2460001.5),
               unknown_fid(make_packet(packet, "ZTF99bad", 2, 2460002.5))]
    path = write_avro(fastavro, tmp_path / "broken.avro", schema, packets)
    message = r"candidate\.fid: objectId ZTF99bad, candid 2: unknown filter id 4"
    with pytest.warns(IngestWarning, match=message) as caught:
        report = ingest_ztf([path], tmp_path / "catalog.fits", on_invalid="warn")
    assert len(caught) == 1 and report.n_skipped == 1 and report.n_objects == 1


def test_corrupt_parquet_cell_names_file_field_and_alert(tmp_path: Path, pyarrow: Any) -> None:
    table = pyarrow.parquet.read_table(PARQUET)
    rows = table.to_pylist()
    rows[3]["cutoutScience"]["stampData"] = rows[3]["cutoutScience"]["stampData"][:-40]
    path = tmp_path / "broken.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows, schema=table.schema), path)

    expected = (rf"^{re.escape(str(path))}: cutoutScience\.stampData: "
                rf"objectId {rows[3]['objectId']}, candid {rows[3]['candid']}: truncated gzip stream")
    with pytest.raises(AlertError, match=expected):
        ingest_ztf([path], tmp_path / "catalog.fits", on_invalid="raise")
    report = ingest_ztf([path], tmp_path / "catalog.fits")
    assert report.skipped == {"corrupt_cutout": 1} and report.n_epochs == 8


def test_parquet_without_the_cutout_column(tmp_path: Path, pyarrow: Any) -> None:
    path = tmp_path / "nocut.parquet"
    pyarrow.parquet.write_table(pyarrow.parquet.read_table(PARQUET).drop_columns(["cutoutTemplate"]), path)
    with pytest.raises(AlertError, match=rf"^{re.escape(str(path))}: cutoutTemplate: missing column"):
        ingest_ztf([path], tmp_path / "catalog.fits", stamp="template", on_invalid="raise")
    assert ingest_ztf([path], tmp_path / "catalog.fits").n_epochs == 9


def test_truncated_avro_file(tmp_path: Path, fastavro: Any) -> None:
    broken = tmp_path / "truncated.avro"
    broken.write_bytes(AVRO_32.read_bytes()[:30000])

    with pytest.raises(AlertError, match=rf"^{re.escape(str(broken))}: Avro container: corrupt after 0 packets"):
        ingest_ztf([broken, AVRO_33], tmp_path / "catalog.fits", on_invalid="raise")
    assert only_file(tmp_path) == ["truncated.avro"]

    report = ingest_ztf([broken, AVRO_33], tmp_path / "catalog.fits")
    assert report.skipped == {"unreadable_file": 1}
    assert sorted(catalog_objects(tmp_path / "catalog.fits")) == ["ZTF17aaajnnn"]


def test_file_of_another_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.avro"
    path.write_text("not an alert\n")
    with pytest.raises(AlertError, match="neither an Avro container file nor a Parquet file"):
        ingest_ztf([path], tmp_path / "catalog.fits", on_invalid="raise")


def test_no_usable_alert_writes_nothing(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    schema, packet = base
    broken = missing_cutout(make_packet(packet, "ZTF99x", 1, 2460001.5))
    path = write_avro(fastavro, tmp_path / "bad.avro", schema, [broken])
    with pytest.raises(BadInputError, match=r"bad.avro: no usable alert \(1 packet\(s\); skipped: "
                                            r"missing_cutout=1\); nothing written to"):
        ingest_ztf([path], tmp_path / "catalog.fits")
    assert only_file(tmp_path) == ["bad.avro"]


def test_missing_input_and_existing_output(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="nope.avro: no such file"):
        ingest_ztf([tmp_path / "nope.avro"], tmp_path / "catalog.fits")
    (tmp_path / "catalog.fits").write_bytes(b"keep me")
    with pytest.raises(UsageError, match="exists already"):
        ingest_ztf([AVRO_33], tmp_path / "catalog.fits")
    assert (tmp_path / "catalog.fits").read_bytes() == b"keep me"
    with pytest.raises(UsageError, match="stamp must be one of"):
        ingest_ztf([AVRO_33], tmp_path / "other.fits", stamp="weird")  # type: ignore[arg-type]


def test_overwrite_replaces_the_catalog(tmp_path: Path, fastavro: Any) -> None:
    out = tmp_path / "catalog.fits"
    out.write_bytes(b"old")
    ingest_ztf([AVRO_33], out, overwrite=True)
    assert sorted(catalog_objects(out)) == ["ZTF17aaajnnn"]


def test_ingest_imports_fastavro_and_pyarrow_only_when_reading() -> None:
    script = ("import sys, convention_rt.ingest, convention_rt.cli.ingest; "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastavro', 'pyarrow')))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("module", "path"), [("fastavro", AVRO_33), ("pyarrow", PARQUET)])
def test_missing_ingest_extra_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str,
                                               path: Path) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UsageError, match=rf"needs {module}: install convention-rt\[ingest\]"):
        ingest_ztf([path], tmp_path / "catalog.fits")


# -- command line ------------------------------------------------------------------------------
def test_cli_writes_and_reports(tmp_path: Path, fastavro: Any, pyarrow: Any) -> None:
    out = tmp_path / "catalog.fits"
    result = CliRunner().invoke(app, ["ztf", str(PARQUET), str(AVRO_33), "-o", str(out), "--stamp", "difference"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {out}: 4 objects, 10 epochs of ZTF difference stamps")
    with Catalog(out) as catalog:
        assert catalog.header["CUTOUT"] == "difference"


def test_cli_warn_and_raise(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    schema, packet = base
    packets = [make_packet(packet, "ZTF99good", 1, 2460001.5),
               garbage_bytes(make_packet(packet, "ZTF99bad", 2, 2460002.5))]
    path = write_avro(fastavro, tmp_path / "broken.avro", schema, packets)
    out = tmp_path / "catalog.fits"

    result = CliRunner().invoke(app, ["ztf", str(path), "-o", str(out), "--on-invalid", "raise"])
    assert result.exit_code == 1 and isinstance(result.exception, AlertError)
    assert not out.exists()

    result = CliRunner().invoke(app, ["ztf", str(path), "-o", str(out), "--on-invalid", "warn"])
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warned[0].startswith(f"warning: {path}: cutoutScience.stampData: objectId ZTF99bad, candid 2:")
    assert any("skipped 1 invalid" in line for line in warned)
    assert "Traceback" not in result.output


def test_invalid_alerts_are_skipped_never_flagged(tmp_path: Path, base: tuple[dict, dict], fastavro: Any) -> None:
    """An invalid alert cannot be kept in a catalog: the policy says skip, and refuses to call that flag."""
    schema, packet = base
    packets = [make_packet(packet, "ZTF99good", 1, 2460001.5),
               garbage_bytes(make_packet(packet, "ZTF99bad", 2, 2460002.5))]
    path = write_avro(fastavro, tmp_path / "broken.avro", schema, packets)
    out = tmp_path / "catalog.fits"
    result = CliRunner().invoke(app, ["ztf", str(path), "-o", str(out), "--on-invalid", "skip"])
    assert result.exit_code == 0, result.output
    assert sorted(catalog_objects(out)) == ["ZTF99good"]
    result = CliRunner().invoke(app, ["ztf", str(path), "-o", str(tmp_path / "other.fits"), "--on-invalid", "flag"])
    assert result.exit_code == 2 and not (tmp_path / "other.fits").exists()
    with pytest.raises(UsageError, match="on_invalid must be one of skip, warn, raise, got 'flag' .*'skip' drops"):
        ingest_ztf([path], tmp_path / "other.fits", on_invalid="flag")  # type: ignore[arg-type]


def test_fixture_is_small_and_documented() -> None:
    assert sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file()) < 1_000_000
    assert (DATA / "README.md").is_file()


# -- ids that need all 64 bits, text a catalog cannot hold -----------------------------------------
def test_unsigned_candids_beyond_int64_are_kept_exactly(tmp_path: Path, pyarrow: Any) -> None:
    table = pyarrow.parquet.read_table(PARQUET)
    rows = table.to_pylist()
    for k, row in enumerate(rows):
        row["candid"] = 2**64 - 10 - k
    # two epochs of ZTF24aaqnriz at the same time, told apart only by candids one apart above 2**63
    rows[0]["candid"], rows[1]["candid"] = 2**63 + 1, 2**63
    rows[1]["candidate"]["jd"] = rows[0]["candidate"]["jd"]
    rows[2]["candid"] = 2**64 - 1
    rows.append(copy.deepcopy(rows[2]))  # the same alert again: dropped by its candid
    rows[8]["cutoutScience"]["stampData"] = rows[8]["cutoutScience"]["stampData"][:500]  # ZTF24aaqrtfa
    schema = table.schema.set(table.schema.get_field_index("candid"), pyarrow.field("candid", pyarrow.uint64()))
    path = tmp_path / "unsigned.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(rows, schema=schema), path)

    report = ingest_ztf([path], tmp_path / "catalog.fits")

    assert (report.n_packets, report.n_epochs, report.n_duplicates) == (10, 8, 1)
    assert f"candid {2**64 - 18}: truncated gzip stream" in report.examples["corrupt_cutout"][0]
    got = catalog_objects(tmp_path / "catalog.fits")["ZTF24aaqnriz"]
    same_time = np.flatnonzero(np.abs(got["mjd"] - (rows[0]["candidate"]["jd"] - 2400000.5)) < 1e-9)
    assert same_time.size == 2  # in candid order: 2**63 before 2**63 + 1
    for index, row in zip(same_time, (rows[1], rows[0]), strict=True):
        np.testing.assert_array_equal(got["frames"][index],
                                      read_stamp(row["cutoutScience"]["stampData"])[15:47, 15:47])


def test_object_id_that_is_not_ascii_is_an_invalid_alert(tmp_path: Path, base: tuple[dict, dict],
                                                         fastavro: Any) -> None:
    schema, packet = base
    packets = [make_packet(packet, "ZTF99good", 1, 2460001.5), make_packet(packet, "ZTF99bé", 2, 2460002.5)]
    path = write_avro(fastavro, tmp_path / "text.avro", schema, packets)

    with pytest.raises(AlertError, match=rf"^{re.escape(str(path))}: objectId: 'ZTF99bé' is not printable ASCII"):
        ingest_ztf([path], tmp_path / "catalog.fits", on_invalid="raise")
    assert only_file(tmp_path) == ["text.avro"]

    report = ingest_ztf([path], tmp_path / "catalog.fits")
    assert report.skipped == {"bad_value": 1} and sorted(catalog_objects(tmp_path / "catalog.fits")) == ["ZTF99good"]


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EFBIG"])
@pytest.mark.parametrize("failing", ["write", "flush"])
def test_a_full_spool_is_one_line_exit_3_naming_its_folder(tmp_path: Path, monkeypatch: Any, capsys: Any,
                                                           fastavro: Any, errno_name: str, failing: str) -> None:
    import errno
    import os
    import tempfile

    from convention_rt.cli import main
    from convention_rt.ingest import build

    code = getattr(errno, errno_name)

    class FullSpool(io.BytesIO):
        def write(self, data):  # noqa: ANN001, ANN202
            if failing == "write":
                raise OSError(code, os.strerror(code))
            return super().write(data)

        def flush(self) -> None:
            if failing == "flush":
                raise OSError(code, os.strerror(code))

    monkeypatch.setattr(build.tempfile, "TemporaryFile", lambda **kwargs: FullSpool())
    out = tmp_path / "catalog.fits"
    assert main(["ingest", "ztf", str(AVRO_32), "-o", str(out)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {tempfile.gettempdir()}: cannot write the temporary file that holds the stamps while "
                   f"ingesting: {os.strerror(code)} (free some space there, or set TMPDIR to a folder with room "
                   f"for the stamps, about the size of the catalog)"]
    assert list(tmp_path.iterdir()) == []
