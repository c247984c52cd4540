"""Text records of finished work: published fold by fold into a records folder, read by the table alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import train.early  # noqa: E402
from train import records, results  # noqa: E402
from train.fit import FitConfig, fit, fold_digests, protocol  # noqa: E402

from convention_rt.data import sample_catalog_path  # noqa: E402
from convention_rt.model_card import sha256_of  # noqa: E402

pytestmark = pytest.mark.torch

TINY = {"folds": 2, "fold_limit": 2, "members": 1, "epochs": 1, "patience": 6, "batch_size": 8,
        "learning_rate": 1e-3, "dropout": 0.3, "precision": "fp32", "seed": 0}


def _config(run_dir: Path, records_dir: Path) -> FitConfig:
    return FitConfig(catalog=str(sample_catalog_path()), run_dir=str(run_dir), model="compact", folds=2, members=1,
                     epochs=1, batch_size=8, threads=1, early=True, records_dir=str(records_dir))


def test_a_fit_publishes_each_fold_with_its_early_curve_and_the_table_needs_no_weights(tmp_path, monkeypatch):
    run_dir, records_dir = tmp_path / "runs" / "row", tmp_path / "results" / "row"
    original = protocol.train_member
    published_before = {}

    def train_member(*args, fold: int, **kwargs):  # what the records folder holds when a fold starts
        published_before[fold] = sorted(p.name for p in records_dir.glob("fold[0-9]*"))
        return original(*args, fold=fold, **kwargs)

    monkeypatch.setattr(protocol, "train_member", train_member)
    fit(_config(run_dir, records_dir))
    fold0 = ["fold0.calibration.json", "fold0.early.json", "fold0.json", "fold0.member0.json", "fold0.predictions.json"]
    assert published_before == {0: [], 1: fold0}  # fold 0 was published, early curve included, when it finished
    assert sorted(p.name for p in records_dir.iterdir()) == sorted(
        ["architecture.json", "config.json", "folds.sha256", "metrics.json", *fold0,
         *(name.replace("fold0", "fold1") for name in fold0)])  # no weights, logs, plots nor a copy of the folds
    assert (records_dir / "folds.sha256").read_text() == sha256_of(run_dir / "folds.json") + "\n"
    for name in ("fold1.json", "fold1.predictions.json", "config.json", "metrics.json"):
        assert (records_dir / name).read_bytes() == (run_dir / name).read_bytes()
    member = run_dir / "state" / "fold1_member0.best.json"
    assert (records_dir / "fold1.member0.json").read_bytes() == member.read_bytes()

    curves = []
    for fold in range(2):
        scored = json.loads((run_dir / f"fold{fold}.json").read_text())
        curve = json.loads((records_dir / f"fold{fold}.early.json").read_text())
        assert curve["fold"] == fold and curve["fold_sha256"] == fold_digests([scored])[0]
        assert curve["frames_seen"] == list(train.early.FRAMES_SEEN) and curve["n"] == scored["n"]
        # every frame (the sample's objects have fewer than 99): the fold's own held-out scores
        assert curve["macro_f1"][-1] == pytest.approx(scored["macro_f1"])
        curves.append(curve)
    assert json.loads((run_dir / "early.json").read_text()) == {"frames_seen": list(train.early.FRAMES_SEEN),
                                                                "per_fold": curves}

    # resumed with the same fold scores: the curves are kept, not scored again
    stamps = {p.name: p.stat().st_mtime_ns for p in records_dir.iterdir()}

    def not_again(*args, **kwargs):
        raise AssertionError("scored again")

    monkeypatch.setattr(train.early, "early_curve", not_again)
    fit(_config(run_dir, records_dir))
    assert {p.name: p.stat().st_mtime_ns for p in records_dir.iterdir()} == stamps
    # a run directory may be moved (runs/results/NAME became runs/standard/NAME): it resumes there
    moved = tmp_path / "runs" / "standard" / "row"
    moved.parent.mkdir()
    run_dir.rename(moved)
    fit(_config(moved, records_dir))
    assert json.loads((records_dir / "config.json").read_text())["run_dir"] == str(moved)
    assert {p.name: p.stat().st_mtime_ns for p in records_dir.iterdir() if p.name != "config.json"} == {
        name: stamp for name, stamp in stamps.items() if name != "config.json"}
    run_dir = moved

    # the table reads the records folder alone: the run directory, weights and all, may be gone
    shutil.rmtree(run_dir)
    monkeypatch.setattr(results, "PLAN", (results.Entry("row", "Row", {"model": "compact"}),))
    monkeypatch.setattr(results, "TABLE_PROTOCOL", TINY)
    collected = results.collect(results.PLAN[0], records_dir.parent)
    assert collected["folds"] == 2 and len(collected["epochs"]) == 2 and len(collected["held_out"]) == 2
    early = results.render_early(records_dir.parent)
    mean = [(a + b) / 2 for a, b in zip(curves[0]["macro_f1"], curves[1]["macro_f1"])]
    assert "| Row | " + " | ".join(f"{v:.3f}" for v in mean) + " |" in early
    document = tmp_path / "results.md"
    document.write_text(f"{results.BEGIN}\n{results.END}\n")
    assert results.main(["--root", str(records_dir.parent), "table", "--document", str(document)]) == 0
    assert "| Row | 2/2 |" in document.read_text()


def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value) + "\n")


def test_publish_copies_the_text_records_of_a_run_directory(tmp_path, capsys):
    run_dir, records_dir = tmp_path / "runs" / "row", tmp_path / "results" / "row"
    for name in ("config.json", "architecture.json", "metrics.json", "calibration.json", "export.json"):
        _write(run_dir / name, {"name": name})
    _write(run_dir / "folds.json", {"held_out": [["1"], ["2"], ["3"]]})
    for fold in range(3):
        _write(run_dir / "state" / f"fold{fold}_member0.best.json", {"epochs": fold})
        (run_dir / "state" / f"fold{fold}_member0.best.pt").write_bytes(b"weights")
    for fold in range(2):  # fold 2's member is finished, the fold not yet scored
        _write(run_dir / f"fold{fold}.json", {"macro_f1": fold})
        _write(run_dir / f"fold{fold}.predictions.json", {"object_id": [str(fold)]})
    _write(run_dir / "state" / "fold0_boosting.json", {"iterations": 3})
    curves = [{"frames_seen": [1, 99], "macro_f1": [0.1, 0.5]}, {"frames_seen": [1, 99], "macro_f1": [0.2, 0.6]}]
    for fold, curve in enumerate(curves):
        _write(run_dir / f"fold{fold}.early.json", {"fold": fold, **curve})
    _write(run_dir / "early.json", {"frames_seen": [1, 99], "per_fold": curves})  # gathered: not a record
    for name in ("fit.log", "confusion.png", "ensemble.ckpt"):
        (run_dir / name).write_bytes(b"working state")

    assert records.main([str(run_dir), str(records_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["folds"] == [0, 1]
    assert sorted(p.name for p in records_dir.iterdir()) == [
        "architecture.json", "calibration.json", "config.json", "fold0.boosting.json", "fold0.early.json",
        "fold0.json", "fold0.member0.json", "fold0.predictions.json", "fold1.early.json", "fold1.json",
        "fold1.member0.json", "fold1.predictions.json", "folds.sha256", "metrics.json"]
    for fold in range(2):
        assert json.loads((records_dir / f"fold{fold}.early.json").read_text()) == {"fold": fold, **curves[fold]}
    assert (records_dir / "fold1.member0.json").read_bytes() == (run_dir / "state" / "fold1_member0.best.json"
                                                                  ).read_bytes()

    # published again: unchanged records are left as they are, changed ones replaced
    stamps = {p.name: p.stat().st_mtime_ns for p in records_dir.iterdir()}
    _write(run_dir / "fold1.json", {"macro_f1": 0.5})
    records.publish(run_dir, records_dir)
    assert json.loads((records_dir / "fold1.json").read_text()) == {"macro_f1": 0.5}
    assert {name: stamp for name, stamp in stamps.items() if name != "fold1.json"} == {
        p.name: p.stat().st_mtime_ns for p in records_dir.iterdir() if p.name != "fold1.json"}

    assert records.main([str(tmp_path / "elsewhere"), str(records_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "elsewhere: not a run directory (no config.json)" in err
