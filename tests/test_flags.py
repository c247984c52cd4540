"""Flags instead of ``ok``: out_of_domain, low_information, and the --on-invalid policy for every flag."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt import Classifier
from convention_rt.catalog_writer import CatalogWriter
from convention_rt.classify import flag_summary
from convention_rt.errors import BadInputError, CatalogError, UsageError
from convention_rt.model_card import Domain, sha256_of
from convention_rt.photometry import Photometry, fluxcal_to_njy
from convention_rt.policies import InvalidObjectWarning
from convention_rt.predictions import Predictions, PredictionWriter
from convention_rt.status import ObjectStatus, Reason
from helpers import (
    BANDS,
    PHOTOMETRY,
    TINY_DOMAIN,
    run,
    tiny_card,
    write_small_catalog,
    write_tiny_onnx,
)

ZTF = Photometry(profile="ztf", pixel_scale=1.01, flux_unit="DN", zero_point=26.0, sky_subtracted=False,
                 stamp_kind="science")
RUBIN = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="nJy", sky_subtracted=True, stamp_kind="science")


def model_with(folder: Path, **domain) -> Path:
    """A tiny model whose card's domain has ``domain`` changed; returns the model file."""
    folder.mkdir()
    model = write_tiny_onnx(folder / "model.onnx")
    card = tiny_card(domain=Domain(**{**TINY_DOMAIN, **domain}), sha256=sha256_of(model))
    (folder / "card.json").write_text(card.to_json())
    return model


def an_object(n: int, seed: int = 0, bands=("g", "r")):
    rng = np.random.default_rng(seed)
    return rng.normal(50.0, 5.0, (n, 32, 32)), [bands[k % len(bands)] for k in range(n)], 59000.0 + np.arange(n)


# -- low_information -----------------------------------------------------------------------------------
def test_low_information_is_few_frames_or_near_uniform_probabilities():
    domain = Domain(photometry=PHOTOMETRY, frames_range=(5, 99), min_frames=5, min_uniform_distance=0.1)
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1],     # distance 0.6
                              [0.3, 0.25, 0.25, 0.2],   # 0.5 * (0.05 + 0 + 0 + 0.05) / 0.75 = 0.067
                              [0.3, 0.25, 0.25, 0.2],
                              [np.nan] * 4,             # flagged: nothing to say
                              [0.35, 0.25, 0.2, 0.2]])  # 0.5 * 0.2 / 0.75 = 0.133: not near
    assert domain.low_information(probabilities, [5, 9, 2, 0, 50]) == \
        [(), (Reason.near_uniform,), (Reason.few_frames, Reason.near_uniform), (), ()]


def test_a_classified_object_of_low_information_keeps_its_probabilities(tmp_path):
    classifier = Classifier(model_with(tmp_path / "m", min_frames=4), device="cpu", threads=1)
    few, enough = classifier.predict_object(*an_object(3)), classifier.predict_object(*an_object(4))
    assert few.status == "low_information:few_frames" and enough.status == "ok"
    assert few.predicted and np.isfinite(list(few.probabilities.values())).all()
    flat = Classifier(model_with(tmp_path / "flat", min_uniform_distance=0.99), device="cpu", threads=1)
    result = flat.predict_batch([an_object(5), an_object(2, bands=("i",))], object_ids=["a", "b"])
    assert result.status == ["low_information:near_uniform",
                             "flagged:no_frames_in_model_bands;bands_unknown_to_model=2(i)"]
    assert result.ok.tolist() == [True, False] and result.predicted[0]


def test_no_low_information_without_a_declared_domain(tmp_path):
    model = write_tiny_onnx(tmp_path / "model.onnx")
    (tmp_path / "card.json").write_text(tiny_card(domain=None, sha256=sha256_of(model)).to_json())
    assert Classifier(model, device="cpu").predict_object(*an_object(1)).status == "ok"


# -- the in-memory API: what the stamps are, when said -----------------------------------------------------
def test_in_memory_stamps_declared_out_of_the_domain_are_flagged_and_njy_converted(tiny_model):
    classifier = Classifier(tiny_model[0], device="cpu", threads=1)
    stamps, bands, mjd = an_object(4)
    plain = classifier.predict_object(stamps, bands, mjd)
    in_njy = classifier.predict_object(fluxcal_to_njy(stamps), bands, mjd, photometry=RUBIN)
    assert in_njy.status == plain.status == "ok"
    np.testing.assert_allclose(list(in_njy.probabilities.values()), list(plain.probabilities.values()), rtol=1e-5)
    ztf = classifier.predict_object(stamps, bands, mjd, photometry=ZTF)
    assert ztf.status == "flagged:out_of_domain:survey,pixel_scale,sky" and ztf.predicted == ""
    assert np.isnan(list(ztf.probabilities.values())).all()
    with pytest.raises(UsageError, match="one zero point for all of them"):
        classifier.predict_object(stamps, bands, mjd,
                                  photometry=dataclasses.replace(ZTF, zero_point=None, zero_point_per_epoch=True))


