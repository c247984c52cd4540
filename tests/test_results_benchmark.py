"""A second benchmark in train.results: catalogs checked against the folds, its own root and table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")  # the train extra: train.results reads through train.data.plasticc (scipy)

from convention_rt.catalog_writer import CatalogWriter  # noqa: E402
from convention_rt.errors import UsageError  # noqa: E402
from train import results  # noqa: E402
from train.data.plasticc import PHOTOMETRY  # noqa: E402

HARD = results.BENCHMARKS["hard"]
DIFFERENCE = results.BENCHMARKS["difference"]
STANDARD = results.BENCHMARKS["standard"]


def _catalog(path: Path, ids: list[int], scene: str | None) -> Path:
    """A tiny catalog with these object ids (two frames each) and, if given, a SCENE keyword."""
    header = {"SOURCE": "PLAsTiCC"} | ({"SCENE": scene} if scene is not None else {})
    with CatalogWriter(path, ("g", "r"), photometry=PHOTOMETRY, header=header) as writer:
        for object_id in ids:
            writer.add_object(object_id, mjd=[60000.0, 60001.0], stamps=np.ones((2, 32, 32), np.float32),
                              bands=["g", "r"], label="SNIa", typing="spec")
    return path


def _folds(path: Path, catalog: Path | str) -> Path:
    """The table's folds file, made on ``catalog``."""
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"seed": 0, "catalog": str(catalog), "held_out": [["1"], ["2"]]}))
    return path


def test_benchmarks_have_their_own_root_and_markers():
    # records in results/ (tracked), run directories in runs/ (working state, ignored by git)
    assert STANDARD.root == Path("results/standard") and HARD.root == Path("results/hard")
    assert STANDARD.runs == Path("runs/standard") and HARD.runs == Path("runs/hard")
    assert results.FOLDS_FILE == Path("results/folds.json")
    assert STANDARD.markers == (results.BEGIN, results.END) == ("<!-- results-table:begin -->",
                                                                "<!-- results-table:end -->")
    assert HARD.markers == ("<!-- results-table-hard:begin -->", "<!-- results-table-hard:end -->")
    assert DIFFERENCE.root == Path("results/difference") and DIFFERENCE.runs == Path("runs/difference")
    assert DIFFERENCE.markers == ("<!-- results-table-difference:begin -->", "<!-- results-table-difference:end -->")
    assert set(results.BENCHMARKS) == {"standard", "hard", "difference"}


def test_a_catalog_of_the_same_objects_is_accepted(tmp_path):
    standard = _catalog(tmp_path / "standard.fits", [3, 1, 2], None)      # no SCENE: standard
    hard = _catalog(tmp_path / "hard.fits", [3, 1, 2], "hard")
    folds = _folds(tmp_path / "results" / "folds.json", standard)
    results.check_catalog(standard, STANDARD, folds)
    results.check_catalog(hard, HARD, folds)
    results.check_catalog(hard, HARD, tmp_path / "none" / "folds.json")  # no folds file: run_entry says so


def test_a_catalog_of_another_benchmark_is_refused(tmp_path):
    standard = _catalog(tmp_path / "standard.fits", [1, 2], "standard")
    hard = _catalog(tmp_path / "hard.fits", [1, 2], "hard")
    odd = _catalog(tmp_path / "odd.fits", [1, 2], "odd")
    folds = _folds(tmp_path / "results" / "folds.json", standard)
    with pytest.raises(UsageError, match=r"hard\.fits: SCENE = 'hard', not a catalog of the standard benchmark; "
                                         r"pass --benchmark hard"):
        results.check_catalog(hard, STANDARD, folds)
    with pytest.raises(UsageError, match=r"standard\.fits: SCENE = 'standard', .* pass --benchmark standard"):
        results.check_catalog(standard, HARD, folds)
    with pytest.raises(UsageError, match=r"odd\.fits: SCENE = 'odd', .* no benchmark has that scene"):
        results.check_catalog(odd, HARD, folds)


