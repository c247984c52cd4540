"""``convention-rt classify``, ``info`` and ``models``, in-process."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from conftest import frame_columns, object_columns, write_raw_catalog, write_small_catalog, write_tiny_onnx
from convention_rt.cli import main
from test_catalog import BAD_FILES, problem_catalog


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_classify_writes_one_row_per_object_beside_the_catalog(capsys, tmp_path, tiny_model):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu",
                         "--threads", "1", "--chunk-size", "4")
    assert code == 0, err
    output = tmp_path / "survey.predictions.fits"
    with fits.open(output) as hdul:
        table = hdul["PREDICTIONS"].data
        assert table["OBJECT_ID"].tolist() == list(range(100, 106))
        np.testing.assert_allclose(table["P_AGN"] + table["P_SNIA"], 1.0, rtol=1e-6)
        assert set(table.columns.names) >= {"PREDICTED_CLASS", "SPREAD", "N_FRAMES", "BANDS_USED", "STATUS",
                                            "MODEL", "MODEL_VERSION"}
        assert hdul[0].header["MODEL"] == "tiny-test" and hdul[0].header["DEVICE"] == "cpu"
    assert "6 objects" in out and "flagged: 0" in out
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu")
    assert code == 2 and "exists already (add --overwrite" in err
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "--overwrite")
    assert code == 0, err


def test_classify_flags_problem_objects_and_can_stop_instead(capsys, tmp_path, tiny_model):
    catalog = problem_catalog(tmp_path)
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu",
                         "-o", tmp_path / "p.csv")
    assert code == 0, err
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 1 + 8 and "flagged: 7" in out  # 6 flagged by the reader, 1 (band i only) by the model
    flagged = [line for line in lines[1:] if ",flagged:" in line]
    assert all(",," in line for line in flagged)  # empty class and empty (NaN) probabilities
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu",
                       "-o", tmp_path / "q.csv", "--on-invalid", "raise")
    assert code == 1 and err.strip() == f"error: {catalog}: OBJECTS: object 1: duplicate id"
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize(("build", "message"), BAD_FILES)
def test_every_bad_catalog_fails_cleanly_without_output(capsys, tmp_path, tiny_model, build, message):
    path = tmp_path / "bad.fits"
    build(path)
    code, _, err = run(capsys, "classify", path, "--model", tiny_model[0], "--device", "cpu")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fits", "card.json", "model.onnx"]


def test_model_and_catalog_mismatch_is_refused(capsys, monkeypatch, tmp_path, tiny_model):
    from convention_rt import session

    monkeypatch.setattr(session, "cuda_unavailable_reason", lambda: "no GPU in this test")
    big = write_raw_catalog(tmp_path / "big.fits", object_columns([1], [0], [1]),
                            frame_columns([1], [0.0], ["g"], np.zeros((1, 40, 40), np.float32)))
    code, _, err = run(capsys, "classify", big, "--model", tiny_model[0], "--device", "cpu")
    assert code == 1 and "stamps are 40x40, the model needs 32x32" in err
    code, _, err = run(capsys, "classify", big, "--model", tmp_path / "none.onnx")
    assert code == 3 and "none.onnx: model file not found" in err
    good = write_small_catalog(tmp_path / "good.fits")
    code, _, err = run(capsys, "classify", good, "--model", tiny_model[0], "--device", "cuda")
    assert code == 3 and "use --device cpu" in err
    code, _, err = run(capsys, "classify", big, "--model", tiny_model[0], "-o", tmp_path / "x.txt")
    assert code == 2 and "must end in .fits, .csv or .parquet" in err


def test_info_and_models(capsys, tiny_model):
    code, out, _ = run(capsys, "info", tiny_model[0])
    assert code == 0 and "tiny-test 0.0.1" in out and "AGN, SNIa" in out
    code, out, _ = run(capsys, "models")
    assert code == 0


def test_info_reads_the_card_embedded_in_the_model_when_no_card_json(capsys, tmp_path):
    onnx = pytest.importorskip("onnx")
    from conftest import tiny_card, write_tiny_onnx
    from convention_rt.session import CARD_METADATA_KEY

    path = write_tiny_onnx(tmp_path / "alone.onnx")
    model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, tiny_card().to_json()
    onnx.save(model, path)
    code, out, err = run(capsys, "info", path)
    assert code == 0, err
    assert "tiny-test 0.0.1" in out


@pytest.mark.parametrize(("folds", "planned", "shown"), [(5, 5, "5-fold"), (1, 5, "1 of 5 folds"),
                                                         (3, None, "3-fold")])
def test_info_says_how_many_folds_the_metrics_cover(capsys, monkeypatch, tmp_path, folds, planned, shown):
    from dataclasses import replace

    from conftest import tiny_card
    from convention_rt.model_card import sha256_of

    model = write_tiny_onnx(tmp_path / "model.onnx")
    score = {"mean": 0.5, "std": 0.1}
    metrics = {"cross_validation": {"accuracy": score, "macro_f1": score, "folds": folds},
               "evaluated_on": "held-out spec objects"}
    if planned is not None:
        metrics["folds_planned"] = planned
    card = replace(tiny_card(), sha256=sha256_of(model), metrics=metrics)
    (tmp_path / "card.json").write_text(card.to_json())
    monkeypatch.setenv("COLUMNS", "250")  # one line per row
    code, out, err = run(capsys, "info", model)
    assert code == 0, err
    assert f"({shown}, held-out spec objects)" in out


def test_output_problems_are_refused_before_any_work(capsys, tmp_path, tiny_model):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    before = catalog.read_bytes()
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "-o", catalog, "--overwrite")
    assert code == 2 and err.strip() == f"error: {catalog}: is the input catalog; choose another output"
    assert catalog.read_bytes() == before
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "-o", tmp_path / "nodir" / "p.csv")
    missing = tmp_path / "nodir"
    assert code == 2 and err.strip() == f"error: {missing / 'p.csv'}: folder {missing} does not exist"


@pytest.mark.parametrize(("option", "value"), [("--batch-size", "0"), ("--threads", "-1"), ("--bogus", None)])
def test_bad_options_are_one_line(capsys, tmp_path, option, value):
    args = ["classify", tmp_path / "x.fits", option] + ([value] if value is not None else [])
    code, out, err = run(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0]
    assert "see 'convention-rt classify --help'" in lines[0] and not out


def test_the_catalog_is_checked_before_the_model_is_loaded(capsys, tmp_path):
    code, _, err = run(capsys, "classify", tmp_path / "missing.fits")  # default device auto: no info line
    assert code == 1 and err.strip().splitlines() == [f"error: {tmp_path / 'missing.fits'}: no such file"]
    (tmp_path / "folder.fits").mkdir()
    code, _, err = run(capsys, "classify", tmp_path / "folder.fits")
    assert code == 1 and "is a folder, not a catalog file" in err
    fake = tmp_path / "fake.fits"
    fake.write_text("not a FITS file\n")
    code, _, err = run(capsys, "classify", fake)
    assert code == 1 and "not a readable FITS file" in err and "ignore_missing_simple" not in err


def test_a_file_that_is_not_a_model_is_named(capsys, tmp_path):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    code, _, err = run(capsys, "classify", catalog, "--model", notes)
    assert code == 3
    assert err.strip() == f"error: {notes}: not an ONNX model (a .onnx file, or a folder holding model.onnx)"