# -- the --on-invalid policy, for every flag ---------------------------------------------------------------
def band_i_catalog(path: Path) -> Path:
    """Object 1 in the tiny model's bands, object 2 in band i only (which the model does not know)."""
    with CatalogWriter(path, BANDS, photometry=PHOTOMETRY) as writer:
        for object_id, bands in ((1, ["g", "r"]), (2, ["i", "i"])):
            writer.add_object(object_id, mjd=[1.0, 2.0], stamps=np.full((2, 32, 32), 50.0), bands=bands)
    return path


def test_no_frames_in_model_bands_follows_the_policy(tmp_path, capsys, tiny_model):
    catalog = band_i_catalog(tmp_path / "c.fits")
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                         tmp_path / "flag.csv")
    assert code == 0 and "flagged: 1" in out
    assert "warning: 1 of 2 object(s) not ok: flagged:no_frames_in_model_bands x1" in err
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                       tmp_path / "raise.csv", "--on-invalid", "raise")
    assert code == 1 and err.strip() == f"error: {catalog}: OBJECTS: object 2: no frames in model bands"
    assert not (tmp_path / "raise.csv").exists()
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                       tmp_path / "warn.csv", "--on-invalid", "warn")
    assert code == 0 and f"warning: {catalog}: OBJECTS: object 2: no frames in model bands" in err


def test_validate_for_a_model_flags_and_stops_as_classify_does(tmp_path, capsys, tiny_model):
    catalog = band_i_catalog(tmp_path / "c.fits")
    code, _, err = run(capsys, "validate", catalog)  # for no model: band i is a band of the catalog
    assert code == 0, err
    code, out, err = run(capsys, "validate", catalog, "--model", tiny_model[0])
    assert code == 1 and "1 object(s) cannot be classified" in err
    assert "flagged no_frames_in_model_bands: 1 object(s), e.g. 2" in out
    code, _, err = run(capsys, "validate", catalog, "--model", tiny_model[0], "--on-invalid", "raise")
    assert code == 1 and err.strip() == f"error: {catalog}: OBJECTS: object 2: no frames in model bands"


def test_low_information_follows_the_policy(tmp_path, capsys):
    model = model_with(tmp_path / "m", min_frames=3)
    catalog = write_small_catalog(tmp_path / "c.fits", epochs=3)  # 2 frames in the model's bands g, r
    code, out, err = run(capsys, "classify", catalog, "--model", model, "--device", "cpu", "-o", tmp_path / "a.csv")
    assert code == 0 and "flagged: 0" in out
    assert "warning: 6 of 6 object(s) not ok: low_information:few_frames x6" in err
    with open(tmp_path / "a.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert all(r["status"].startswith("low_information:few_frames") and r["predicted_class"] and r["p_AGN"]
               for r in rows)
    code, _, err = run(capsys, "classify", catalog, "--model", model, "--device", "cpu", "-o", tmp_path / "b.csv",
                       "--on-invalid", "raise")
    assert code == 1 and err.strip() == (f"error: {catalog}: OBJECTS: object 100: low information (few_frames): "
                                         f"2 frame(s) seen, the model's validated minimum is 3")
    with pytest.warns(InvalidObjectWarning, match="object 10[0-5]: low information"):
        list(Classifier(model, device="cpu").predict_catalog(catalog, on_invalid="warn"))
    with pytest.raises(CatalogError, match="object 100: low information"):
        list(Classifier(model, device="cpu").predict_catalog(catalog, on_invalid="raise"))
    code, _, err = run(capsys, "validate", catalog, "--model", model)
    assert code == 1 and "6 object(s) have fewer frames than the model's validated minimum (3)" in err
    code, _, err = run(capsys, "validate", catalog, "--model", model, "--on-invalid", "raise")
    assert code == 1 and err.strip() == (f"error: {catalog}: OBJECTS: object 100: low information (few_frames): "
                                         f"2 frame(s) seen, the model's validated minimum is 3")

    flat = model_with(tmp_path / "flat", min_uniform_distance=0.99)  # every object near uniform, none few frames
    code, _, err = run(capsys, "classify", catalog, "--model", flat, "--device", "cpu", "-o", tmp_path / "c.csv",
                       "--on-invalid", "raise")
    assert code == 1 and err.strip() == (f"error: {catalog}: OBJECTS: object 100: low information (near_uniform): "
                                         f"its probabilities are within 0.99 of uniform: the model cannot tell its "
                                         f"classes apart")