def test_a_difference_catalog_belongs_to_the_difference_benchmark(tmp_path):
    from train.data.plasticc import DIFFERENCE_PHOTOMETRY

    standard = _catalog(tmp_path / "standard.fits", [3, 1, 2], None)
    difference = tmp_path / "difference.fits"
    with CatalogWriter(difference, ("g", "r"), photometry=DIFFERENCE_PHOTOMETRY,
                       header={"SOURCE": "PLAsTiCC", "SCENE": "difference"}) as writer:
        for object_id in (3, 1, 2):
            writer.add_object(object_id, mjd=[60000.0, 60001.0], stamps=np.zeros((2, 32, 32), np.float32),
                              bands=["g", "r"], label="SNIa", typing="spec")
    folds = _folds(tmp_path / "results" / "folds.json", standard)
    results.check_catalog(difference, DIFFERENCE, folds)
    for benchmark in (STANDARD, HARD):
        with pytest.raises(UsageError, match=rf"SCENE = 'difference', not a catalog of the {benchmark.name} "
                                             r"benchmark; pass --benchmark difference"):
            results.check_catalog(difference, benchmark, folds)
    with pytest.raises(UsageError, match=r"SCENE = 'hard', .* pass --benchmark hard"):
        results.check_catalog(_catalog(tmp_path / "hard.fits", [3, 1, 2], "hard"), DIFFERENCE, folds)
    with pytest.raises(ValueError, match="first difference at row 0: 1 against 3"):
        results.check_catalog(_catalog(tmp_path / "other.fits", [1, 2, 3], "difference"), DIFFERENCE, folds)


@pytest.mark.parametrize("ids, first", [([1, 3, 2], "row 1: 3 against 2"), ([1, 2], "row 2: none against 3"),
                                        ([1, 2, 3, 4], "row 3: 4 against none")])
def test_other_objects_than_the_folds_catalog_are_refused(tmp_path, ids, first):
    standard = _catalog(tmp_path / "standard.fits", [1, 2, 3], None)
    hard = _catalog(tmp_path / "hard.fits", ids, "hard")
    folds = _folds(tmp_path / "results" / "folds.json", standard)
    with pytest.raises(ValueError) as refused:
        results.check_catalog(hard, HARD, folds)
    message = str(refused.value)
    assert message.startswith(f"{hard}: OBJECTS: its {len(ids)} object ids are not, in order, the 3 of {standard}")
    assert first in message and "\n" not in message


def test_without_the_folds_catalog_every_object_of_the_folds_must_be_in_the_catalog(tmp_path):
    # the folds' catalog is on another machine: its order cannot be checked, its objects can
    folds = _folds(tmp_path / "results" / "folds.json", tmp_path / "gone.fits")
    results.check_catalog(_catalog(tmp_path / "hard.fits", [2, 3, 1], "hard"), HARD, folds)
    short = _catalog(tmp_path / "short.fits", [1, 3], "hard")
    with pytest.raises(ValueError) as refused:
        results.check_catalog(short, HARD, folds)
    message = str(refused.value)
    assert message.startswith(f"{short}: OBJECTS: 1 of the 2 objects of the folds of {folds} are not in it (e.g. 2)")
    assert "\n" not in message


