"""The results-table runner: same folds as the reference run, reuse of its member 0, the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import train.fit  # noqa: E402
from train import results  # noqa: E402
from train.fit import FitConfig, fit  # noqa: E402

from convention_rt.data import sample_catalog_path  # noqa: E402
from convention_rt.errors import UsageError  # noqa: E402
from convention_rt.model_card import sha256_of  # noqa: E402

pytestmark = pytest.mark.torch

TINY = {"folds": 2, "fold_limit": 2, "members": 1, "epochs": 1, "patience": 6, "batch_size": 8,
        "learning_rate": 1e-3, "dropout": 0.3, "precision": "fp32", "seed": 0}


def train_reference(tmp_path, monkeypatch, members: int) -> tuple[str, Path]:
    """A finished 2-fold reference run on the sample catalog, with the table's protocol made tiny."""
    catalog = str(sample_catalog_path())
    reference = tmp_path / "reference"
    fit(FitConfig(catalog=catalog, run_dir=str(reference), model="compact", folds=2, members=members, epochs=1,
                  patience=6, batch_size=8, threads=1))
    monkeypatch.setattr(results, "TABLE_PROTOCOL", TINY)
    return catalog, reference


@pytest.mark.slow
def test_entries_train_on_the_reference_folds_and_fill_the_table(tmp_path, monkeypatch):
    catalog, reference = train_reference(tmp_path, monkeypatch, members=2)
    plan = (results.Entry("compact", "compact", {"model": "compact"}),
            results.Entry("lc_lstm", "light curves", {"model": "lc_lstm"}),
            results.Entry("compact-3class", "compact 3", {"model": "compact", "task": "3class"}))
    monkeypatch.setattr(results, "PLAN", plan)
    root, runs, folds = tmp_path / "table", tmp_path / "runs", reference / "folds.json"
    results.run_entry(plan[0], catalog, root, runs, threads=1, folds_file=folds, reference_run=reference)
    results.run_entry(plan[1], catalog, root, runs, threads=1, folds_file=folds,
                      frames_cache=str(tmp_path / "cache"))
    assert json.loads((root / "lc_lstm" / "config.json").read_text())["frames_cache"] == str(tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.f32"))) == 1

    # member 0 of the reference run is reused, not retrained: the same record, down to its timings
    for fold in range(2):
        for name in (f"fold{fold}_member0.best.pt", f"fold{fold}_member0.best.json"):
            assert (runs / "compact" / "state" / name).read_bytes() == (reference / "state" / name).read_bytes()
        assert (root / "compact" / f"fold{fold}.member0.json").read_bytes() == (
            reference / "state" / f"fold{fold}_member0.best.json").read_bytes()
    assert sorted(p.name for p in (runs / "lc_lstm" / "state").iterdir()) == [  # finished: no resume state
        "fold0_member0.best.json", "fold0_member0.best.pt", "fold1_member0.best.json", "fold1_member0.best.pt"]
    assert (runs / "lc_lstm" / "folds.json").read_text() == (reference / "folds.json").read_text()
    # the records hold the digest of the folds, not a copy, and no weights
    assert (root / "lc_lstm" / "folds.sha256").read_text().strip() == sha256_of(folds)
    assert not (root / "lc_lstm" / "folds.json").exists() and not list(root.rglob("*.pt"))
    # the image rows of the early table score each fold's early curve as it finishes
    assert all((root / name / f"fold{fold}.early.json").is_file() for name in ("compact", "lc_lstm") for fold in (0, 1))

    compact = results.collect(plan[0], root)
    assert compact["folds"] == 2 and len(compact["macro_f13"]) == 2
    assert all(0.0 <= v <= 1.0 for v in compact["accuracy"] + compact["accuracy3"])
    assert results.collect(plan[2], root)["folds"] == 0  # not run: an empty row

    # seconds per epoch by precision and the CPU's matrix units; an epoch recorded without its
    # CPU is grouped by precision alone
    assert set(compact["seconds_per_epoch"]) == {f"fp32 on {train.fit.CPU['matrix_units']}"}
    record_file = root / "lc_lstm" / "fold0.member0.json"
    record = json.loads(record_file.read_text())
    epochs = sum(len(json.loads(f.read_text())["history"]) for f in (root / "lc_lstm").glob("fold*.member*.json"))
    record["history"] = [{**record["history"][0], "precision": "bf16", "matrix_units": "amx"}] + [
        {k: v for k, v in epoch.items() if k not in ("cpu", "matrix_units")}
        for epoch in record["history"][1:]]
    record_file.write_text(json.dumps(record))
    for other in (root / "lc_lstm").glob("fold1.member*.json"):  # as saved before epochs named their CPU
        saved = json.loads(other.read_text())
        saved["history"] = [{k: v for k, v in e.items() if k not in ("cpu", "matrix_units")} for e in saved["history"]]
        other.write_text(json.dumps(saved))
    timing = results.collect(plan[1], root)["seconds_per_epoch"]
    assert len(timing["bf16 on amx"]) == 1 and len(timing["fp32"]) == epochs - 1 and len(timing) == 2
    table = results.render_table({entry.name: results.collect(entry, root) for entry in plan})
    assert f"(bf16 on amx, 1 epoch), {np.mean(timing['fp32']):.0f} (fp32, {epochs - 1} epochs)" in table

    document = tmp_path / "results.md"
    document.write_text(f"# Results\n\n{results.BEGIN}\nstale table\n{results.END}\n\nafter\n")
    assert "after a dead classifier head (restarts): none." in results.write_table(document, root)
    record_file = root / "lc_lstm" / "fold1.member0.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "restarts": 2}))
    table = results.write_table(document, root)
    assert "(restarts): light curves (fold 1 member 0: 2)." in table
    text = document.read_text()
    assert "stale table" not in text and text.endswith("after\n") and table in text
    assert "| compact | 2/2 |" in table and "| compact 3 | 0/2 | – | – | – | – |" in table
    assert "| compact | 0." in table.split("Early classification")[1] and "Not yet scored early" not in table
    with pytest.raises(UsageError, match="needs the markers"):
        results.write_table(reference / "folds.json", root)
    document.write_text(f"{results.END}\n{results.BEGIN}\n")
    with pytest.raises(UsageError, match="in that order"):
        results.write_table(document, root)


def test_merging_to_three_classes_sums_the_supernova_columns():
    predictions = {"classes": ["AGN", "SNIa", "SNOther", "Variable"], "label": ["SNOther", "AGN"],
                   "probabilities": [[0.1, 0.3, 0.3, 0.3], [0.5, 0.2, 0.2, 0.1]]}
    labels, merged, classes = results._merge_to_three(predictions)
    assert classes == ("AGN", "SN", "Variable")
    assert labels.tolist() == [1, 0]
    assert merged.ravel().tolist() == pytest.approx([0.1, 0.6, 0.3, 0.5, 0.4, 0.1])


def test_unknown_entry_is_named():
    with pytest.raises(UsageError, match="unknown entry 'resnet'"):
        results._entry("resnet")
    assert json.loads(json.dumps(results.TABLE_PROTOCOL))["fold_limit"] == 3


def _row(folds: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict:
    """A collected row from (labels, predicted) per fold, scored as the runs score."""
    from sklearn.metrics import f1_score

    held_out = {k: (np.arange(labels.size), labels, predicted) for k, (labels, predicted) in folds.items()}
    return {"fold_ids": sorted(folds), "held_out": held_out,
            "macro_f1": [f1_score(folds[k][0], folds[k][1], labels=range(4), average="macro", zero_division=0)
                         for k in sorted(folds)]}


def test_claims_follow_the_paired_bootstrap_interval():
    rng = np.random.default_rng(1)
    labels = {k: rng.integers(0, 4, 400) for k in range(3)}

    def guesses(k: int, right: float) -> np.ndarray:
        keep = np.random.default_rng(10 + k).random(400) < right
        return np.where(keep, labels[k], (labels[k] + 1) % 4)

    good = _row({k: (labels[k], guesses(k, 0.9)) for k in range(3)})
    poor = _row({k: (labels[k], guesses(k, 0.6)) for k in range(2)})
    same = _row({k: (labels[k], guesses(k, 0.9)) for k in range(3)})
    text = results.verdict(good, poor)
    assert text.startswith("holds on 2 folds: ")  # fold 2 of the first row has no partner
    difference = np.mean([good["macro_f1"][k] - poor["macro_f1"][k] for k in range(2)])
    assert f"difference {difference:+.3f}" in text
    low, high = (float(v) for v in text.split("interval [")[1].split("]")[0].split(", "))
    assert 0 < low < difference < high
    assert results.verdict(poor, good).startswith("reversed on 2 folds")
    tie = results.verdict(good, same)
    assert tie.startswith("not shown on 3 folds: ") and "difference +0.000" in tie
    assert results.verdict(_row({0: (labels[0], labels[0])}), _row({1: (labels[1], labels[1])})) == "not measured yet"
    other = _row({0: (labels[1], labels[1])})
    with pytest.raises(ValueError, match="different held-out objects"):
        results.verdict(good, other)
    assert {better for _, better, _, _ in results.CLAIMS} | {worse for _, _, worse, _ in results.CLAIMS} <= {
        entry.name for entry in results.PLAN}
    assert {task for *_, task in results.CLAIMS} == {"4class", "3class"}


def _write_fold(run_dir: Path, fold: int, classes: list[str], labels: list[str], probabilities: np.ndarray) -> None:
    """A scored fold as train.fit writes it (only what collect reads)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    predicted = [classes[i] for i in probabilities.argmax(axis=1)]
    scores = {"accuracy": float(np.mean([a == b for a, b in zip(labels, predicted)])), "macro_f1": 0.0,
              "recall": {name: 0.0 for name in classes}}
    (run_dir / f"fold{fold}.json").write_text(json.dumps(scores))
    (run_dir / f"fold{fold}.predictions.json").write_text(json.dumps({
        "classes": classes, "object_id": [str(i) for i in range(len(labels))], "label": labels,
        "probabilities": probabilities.tolist()}))


def test_the_three_class_claim_compares_merged_four_class_predictions(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    four = ["AGN", "SNIa", "SNOther", "Variable"]
    truth = rng.integers(0, 4, 300)
    # the 4-class row swaps every SNIa and SNOther (4-class F1 poor) but is otherwise right:
    # merged into SN it is perfect on 3 classes
    swapped = np.select([truth == 1, truth == 2], [2, 1], truth)
    three_truth = np.array([0, 1, 1, 2])[truth]
    wrong = rng.random(300) < 0.2  # the 3-class row errs on a fifth of the objects
    three_guess = np.where(wrong, (three_truth + 1) % 3, three_truth)
    _write_fold(tmp_path / "compact", 0, four, [four[i] for i in truth], np.eye(4)[swapped] * 0.9 + 0.025)
    _write_fold(tmp_path / "compact-3class", 0, ["AGN", "SN", "Variable"],
                [["AGN", "SN", "Variable"][i] for i in three_truth], np.eye(3)[three_guess] * 0.9 + 0.05)
    plan = (results.Entry("compact", "compact", {"model": "compact"}),
            results.Entry("compact-3class", "compact 3", {"model": "compact", "task": "3class"}))
    monkeypatch.setattr(results, "PLAN", plan)
    monkeypatch.setattr(results, "TABLE_PROTOCOL", TINY)
    collected = {entry.name: results.collect(entry, tmp_path) for entry in plan}
    ids, labels, predicted = collected["compact"]["held_out3"][0]
    assert np.array_equal(labels, predicted)  # the swaps vanish in the merge
    assert collected["compact-3class"]["held_out3"][0][1].tolist() == three_truth[np.argsort(
        [str(i) for i in range(300)], kind="stable")].tolist()
    line = next(line for line in results.render_claims(collected).splitlines() if "training on 3 classes" in line)
    expected_f1 = results.macro_f1(three_truth, three_guess, 3)
    assert f": reversed on 1 fold: {expected_f1:.3f} vs 1.000, difference {expected_f1 - 1:+.3f}" in line


def test_compare_pairs_two_records_folders_on_the_folds_both_finished(tmp_path, capsys):
    rng = np.random.default_rng(4)
    four = ["AGN", "SNIa", "SNOther", "Variable"]
    truth = rng.integers(0, 4, 200)
    wrong = np.where(rng.random(200) < 0.3, (truth + 1) % 4, truth)  # errs on about 30 % of the objects
    for name, guesses, folds in (("good", truth, (0, 1, 2)), ("poor", wrong, (0, 1))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"folds": 5, "task": "4class"}))
        for fold in folds:
            _write_fold(tmp_path / name, fold, four, [four[i] for i in truth], np.eye(4)[guesses] * 0.9 + 0.025)
    assert results.main(["compare", str(tmp_path / "good"), str(tmp_path / "poor")]) == 0
    four_line, three_line = capsys.readouterr().out.splitlines()
    expected = results.macro_f1(truth, wrong, 4)
    assert four_line.startswith(f"good above poor, 4 classes: holds on 2 folds: 1.000 vs {expected:.3f}")
    assert three_line.startswith("good above poor, 3 classes: holds on 2 folds: 1.000 vs ")
    assert results.main(["compare", str(tmp_path / "good"), str(tmp_path / "missing")]) == 2
    assert "missing: not a records folder of a run" in capsys.readouterr().err
    (tmp_path / "three").mkdir()
    (tmp_path / "three" / "config.json").write_text(json.dumps({"folds": 5, "task": "3class"}))
    assert results.main(["compare", str(tmp_path / "good"), str(tmp_path / "three")]) == 2
    assert "three: a 3class run; compare reads 4-class runs" in capsys.readouterr().err
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "config.json").write_text(json.dumps({"folds": 5}))
    assert results.main(["compare", str(tmp_path / "good"), str(tmp_path / "none")]) == 2
    assert "no finished fold in common" in capsys.readouterr().err


def test_the_interval_pairs_the_two_rows_on_the_same_draws():
    rng = np.random.default_rng(2)
    folds_a, folds_b = {}, {}
    for k in range(3):
        labels = rng.integers(0, 4, 600)
        worse = np.where(rng.random(600) < 0.75, labels, (labels + 1) % 4)
        better = worse.copy()
        fixed = np.flatnonzero(worse != labels)[:12]  # the better row is right on 12 more objects
        better[fixed] = labels[fixed]
        folds_a[k], folds_b[k] = (labels, better), (labels, worse)
    text = results.verdict(_row(folds_a), _row(folds_b))
    low, high = (float(v) for v in text.split("interval [")[1].split("]")[0].split(", "))
    # paired, only the 36 changed objects vary the difference; independent draws would give
    # an interval about 0.06 wide around a difference of about 0.02, holding 0
    assert text.startswith("holds") and high - low < 0.02


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 3), min_size=n, max_size=n), st.lists(st.integers(0, 3), min_size=n, max_size=n))))
def test_macro_f1_matches_scikit_learn(pair):
    from sklearn.metrics import f1_score

    labels, predicted = (np.array(v) for v in pair)
    expected = f1_score(labels, predicted, labels=range(4), average="macro", zero_division=0)
    assert results.macro_f1(labels, predicted, 4) == pytest.approx(expected, abs=1e-12)
    stacked = results.macro_f1(np.stack([labels, labels[::-1]]), np.stack([predicted, predicted[::-1]]), 4)
    assert stacked.shape == (2,) and stacked[1] == pytest.approx(
        f1_score(labels[::-1], predicted[::-1], labels=range(4), average="macro", zero_division=0), abs=1e-12)


def test_reuse_only_scores_the_folds_the_reference_run_has_finished(tmp_path, monkeypatch):
    import shutil

    catalog, reference = train_reference(tmp_path, monkeypatch, members=1)
    compact = results.Entry("compact", "compact", {"model": "compact"})
    finished = reference / "state" / "fold1_member0.best.json"
    shutil.move(finished, tmp_path / "later.json")  # as if the reference run were still training fold 1
    root, runs = tmp_path / "table", tmp_path / "runs"
    reuse = {"folds_file": reference / "folds.json", "reference_run": reference, "reuse_only": True}
    record = reference / "architecture.json"
    saved = record.read_text()
    record.write_text(json.dumps({**json.loads(saved), "head_norm": not json.loads(saved)["head_norm"]}))
    with pytest.raises(UsageError, match=r"architecture\.json: the run was trained with another architecture"):
        results.run_entry(compact, catalog, root, runs, threads=1, **reuse)
    assert not list((runs / "compact" / "state").glob("*.pt"))  # members of another architecture: not copied
    record.write_text(saved)
    results.run_entry(compact, catalog, root, runs, threads=1, **reuse)
    assert (root / "compact" / "fold0.json").exists() and not (root / "compact" / "fold1.json").exists()
    assert not results._trained_here(runs / "compact", reference)  # nothing was trained, only copied
    shutil.move(tmp_path / "later.json", finished)
    # another precision (a way of running, not of computing) neither stops the reuse nor the resume
    results.run_entry(compact, catalog, root, runs, threads=1, precision="bf16", **reuse)
    assert results.collect(compact, root)["folds"] == 2
    assert json.loads((root / "compact" / "config.json").read_text())["precision"] == "bf16"
    assert not results._trained_here(runs / "compact", reference)
    assert results._trained_here(runs / "compact", tmp_path / "elsewhere")
    results.run_entry(results.Entry("lc_lstm", "lc", {"model": "lc_lstm"}), catalog, root, runs, threads=1, **reuse)
    assert not (root / "lc_lstm").exists() and not (runs / "lc_lstm").exists()  # reuse_only: other rows left alone


def test_bad_runs_are_refused_in_one_line_and_leave_nothing(tmp_path, capsys):
    folds = tmp_path / "results" / "folds.json"
    run = ["--root", str(tmp_path / "table"), "run", "--runs", str(tmp_path / "runs"), "--folds", str(folds),
           "--reference-run", str(tmp_path / "reference"), "--only"]
    assert results.main(["--root", str(tmp_path / "none"), "table"]) == 2
    assert results.main([*run, "lc_lstm", "--catalog", str(sample_catalog_path())]) == 2
    folds.parent.mkdir()
    folds.write_text('{"held_out": [["1"], ["2"]]}')
    assert results.main([*run, "lc_lstm", "--catalog", str(tmp_path / "missing.fits")]) == 1
    assert results.main([*run, "resnet", "--catalog", "x"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["error"] * 4
    assert "no such folder" in lines[0] and "folds.json: not found" in lines[1]
    assert "missing.fits: no such file" in lines[2] and "unknown entry 'resnet'" in lines[3]
    assert not (tmp_path / "table" / "lc_lstm").exists() and not (tmp_path / "runs" / "lc_lstm").exists()
    (tmp_path / "runs" / "lc_lstm").mkdir(parents=True)
    (tmp_path / "runs" / "lc_lstm" / "folds.json").write_text('{"held_out": [["2"], ["1"]]}')
    assert results.main([*run, "lc_lstm", "--catalog", str(sample_catalog_path())]) == 2
    assert "other folds than" in capsys.readouterr().err
    (tmp_path / "runs" / "lc_lstm" / "folds.json").unlink()
    (tmp_path / "table" / "lc_lstm").mkdir(parents=True)  # records of a row trained on other folds
    (tmp_path / "table" / "lc_lstm" / "folds.sha256").write_text("0" * 64 + "\n")
    assert results.main([*run, "lc_lstm", "--catalog", str(sample_catalog_path())]) == 2
    assert "lc_lstm/folds.sha256: the row was trained on other folds than" in capsys.readouterr().err


def test_an_interrupted_run_says_how_to_resume_in_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    import train.fit

    monkeypatch.setattr(results, "run_entry", interrupted)
    monkeypatch.setattr(train.fit, "configure_logging", lambda *args: None)  # no log file left open
    assert results.main(["--root", str(tmp_path / "table"), "run", "--runs", str(tmp_path / "runs"), "--catalog",
                         str(sample_catalog_path()), "--only", "lc_lstm"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted: run the same command to resume"]


def test_the_early_table_reads_each_image_row_s_curve(tmp_path, monkeypatch):
    plan = (results.Entry("a", "Model A", {"model": "compact"}), results.Entry("b", "Model B", {"model": "cnn_gru"}),
            results.Entry("c", "Model C, 3 classes", {"model": "compact", "task": "3class"}))
    monkeypatch.setattr(results, "PLAN", plan)
    assert results.render_early(tmp_path) == ""  # no curve yet: no table
    (tmp_path / "a").mkdir()
    for fold, f1 in enumerate(([0.2, 0.7], [0.4, 0.9])):  # one record per fold
        (tmp_path / "a" / f"fold{fold}.early.json").write_text(json.dumps({"frames_seen": [1, 99], "macro_f1": f1}))
    table = results.render_early(tmp_path)
    assert "| model | k = 1 | k = 99 |" in table
    assert "| Model A | 0.300 | 0.800 |" in table
    assert "Not yet scored early: Model B." in table  # a 3-class row is not in the early table
    (tmp_path / "a" / "fold1.early.json").write_text(json.dumps({"frames_seen": [1, 50], "macro_f1": [0.4, 0.9]}))
    with pytest.raises(ValueError, match=r"fold1\.early\.json: scored at other frames seen"):
        results.render_early(tmp_path)


def test_only_folds_reaches_the_row_s_run_and_a_bad_value_is_one_line(tmp_path, monkeypatch, capsys):
    import train.fit

    seen = []
    monkeypatch.setattr(results, "TABLE_PROTOCOL", TINY)
    monkeypatch.setattr(train.fit, "fit", lambda config, **kwargs: seen.append(config.only_folds))
    monkeypatch.setattr(train.fit, "configure_logging", lambda *args: None)
    folds = tmp_path / "folds.json"
    catalog = str(sample_catalog_path())
    fit(FitConfig(catalog=catalog, run_dir=str(tmp_path / "split"), model="compact", folds=2, members=1, epochs=1,
                  fold_limit=1, batch_size=8, threads=1))
    folds.write_bytes((tmp_path / "split" / "folds.json").read_bytes())
    run = ["--root", str(tmp_path / "table"), "run", "--runs", str(tmp_path / "runs"), "--folds", str(folds),
           "--catalog", catalog, "--only", "compact-dot-attention"]
    assert results.main([*run, "--only-folds", "1"]) == 0
    assert results.main(run) == 0
    assert seen == ["1", None]
    assert results.main([*run, "--only-folds", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