def test_out_of_domain_follows_the_policy(tmp_path, capsys, tiny_model):
    catalog = tmp_path / "ztf.fits"
    with CatalogWriter(catalog, BANDS, photometry=dataclasses.replace(ZTF, zero_point=None, zero_point_per_epoch=True),
                       id_width=8) as writer:
        writer.add_object("ZTF1", mjd=[1.0, 2.0], stamps=np.full((2, 32, 32), 50.0), bands=["g", "r"],
                          zero_point=[26.0, 26.1])
    reason = "out_of_domain:survey,pixel_scale,sky"
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                         tmp_path / "flag.csv")
    lines = err.strip().splitlines()
    assert code == 0 and "flagged: 1" in out and len(lines) == 2
    assert lines[0].startswith(f"warning: {catalog}: PRIMARY: {reason}: survey ztf (model: lsst); pixel_scale "
                               f"1.01\"/px (model: 0.2\"/px); sky not subtracted (model: subtracted)")
    assert lines[1].startswith(f"warning: 1 of 1 object(s) not ok: flagged:{reason} x1")
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                       tmp_path / "raise.csv", "--on-invalid", "raise")
    assert code == 1 and err.startswith(f"error: {catalog}: PRIMARY: {reason}") and err.count("\n") == 1
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                       tmp_path / "warn.csv", "--on-invalid", "warn")
    assert code == 0 and err.count(f"warning: {catalog}: PRIMARY: {reason}") == 1
    code, out, _ = run(capsys, "validate", catalog, "--model", tiny_model[0])
    assert code == 1 and "DN (zero point per epoch)" in out and "out_of_domain:survey,pixel_scale,sky" in out


def test_in_memory_flags_follow_no_policy_but_predict_chunk_does(tiny_model):
    classifier = Classifier(tiny_model[0], device="cpu")
    from convention_rt.transform import chunk_from_objects

    chunk = chunk_from_objects([an_object(2, bands=("i",))], ("g", "r", "i"), ["x"])
    assert classifier.predict_chunk(chunk).status[0].startswith("flagged:no_frames_in_model_bands")
    with pytest.raises(BadInputError, match="^object x: no frames in model bands$"):
        classifier.predict_chunk(chunk, on_invalid="raise")
    with pytest.raises(UsageError, match="on_invalid must be one of"):
        classifier.predict_chunk(chunk, on_invalid="ignore")


def test_the_summary_line_counts_what_is_not_ok():
    ok = ObjectStatus().head_values
    few = ObjectStatus(low_information=(Reason.few_frames,)).head_values
    near = ObjectStatus(low_information=(Reason.near_uniform,)).head_values
    both = ObjectStatus(low_information=(Reason.few_frames, Reason.near_uniform)).head_values
    sky = ObjectStatus(Reason.out_of_domain, "sky").head_values
    assert flag_summary({ok: 5}, 5) == ""
    line = flag_summary({ok: 1, few: 2, sky: 3}, 6)
    assert line.startswith("5 of 6 object(s) not ok: flagged:out_of_domain:sky x3, low_information:few_frames x2")
    assert line.endswith("(flagged: not classified; few_frames: classified, on fewer frames than the model's "
                         "validated minimum; see the status column and docs/usage.md)")
    line = flag_summary({near: 2}, 2)
    assert line == ("2 of 2 object(s) not ok: low_information:near_uniform x2 (near_uniform: classified, but its "
                    "probabilities are close to uniform; see the status column and docs/usage.md)")
    assert "few_frames: classified" in flag_summary({both: 1}, 1)


# -- the same column names in every format ---------------------------------------------------------------
def test_fits_csv_and_parquet_have_the_same_column_names(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    results = Predictions(object_ids=np.array([1, 2]), probabilities=np.full((2, 2), 0.5, np.float32),
                          spread=np.zeros(2, np.float32), n_frames=np.array([3, 4]), bands_used=["g", "g,r"],
                          statuses=[ObjectStatus(), ObjectStatus(low_information=(Reason.few_frames,))],
                          classes=("AGN", "SNIa"), model="m/1")
    names = {}
    for suffix in (".fits", ".csv", ".parquet"):
        with PredictionWriter(tmp_path / f"out{suffix}", results.classes) as writer:
            writer.write(results)
    with fits.open(tmp_path / "out.fits") as hdul:
        names["fits"] = [hdul["PREDICTIONS"].header[f"TTYPE{k}"] for k in range(1, 11)]
    with open(tmp_path / "out.csv", newline="") as handle:
        names["csv"] = next(csv.reader(handle))
    names["parquet"] = pq.read_schema(tmp_path / "out.parquet").names
    assert names["fits"] == names["csv"] == names["parquet"] == [
        "object_id", "predicted_class", "p_AGN", "p_SNIa", "spread", "n_frames", "bands_used", "status", "model",
        "model_version"]