@pytest.mark.torch
def test_cli_refuses_before_anything_is_written(tmp_path, monkeypatch, capsys):
    fit = pytest.importorskip("train.fit")                 # the run command logs through train.fit
    monkeypatch.setattr(fit, "configure_logging", lambda *args: None)  # no log file left open
    standard = _catalog(tmp_path / "standard.fits", [1, 2], None)
    hard = _catalog(tmp_path / "hard.fits", [2, 1], "hard")
    folds = _folds(tmp_path / "results" / "folds.json", standard)
    root, runs = tmp_path / "results" / "hard", tmp_path / "runs"
    run = ["run", "--runs", str(runs), "--folds", str(folds), "--only", "scene-boosting", "--catalog"]
    assert results.main(["--root", str(root), *run, str(hard)]) == 2                      # standard benchmark
    assert results.main(["--root", str(root), "--benchmark", "hard", *run, str(standard)]) == 2
    assert results.main(["--root", str(root), "--benchmark", "hard", *run, str(hard)]) == 1  # other order
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "pass --benchmark hard" in lines[0] and "pass --benchmark standard" in lines[1]
    assert "first difference at row 0: 2 against 1" in lines[2]
    assert not (root / "scene-boosting").exists() and not (runs / "scene-boosting").exists()
    with pytest.raises(ValueError, match="first difference at row 0"):   # the API refuses as the command does
        results.run_entry(results._entry("scene-boosting"), str(hard), root, runs, 1, folds_file=folds,
                          benchmark=HARD)
    assert not (root / "scene-boosting").exists() and not (runs / "scene-boosting").exists()


def _write_fold(run_dir: Path, fold: int, labels: np.ndarray, predicted: np.ndarray) -> None:
    """A scored 4-class fold as the runs write it (what collect reads)."""
    classes = ["AGN", "SNIa", "SNOther", "Variable"]
    run_dir.mkdir(parents=True, exist_ok=True)
    recall = {name: float(np.mean(predicted[labels == k] == k)) for k, name in enumerate(classes)}
    (run_dir / f"fold{fold}.json").write_text(json.dumps({
        "accuracy": float(np.mean(labels == predicted)), "macro_f1": float(results.macro_f1(labels, predicted, 4)),
        "recall": recall}))
    (run_dir / f"fold{fold}.predictions.json").write_text(json.dumps({
        "classes": classes, "object_id": [str(i) for i in range(labels.size)],
        "label": [classes[i] for i in labels], "probabilities": np.eye(4)[predicted].tolist()}))


@pytest.mark.parametrize("name", ["hard", "difference"])
def test_another_table_lists_its_rows_and_compares_them_with_the_standard_ones(tmp_path, capsys, name):
    bench = results.BENCHMARKS[name]
    rng = np.random.default_rng(0)
    labels = {k: rng.integers(0, 4, 300) for k in range(3)}

    def guesses(k: int, right: float, seed: int) -> np.ndarray:
        keep = np.random.default_rng(seed + k).random(300) < right
        return np.where(keep, labels[k], (labels[k] + 1) % 4)

    standard_root, other_root = tmp_path / "results", tmp_path / f"results-{name}"
    for k in range(3):
        _write_fold(standard_root / "scene-boosting", k, labels[k], guesses(k, 0.95, 10))
        _write_fold(other_root / "scene-boosting", k, labels[k], guesses(k, 0.6, 20))
        _write_fold(standard_root / "lightcurve-boosting", k, labels[k], guesses(k, 0.9, 30))
    _write_fold(other_root / "lightcurve-boosting", 0, labels[0], guesses(0, 0.9, 30))  # one fold so far
    (other_root / "cnn_gru").mkdir()                                                     # started, nothing scored
    (other_root / "cnn_gru" / "fold0.early.json").write_text(json.dumps({"frames_seen": [1, 99],  # but its early curve
                                                                         "macro_f1": [0.3, 0.7]}))
    document = tmp_path / "results.md"
    untouched = "<!-- results-table:begin -->\nthe standard table\n<!-- results-table:end -->\n"
    document.write_text(f"# Results\n{untouched}\n## Hard\n\n{bench.markers[0]}\nold\n{bench.markers[1]}\nend\n")

    assert results.main(["--benchmark", name, "--root", str(other_root), "table", "--document", str(document),
                         "--against", str(standard_root)]) == 0
    text = document.read_text()
    assert text.startswith(f"# Results\n{untouched}\n## Hard\n\n{bench.markers[0]}\n") and text.endswith(
        f"{bench.markers[1]}\nend\n") and "\nold\n" not in text
    table = text.split(bench.markers[0])[1].split(bench.markers[1])[0]
    assert capsys.readouterr().out.strip() == table.strip()
    scene = next(entry for entry in results.PLAN if entry.name == "scene-boosting")
    rows = [line for line in table.splitlines() if line.startswith(("| Reference", "| CNN"))]
    assert {row.split(" | ")[0][2:] for row in rows} == {scene.label, "CNN + GRU",
                                                          "Reference: gradient boosting on the difference light curves"}
    assert f"| {scene.label} | 3/3 |" in table and "| CNN + GRU | 0/3 |" in table
    assert "ConvEntion-compact |" not in table                      # rows not started are left out
    assert "| CNN + GRU | 0.300 | 0.700 |" in table and "Not yet scored early" not in table  # nor in the early table
    against = {line.split(f": standard above {name}: ")[0][2:]: line for line in table.splitlines()
               if f": standard above {name}: " in line}
    standard_f1 = [results.macro_f1(labels[k], guesses(k, 0.95, 10), 4) for k in range(3)]
    other_f1 = [results.macro_f1(labels[k], guesses(k, 0.6, 20), 4) for k in range(3)]
    line = against[scene.label]
    assert f"holds on 3 folds: {np.mean(standard_f1):.3f} vs {np.mean(other_f1):.3f}" in line
    assert f"fold 0 {standard_f1[0]:.3f} / {other_f1[0]:.3f}" in line
    assert "not shown on 1 fold" in against["Reference: gradient boosting on the difference light curves"]
    assert "CNN + GRU: not measured on the standard benchmark" in table
    assert "CNN + GRU above gradient boosting on the static scene: reversed" not in table  # nothing scored
    assert "CNN + GRU above gradient boosting on the static scene: not measured yet" in table


