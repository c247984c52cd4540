"""Evaluations of a finished train.fit run: early classification and calibration, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from train import calibration, early  # noqa: E402
from train.fit import FitConfig, fit  # noqa: E402

from convention_rt.data import sample_catalog_path  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    fit(FitConfig(catalog=str(sample_catalog_path()), run_dir=str(run_dir), model="compact", folds=2, members=2,
                  epochs=1, batch_size=8, threads=1))
    return run_dir


def test_early_curve_of_a_run_scores_each_fold_at_each_length(finished_run):
    result = early.score_run(finished_run, str(sample_catalog_path()), (1, 3, 99))
    assert json.loads((finished_run / "early.json").read_text()) == result
    assert len(result["per_fold"]) == 2
    for fold, scored in zip(result["per_fold"], ("fold0.json", "fold1.json")):
        assert fold["frames_seen"] == [1, 3, 99]
        assert fold["mean_frames_used"][0] == 1.0 and fold["mean_frames_used"][1] <= 3.0
        # all frames (the catalog's objects have fewer than 99): the fold's own held-out scores
        expected = json.loads((finished_run / scored).read_text())
        assert fold["n"] == expected["n"]
        assert fold["accuracy"][2] == pytest.approx(expected["accuracy"])
        assert fold["macro_f1"][2] == pytest.approx(expected["macro_f1"])


def test_calibration_of_a_run_fits_both_ways_and_names_the_winner(finished_run):
    result = calibration.calibrate_run(finished_run, str(sample_catalog_path()), bins=5)
    assert json.loads((finished_run / "calibration.json").read_text()) == result
    assert result["chosen"] in ("none", "inner_validation", "other_folds")
    mean_nll = np.mean([f["nll"] for f in result["per_fold"]])
    for way in ("inner_validation", "other_folds"):
        for fold in result["per_fold"]:
            assert 0.05 <= fold[way]["temperature"] <= 20.0
            assert 0.0 <= fold[way]["ece"] <= 1.0
    if result["chosen"] != "none":
        assert np.mean([f[result["chosen"]]["nll"] for f in result["per_fold"]]) < mean_nll
    assert sum(result["reliability"]["count"]) == sum(f["scored"] for f in result["per_fold"])


def test_calibration_reads_the_fold_records_or_computes_them_from_the_weights(finished_run, tmp_path):
    import shutil

    from_records = calibration.calibrate_run(finished_run, str(sample_catalog_path()), bins=5)
    older = tmp_path / "older"  # a run finished before runs wrote fold calibration records
    shutil.copytree(finished_run, older)
    for path in older.glob("fold*.calibration.json"):
        path.unlink()
    from_weights = calibration.calibrate_run(older, str(sample_catalog_path()), bins=5)
    assert len(from_records["per_fold"]) == len(from_weights["per_fold"]) == 2
    for ours, theirs in zip(from_records["per_fold"], from_weights["per_fold"]):
        assert ours["scored"] == theirs["scored"] and ours["fitted_on"] == theirs["fitted_on"]
        for way in ("inner_validation", "other_folds"):
            assert ours[way]["temperature"] == pytest.approx(theirs[way]["temperature"], rel=1e-4)
        assert ours["nll"] == pytest.approx(theirs["nll"], rel=1e-5)
    weightless = tmp_path / "weightless"  # the records alone, as on another machine
    shutil.copytree(finished_run, weightless)
    shutil.rmtree(weightless / "state")
    assert calibration.calibrate_run(weightless, str(sample_catalog_path()), bins=5)["per_fold"] == \
        from_records["per_fold"]


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path, capsys):
    assert early.main([str(tmp_path), "--catalog", str(sample_catalog_path())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json: not a run of train.fit" in err
