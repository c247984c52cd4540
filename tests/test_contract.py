"""The photometric contract between catalogs and models: declared by writers, read, converted, checked.

Catalogs declare what their stamps are in the primary header (``CatalogWriter``
requires it); cards declare the model's training domain; the reader converts
units and zero points exactly and flags what cannot be converted.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.catalog import Catalog
from convention_rt.catalog_writer import CatalogWriter
from convention_rt.errors import CatalogError, ModelError, UsageError
from convention_rt.ingest import ingest_rubin, ingest_ztf
from convention_rt.ingest.cutouts import fit_stamp
from convention_rt.model_card import ModelCard
from convention_rt.transform import to_inputs
from convention_rt.photometry import Photometry, njy_to_fluxcal
from convention_rt.registry import list_models, resolve_model
from convention_rt.session import CARD_METADATA_KEY, ModelSession
from helpers import (
    BANDS,
    PHOTOMETRY,
    ccd_cutout,
    cutout_image,
    frame_columns,
    object_columns,
    rubin_packet,
    run,
    tiny_card,
    write_raw_catalog,
    write_rubin_alerts,
    write_small_catalog,
)

SHIPPED = list_models()
shipped = pytest.mark.parametrize("entry", SHIPPED, ids=[f"{e.name}/{e.version}" for e in SHIPPED])
DATA = Path(__file__).parent / "data" / "ztf"


def read_all(path: Path, target: Photometry | None, **options):
    with Catalog(path, target=target, **options) as catalog:
        return catalog, next(catalog.iter_chunks(max_objects=catalog.n_objects))


# -- the cards ----------------------------------------------------------------------------------------
@shipped
def test_every_shipped_card_declares_its_training_domain_in_both_copies(entry):
    card = entry.card()
    pytest.importorskip("scipy")  # the train extra: train.data.plasticc needs scipy
    from train.data.plasticc import PHOTOMETRY as RENDERED
    from train.data.plasticc import RENDER

    domain = card.domain
    # the benchmark's science stamps, or its difference stamps (--scene difference: the same contract but CUTOUT)
    assert domain is not None and domain.photometry.stamp_kind in ("science", "difference")
    assert domain.photometry == dataclasses.replace(RENDERED, stamp_kind=domain.photometry.stamp_kind)
    assert domain.photometry.pixel_scale == RENDER.pixel_scale and domain.photometry.zero_point == 27.5
    assert domain.frames_range[1] == card.seq_len and 1 <= domain.min_frames <= card.seq_len
    assert domain.min_frames_rule
    onnx = pytest.importorskip("onnx")
    embedded = next(p.value for p in onnx.load(str(entry.model_path)).metadata_props if p.key == CARD_METADATA_KEY)
    assert ModelCard.from_json(embedded).domain == domain
    assert ModelSession(entry.model_path, entry.card_path, device="cpu").card == card  # checksum and agreement


def test_domain_round_trips_and_bad_domains_are_refused(tmp_path):
    card = tiny_card()
    path = tmp_path / "card.json"
    path.write_text(card.to_json())
    assert ModelCard.load(path) == card and card.format_version == 2
    data = json.loads(card.to_json())
    for change, message in [({"min_frames": 0}, "min_frames must be a whole number"),
                            ({"frames_range": [5, 2]}, "frames_range must be"),
                            ({"min_uniform_distance": 1.0}, "min_uniform_distance must lie in"),
                            ({"photometry": {**data["domain"]["photometry"], "flux_unit": None}},
                             "must declare every field")]:
        broken = {**data, "domain": {**data["domain"], **change}}
        path.write_text(json.dumps(broken))
        with pytest.raises(ModelError, match=f"card.json: not a valid model card: domain: .*{message}"):
            ModelCard.load(path)


def test_cards_of_format_1_have_no_domain_and_a_domain_is_a_model_field(tmp_path):
    old = json.loads(tiny_card().to_json())
    del old["domain"]
    old["format_version"] = 1
    card = ModelCard.from_dict(old)
    assert card.domain is None
    other = tiny_card()
    assert card.model_differences(other) == [("domain", None, other.domain.to_dict())]
    moved = dataclasses.replace(other, domain=dataclasses.replace(other.domain, min_frames=3))
    assert [name for name, _, _ in other.model_differences(moved)] == ["domain"]


def test_min_frames_comes_from_the_early_curve_by_the_stated_rule():
    pytest.importorskip("scipy")  # the train extra: train.data.plasticc needs scipy
    from train.domain import make_domain, min_frames_from_early

    frames = [1, 2, 3, 5, 10, 20, 50, 99]
    f1 = [0.18, 0.36, 0.40, 0.47, 0.49, 0.60, 0.68, 0.70]
    assert min_frames_from_early(frames, f1)[0] == 50  # 0.68 >= 0.70 - 0.05; 0.60 is not
    assert min_frames_from_early(frames, f1, margin=0.11)[0] == 20
    _, rule = min_frames_from_early(frames, f1)
    assert "within 0.05 of the full window's (0.700 at k=99)" in rule
    training = {"photometry": PHOTOMETRY.to_dict(), "frames_range": [47, 99]}
    assert make_domain(training, (frames, f1)).min_frames == 50
    without = make_domain(training, None)
    assert without.min_frames == 47 and "no early-classification curve" in without.min_frames_rule
    with pytest.raises(ValueError, match="increasing frames_seen"):
        min_frames_from_early([5, 3], [0.1, 0.2])


def test_the_training_catalog_contract_is_its_header_or_its_builder(tmp_path):
    pytest.importorskip("scipy")  # the train extra: train.data.plasticc needs scipy
    from train.domain import catalog_photometry, training_domain
    from train.data.plasticc import PHOTOMETRY as RENDERED

    declared = write_small_catalog(tmp_path / "declared.fits")
    assert catalog_photometry(declared) == PHOTOMETRY
    assert training_domain(declared, seq_len=3) == {"photometry": PHOTOMETRY.to_dict(), "frames_range": [3, 3]}
    columns = (object_columns([1], [0], [2]), frame_columns([1, 1], [1.0, 2.0], ["g", "r"], np.zeros((2, 32, 32))))
    built = write_raw_catalog(tmp_path / "plasticc-1.0.fits", *columns, photometry=None,
                              primary_header={"GENERATR": "train.data.plasticc", "FLUXUNIT": "FLUXCAL",
                                              "PIXSCALE": 0.2, "SKYSUB": True})
    assert catalog_photometry(built) == RENDERED  # a 1.0 build: the builder declares what it rendered
    contradicting = write_raw_catalog(tmp_path / "odd.fits", *columns, photometry=None,
                                      primary_header={"GENERATR": "train.data.plasticc", "PIXSCALE": 1.0})
    with pytest.raises(ValueError, match="PIXSCALE = 1.0, but its builder renders 0.2"):
        catalog_photometry(contradicting)
    unknown = write_raw_catalog(tmp_path / "unknown.fits", *columns, photometry=None)
    with pytest.raises(ValueError, match="does not declare PROFILE, PIXSCALE, FLUXUNIT, SKYSUB, CUTOUT"):
        catalog_photometry(unknown)
    assert training_domain(unknown, seq_len=3) is None  # its model declares no domain; training goes on


def test_card_with_domain_reads_the_provenance_and_the_early_metrics(tmp_path):
    pytest.importorskip("scipy")  # the train extra: train.data.plasticc needs scipy
    from train.domain import card_with_domain

    bare = dataclasses.replace(tiny_card(), domain=None)
    assert card_with_domain(bare).domain is None  # nothing recorded: nothing declared
    training = {"photometry": PHOTOMETRY.to_dict(), "frames_range": [20, 40]}
    early = {"frames_seen": [1, 10, 40], "folds": 2, "macro_f1": {"mean": [0.2, 0.58, 0.6], "std": [0, 0, 0]}}
    card = card_with_domain(dataclasses.replace(bare, provenance={"training_domain": training},
                                                metrics={"early": early}))
    assert card.domain.min_frames == 10 and card.domain.frames_range == (20, 40)
    catalog = write_small_catalog(tmp_path / "train.fits", epochs=4)
    recorded = {"SOURCE": "tests"}
    old = dataclasses.replace(bare, provenance={"config": {"catalog": str(catalog)}, "training_data": recorded})
    assert card_with_domain(old).domain.frames_range == (4, 4)  # found through the catalog named in the config


@pytest.mark.torch
def test_add_domain_rewrites_both_cards_and_keeps_the_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("torch")
    import shutil

    from train.domain import add_domain

    entry = resolve_model("convention-compact/1.1.0")
    folder = tmp_path / "1.1.0"
    shutil.copytree(entry.model_path.parent, folder)
    catalog = tmp_path / "train.fits"
    header = entry.card().provenance["training_data"]
    write_raw_catalog(catalog, object_columns([1], [0], [60]),
                      frame_columns([1] * 60, np.arange(60.0), ["g"] * 60, np.zeros((60, 32, 32))), photometry=None,
                      primary_header={k: header[k] for k in ("SOURCE", "GENERATR", "SEED", "NOBJ", "WHEELSHA",
                                                             "MAXEPO", "CLASSMAP")})
    early = tmp_path / "early.json"
    early.write_text(json.dumps({"frames_seen": [1, 10, 99], "per_fold": [
        {"macro_f1": [0.1, 0.65, 0.7]}, {"macro_f1": [0.1, 0.7, 0.72]}]}))  # means 0.675 >= 0.71 - 0.05
    card = add_domain(folder, catalog, early=early)
    assert card.domain.min_frames == 10 and card.domain.frames_range == (60, 60)
    before, after = onnx.load(str(entry.model_path)), onnx.load(str(folder / "model.onnx"))
    assert before.graph == after.graph
    session = ModelSession(folder / "model.onnx", folder / "card.json", device="cpu")
    assert session.card == card and session.card.sha256 != entry.card().sha256
    other = tmp_path / "other.fits"
    write_raw_catalog(other, object_columns([1], [0], [1]), frame_columns([1], [1.0], ["g"], np.zeros((1, 32, 32))),
                      primary_header={**{k: header[k] for k in ("SOURCE", "GENERATR")}, "SEED": 99})
    with pytest.raises(ModelError, match="not the training catalog of .*SEED = 99"):
        add_domain(folder, other)
    hard = tmp_path / "hard.fits"  # the same header, but the benchmark's hard scene
    write_raw_catalog(hard, object_columns([1], [0], [60]),
                      frame_columns([1] * 60, np.arange(60.0), ["g"] * 60, np.zeros((60, 32, 32))), photometry=None,
                      primary_header={**{k: header[k] for k in ("SOURCE", "GENERATR", "SEED", "NOBJ", "WHEELSHA",
                                                                 "MAXEPO", "CLASSMAP")}, "SCENE": "hard"})
    with pytest.raises(ModelError, match="SCENE = 'hard', the card's training data had 'standard'"):
        add_domain(folder, hard)


# -- CatalogWriter requires it, the reader reads it ---------------------------------------------------
def test_catalog_writer_requires_the_contract(tmp_path):
    with pytest.raises(TypeError, match="photometry"):
        CatalogWriter(tmp_path / "a.fits", BANDS)  # the argument is required
    with pytest.raises(UsageError, match="missing PROFILE, CUTOUT"):
        CatalogWriter(tmp_path / "a.fits", BANDS, photometry=Photometry(pixel_scale=0.2, flux_unit="nJy",
                                                                        sky_subtracted=True))
    with pytest.raises(UsageError, match="header keyword PIXSCALE = 0.4 disagrees"):
        CatalogWriter(tmp_path / "a.fits", BANDS, photometry=PHOTOMETRY, header={"PIXSCALE": (0.4, "wrong")})
    assert not list(tmp_path.iterdir())


def test_a_zero_point_per_epoch_is_a_column(tmp_path):
    counts = Photometry(profile="ztf", pixel_scale=1.01, flux_unit="DN", zero_point_per_epoch=True,
                        sky_subtracted=False, stamp_kind="science")
    path = tmp_path / "ztf.fits"
    with CatalogWriter(path, BANDS, photometry=counts, id_width=12) as writer:
        with pytest.raises(UsageError, match="give zero_point, one AB zero point per epoch"):
            writer.add_object("a", mjd=[1.0], stamps=np.ones((1, 32, 32)), bands=["g"])
        with pytest.raises(UsageError, match="zero_point must hold 2 finite"):
            writer.add_object("a", mjd=[1.0, 2.0], stamps=np.ones((2, 32, 32)), bands=["g", "g"],
                              zero_point=[26.0, np.nan])
        writer.add_object("a", mjd=[2.0, 1.0], stamps=np.ones((2, 32, 32)), bands=["g", "r"], zero_point=[25.0, 30.0])
    header = fits.getheader(path)
    assert [header[k] for k in ("PROFILE", "PIXSCALE", "FLUXUNIT", "SKYSUB", "CUTOUT")] == \
        ["ztf", 1.01, "DN", False, "science"] and "MAGZP" not in header
    catalog, chunk = read_all(path, None)
    assert catalog.photometry == counts
    np.testing.assert_array_equal(chunk.frames[:, 0, 0], [1.0, 1.0])  # as stored without a target
    model = dataclasses.replace(counts, flux_unit="FLUXCAL", zero_point_per_epoch=False)
    catalog, chunk = read_all(path, model)
    np.testing.assert_allclose(chunk.frames[:, 0, 0], [0.1, 10.0], rtol=1e-7)  # epochs in time order: zp 30, 25
    with CatalogWriter(tmp_path / "one.fits", BANDS, photometry=PHOTOMETRY) as writer:
        with pytest.raises(UsageError, match="declare zero_point_per_epoch=True"):
            writer.add_object(1, mjd=[1.0], stamps=np.ones((1, 32, 32)), bands=["g"], zero_point=[27.5])


def test_an_epoch_without_a_finite_zero_point_flags_its_object(tmp_path):
    columns = frame_columns([1, 1, 2], [1.0, 2.0, 1.0], ["g", "g", "g"], np.ones((3, 32, 32)))
    columns.append(fits.Column("MAGZP", "D", array=np.array([26.0, np.nan, 27.5])))
    counts = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="DN", zero_point_per_epoch=True,
                        sky_subtracted=True, stamp_kind="science")
    path = write_raw_catalog(tmp_path / "zp.fits", object_columns([1, 2], [0, 2], [2, 1]), columns,
                             photometry=counts)
    _, chunk = read_all(path, PHOTOMETRY)
    assert [chunk.status(i) for i in range(2)] == ["flagged:out_of_domain:zero_point;epochs_without_zero_point=1",
                                                   "ok"]
    np.testing.assert_array_equal(chunk.frames[:, 0, 0], [1.0])
    with pytest.raises(CatalogError, match="zp.fits: OBJECTS: object 1: out of domain:zero point"):
        read_all(path, PHOTOMETRY, on_invalid="raise")


@pytest.mark.parametrize("zero_point", [1e30, -1000.0, 0.0, 50.0, -np.inf])
def test_an_implausible_zero_point_counts_as_missing_without_a_numpy_warning(tmp_path, zero_point):
    """pytest turns warnings into errors: an overflow in the conversion would fail here."""
    columns = frame_columns([1, 1, 2, 3], [1.0, 2.0, 1.0, 1.0], ["g"] * 4, np.ones((4, 32, 32)))
    columns.append(fits.Column("MAGZP", "D", array=np.array([26.0, zero_point, 27.5, zero_point])))
    counts = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="DN", zero_point_per_epoch=True,
                        sky_subtracted=True, stamp_kind="science")
    path = write_raw_catalog(tmp_path / "zp.fits", object_columns([1, 2, 3], [0, 2, 3], [2, 1, 1]), columns,
                             photometry=counts)
    _, chunk = read_all(path, PHOTOMETRY)
    assert [chunk.status(i) for i in range(3)] == ["flagged:out_of_domain:zero_point;epochs_without_zero_point=1",
                                                   "ok", "flagged:out_of_domain:zero_point;"
                                                   "epochs_without_zero_point=1"]
    np.testing.assert_array_equal(chunk.frames[:, 0, 0], [1.0])
    with CatalogWriter(tmp_path / "w.fits", BANDS, photometry=counts) as writer:
        with pytest.raises(UsageError, match="zero_point must hold 1 finite AB zero points between 0 and 50"):
            writer.add_object(1, mjd=[1.0], stamps=np.ones((1, 32, 32)), bands=["g"], zero_point=[zero_point])
        writer.add_object(1, mjd=[1.0], stamps=np.ones((1, 32, 32)), bands=["g"], zero_point=[26.0])


@pytest.mark.parametrize(("header", "message"), [
    ({"PIXSCALE": "small"}, "PRIMARY.PIXSCALE: must be a number"),
    ({"FLUXUNIT": "mag"}, "PRIMARY.FLUXUNIT: flux_unit must be one of FLUXCAL, nJy, DN"),
    ({"FLUXUNIT": "FLUXCAL", "MAGZP": 25.0}, "PRIMARY.MAGZP: FLUXCAL has the zero point 27.5"),
])
def test_a_header_that_declares_nonsense_is_refused(tmp_path, header, message):
    path = write_raw_catalog(tmp_path / "bad.fits", object_columns([1], [0], [1]),
                             frame_columns([1], [1.0], ["g"], np.ones((1, 32, 32))), photometry=None,
                             primary_header=header)
    with pytest.raises(CatalogError, match=message):
        Catalog(path)


def test_a_catalog_without_the_contract_is_read_as_unknown_and_flagged(tmp_path, capsys):
    path = write_raw_catalog(tmp_path / "v1.fits", object_columns([1, 2], [0, 1], [1, 1]),
                             frame_columns([1, 2], [1.0, 1.0], ["g", "g"], np.ones((2, 32, 32))), photometry=None)
    catalog, chunk = read_all(path, None)
    assert catalog.photometry == Photometry() and catalog.problems == [] and chunk.status(0) == "ok"
    catalog, chunk = read_all(path, PHOTOMETRY)
    reason = "domain_unknown:survey,pixel_scale,flux_unit,sky,stamp_kind"
    assert [chunk.status(i) for i in range(2)] == [f"flagged:{reason}"] * 2 and len(catalog.problems) == 1
    assert "declare PROFILE, PIXSCALE, FLUXUNIT, SKYSUB, CUTOUT in the primary header" in catalog.problems[0]
    code, out, err = run(capsys, "validate", path, "--model", "convention-compact")
    assert code == 1 and f"flagged {reason}: 2 object(s)" in out and "domain_unknown" in out
    assert "2 object(s) cannot be classified" in err


# -- conversions on the way in: the same normalised input whatever the unit ----------------------------
def test_a_rubin_stamp_in_njy_gives_the_same_normalised_input_as_in_fluxcal(tmp_path):
    pytest.importorskip("fastavro")
    rng = np.random.default_rng(3)
    images = [rng.normal(0.0, 200.0, (30, 30)) + 36307.8 * (k + 1) * np.exp(
        -((np.arange(30)[:, None] - 15) ** 2 + (np.arange(30) - 15) ** 2) / 8.0) for k in range(4)]
    packets = [rubin_packet(7, 100 + k, 60000.0 + k, "gri"[k % 3], cutoutScience=ccd_cutout(img))
               for k, img in enumerate(images)]
    njy = tmp_path / "rubin.fits"
    ingest_rubin([write_rubin_alerts(tmp_path / "alerts.avro", packets)], njy)
    header = fits.getheader(njy)
    assert [header[k] for k in ("PROFILE", "PIXSCALE", "FLUXUNIT", "SKYSUB", "CUTOUT")] == \
        ["lsst", 0.2, "nJy", True, "science"]
    fluxcal = tmp_path / "fluxcal.fits"
    with CatalogWriter(fluxcal, ("u", "g", "r", "i", "z", "y"), photometry=PHOTOMETRY) as writer:
        stamps = np.stack([njy_to_fluxcal(fit_stamp(img.astype(np.float32))[0]) for img in images])
        writer.add_object(7, mjd=60000.0 + np.arange(4), stamps=stamps, bands=list("grig"))
    card = resolve_model("convention-compact/1.1.0").card()
    inputs = []
    for path in (njy, fluxcal):
        catalog, chunk = read_all(path, card.domain.photometry)
        assert catalog.domain.in_domain and chunk.status(0) == "ok"
        inputs.append(to_inputs(chunk, card).sequences.stamps)
    np.testing.assert_allclose(inputs[0], inputs[1], rtol=1e-6, atol=1e-6)
    _, unconverted = read_all(njy, None)  # without a model: as stored, 36 times larger
    _, converted = read_all(njy, card.domain.photometry)
    np.testing.assert_allclose(unconverted.frames / converted.frames, 36.307805477, rtol=1e-6)


def test_rubin_difference_stamps_are_out_of_the_domain_and_another_bunit_is_refused(tmp_path):
    pytest.importorskip("fastavro")
    alerts = write_rubin_alerts(tmp_path / "a.avro", [rubin_packet(1, 1, 60000.0), rubin_packet(1, 2, 60001.0)])
    out = tmp_path / "diff.fits"
    ingest_rubin([alerts], out, stamp="difference")
    _, chunk = read_all(out, PHOTOMETRY)
    assert chunk.status(0) == "flagged:out_of_domain:stamp_kind"
    counts = ccd_cutout(cutout_image(5)).replace(b"BUNIT   = 'nJy", b"BUNIT   = 'adu")
    report = ingest_rubin([write_rubin_alerts(tmp_path / "b.avro", [rubin_packet(1, 3, 6e4, cutoutScience=counts),
                                                                    rubin_packet(1, 4, 6e4)])], tmp_path / "b.fits")
    assert report.skipped == {"bad_value": 1} and "cutoutScience.BUNIT" in report.examples["bad_value"][0]


def test_ztf_catalogs_carry_the_zero_point_of_each_epoch(tmp_path):
    pyarrow = pytest.importorskip("pyarrow.parquet")
    source = DATA / "20240606_history_3objects.parquet"
    out = tmp_path / "ztf.fits"
    ingest_ztf([source], out)
    rows = pyarrow.read_table(source).to_pylist()
    zero_points = {r["candid"]: r["candidate"]["magzpsci"] for r in rows}
    with fits.open(out) as hdul:
        header, epochs = hdul[0].header, hdul["EPOCHS"].data
        assert [header[k] for k in ("PROFILE", "PIXSCALE", "FLUXUNIT", "SKYSUB", "CUTOUT")] == \
            ["ztf", 1.01, "DN", False, "science"]
        assert sorted(epochs["MAGZP"].tolist()) == sorted(zero_points.values())
    catalog, chunk = read_all(out, PHOTOMETRY)
    assert catalog.photometry.zero_point_per_epoch
    assert {chunk.status(i).split(";")[0] for i in range(len(chunk))} == {"flagged:out_of_domain:survey,pixel_scale,sky"}
    ingest_ztf([source], tmp_path / "diff.fits", stamp="difference")
    assert fits.getheader(tmp_path / "diff.fits")["SKYSUB"] is True
    ingest_ztf([source], tmp_path / "template.fits", stamp="template")
    catalog, chunk = read_all(tmp_path / "template.fits", PHOTOMETRY)
    assert chunk.status(0).startswith("flagged:out_of_domain:survey,pixel_scale,flux_unit,sky,stamp_kind")


def test_a_ztf_alert_without_magzpsci_is_invalid(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pq.read_table(DATA / "20240606_history_3objects.parquet")
    rows = table.to_pylist()
    rows[0]["candidate"]["magzpsci"] = None
    source = tmp_path / "no-zp.parquet"
    pq.write_table(pyarrow.Table.from_pylist(rows, schema=table.schema), source)
    report = ingest_ztf([source], tmp_path / "ztf.fits")
    assert report.skipped == {"missing_field": 1} and "candidate.magzpsci: objectId" in report.examples["missing_field"][0]
    assert ingest_ztf([source], tmp_path / "t.fits", stamp="template").n_epochs == len(rows)  # templates do not need it


# -- ingest never writes over its input -----------------------------------------------------------------
@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_ingest_from_python_refuses_to_write_over_an_input(tmp_path, link):
    pytest.importorskip("pyarrow")
    import os
    import shutil

    source = tmp_path / "alerts.parquet"
    shutil.copy(DATA / "20240606_history_3objects.parquet", source)
    before = source.read_bytes()
    out = {"same": source, "symlink": tmp_path / "link.parquet", "hardlink": tmp_path / "hard.parquet"}[link]
    if link == "symlink":
        out.symlink_to(source)
    elif link == "hardlink":
        os.link(source, out)
    for ingest in (ingest_ztf, ingest_rubin):
        with pytest.raises(UsageError, match=f"{out}: is the input file {source}; choose another --out"):
            ingest([source], out, overwrite=True)
    assert source.read_bytes() == before


# -- the real ZTF alerts kept in the tests, classified with the shipped model ------------------------------
def test_real_ztf_alerts_are_never_plain_ok_with_the_shipped_model(tmp_path, capsys):
    pytest.importorskip("fastavro")
    pytest.importorskip("pyarrow")
    inputs = [DATA / "20240606_history_3objects.parquet", DATA / "2019_01_10_739260766315010006.avro",
              DATA / "472263571115115000.avro"]
    for stamp in ("science", "difference"):
        catalog = tmp_path / f"{stamp}.fits"
        assert run(capsys, "ingest", "ztf", *inputs, "-o", catalog, "--stamp", stamp)[0] == 0
        out = tmp_path / f"{stamp}.csv"
        code, _, err = run(capsys, "classify", catalog, "-o", out, "--device", "cpu", "--threads", "1")
        assert code == 0, err
        with open(out, newline="") as handle:
            statuses = [row["status"] for row in csv.DictReader(handle)]
        assert len(statuses) == 5 and not any(s.split(";")[0] == "ok" for s in statuses)
        assert all(s.startswith("flagged:out_of_domain:survey,pixel_scale,") for s in statuses)
        assert "warning: 5 of 5 object(s) not ok: flagged:out_of_domain:survey,pixel_scale," in err


def test_info_shows_the_domain(capsys):
    code, out, _ = run(capsys, "info", "convention-compact/1.1.0")
    assert code == 0 and "domain" in out and "FLUXCAL (zero point 27.5)" in out and "low_information below" in out