def test_the_standard_table_still_has_every_row(tmp_path, monkeypatch):
    plan = (results.Entry("a", "Model A", {"model": "compact"}), results.Entry("b", "Model B", {"model": "cnn_gru"}))
    monkeypatch.setattr(results, "PLAN", plan)
    monkeypatch.setattr(results, "CLAIMS", (("A above B", "a", "b", "4class"),))
    labels = np.arange(40) % 4
    _write_fold(tmp_path / "a", 0, labels, labels)
    document = tmp_path / "results.md"
    document.write_text(f"{STANDARD.markers[0]}\n{STANDARD.markers[1]}\n{HARD.markers[0]}\nkept\n{HARD.markers[1]}\n")
    table = results.write_table(document, tmp_path)
    assert "| Model A | 1/3 |" in table and "| Model B | 0/3 |" in table and "- A above B: not measured yet" in table
    assert document.read_text().endswith(f"{HARD.markers[0]}\nkept\n{HARD.markers[1]}\n")


def test_a_hard_table_needs_a_started_row_and_its_markers(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty").mkdir()
    document = tmp_path / "results.md"
    document.write_text(f"{STANDARD.markers[0]}\n{STANDARD.markers[1]}\n")
    assert results.main(["--benchmark", "hard", "--root", str(tmp_path / "empty"), "table", "--document",
                         str(document)]) == 2
    assert "no row of the hard benchmark has started" in capsys.readouterr().err
    labels = np.arange(40) % 4
    _write_fold(tmp_path / "hard" / "scene-boosting", 0, labels, labels)
    with pytest.raises(UsageError, match=r"needs the markers <!-- results-table-hard:begin -->"):
        results.write_table(document, tmp_path / "hard", HARD)
    monkeypatch.chdir(tmp_path)                                     # the benchmark's own root by default
    assert results.main(["--benchmark", "hard", "table"]) == 2
    assert "error: results/hard: no such folder of results records" in capsys.readouterr().err
    assert results.main(["--benchmark", "difference", "table"]) == 2
    assert "error: results/difference: no such folder of results records" in capsys.readouterr().err
