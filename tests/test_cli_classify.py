"""``convention-rt classify``, ``info`` and ``models``, in-process."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.cli import main
from helpers import (
    BAD_FILES,
    dead_pid,
    frame_columns,
    object_columns,
    problem_catalog,
    run,
    tiny_card,
    write_raw_catalog,
    write_small_catalog,
    write_tiny_onnx,
)


def test_classify_writes_one_row_per_object_beside_the_catalog(capsys, tmp_path, tiny_model):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu",
                         "--threads", "1", "--chunk-size", "4")
    assert code == 0, err
    output = tmp_path / "survey.predictions.fits"
    with fits.open(output) as hdul:
        table = hdul["PREDICTIONS"].data
        assert table["object_id"].tolist() == list(range(100, 106))
        np.testing.assert_allclose(table["p_AGN"] + table["p_SNIa"], 1.0, rtol=1e-6)
        assert set(table.columns.names) >= {"predicted_class", "spread", "n_frames", "bands_used", "status",
                                            "model", "model_version"}
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


def test_classify_opens_the_model_once(capsys, monkeypatch, tmp_path, tiny_model):
    import onnxruntime as ort

    from convention_rt import session

    built = []

    class CountingSession(ort.InferenceSession):
        def __init__(self, *args, **kwargs):
            built.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(session.ort, "InferenceSession", CountingSession)
    catalog = write_small_catalog(tmp_path / "survey.fits")
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu")
    assert code == 0, err
    assert len(built) == 1  # the session that runs the model also checks its card


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


@pytest.mark.parametrize("threads", ["3", "64", "100000"])
def test_more_threads_than_cpus_is_one_line_exit_2_before_any_work(capsys, monkeypatch, tmp_path, tiny_model,
                                                                   threads):
    from convention_rt import session

    monkeypatch.setattr(session.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    catalog = write_small_catalog(tmp_path / "survey.fits")
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu",
                         "--threads", threads, "-o", tmp_path / "p.csv")
    assert code == 2 and not out
    assert err.strip().splitlines() == [f"error: --threads must be from 1 to 2 (the CPUs available to this "
                                        f"process), got {threads}; leave it out to use all of them"]
    assert not (tmp_path / "p.csv").exists()


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


# -- outputs: concurrent runs, leftovers, system errors, text ------------------------------------
def rows_in(path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_metadata(path).num_rows
    if path.suffix == ".csv":
        return len(path.read_text().splitlines()) - 1
    with fits.open(path) as hdul:
        return len(hdul["PREDICTIONS"].data)


def outputs_of(folder):
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".fits", ".csv", ".parquet", ".part")
                  or p.name.endswith(".part"))


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet"])
def test_of_two_runs_to_one_output_the_second_to_finish_fails_and_the_first_result_stays(
        capsys, monkeypatch, tmp_path, tiny_model, suffix):
    from convention_rt.predictions import PredictionWriter

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    first = write_small_catalog(tmp_path / "first.fits", n_objects=3)
    second = write_small_catalog(tmp_path / "second.fits", n_objects=5, seed=1)
    out = tmp_path / f"out{suffix}"
    close = PredictionWriter.close

    def another_run_finishes_first(self):
        monkeypatch.setattr(PredictionWriter, "close", close)
        assert main(["classify", str(first), "--model", str(tiny_model[0]), "--device", "cpu", "-o", str(out)]) == 0
        return close(self)

    monkeypatch.setattr(PredictionWriter, "close", another_run_finishes_first)
    code, _, err = run(capsys, "classify", second, "--model", tiny_model[0], "--device", "cpu", "-o", out)
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: {out}: exists already: another run wrote it while this one ran, and this run's result was "
        "discarded (add --overwrite to replace it)"]
    assert rows_in(out) == 3  # the first run's
    assert outputs_of(tmp_path) == ["first.fits", f"out{suffix}", "second.fits"]


def test_with_overwrite_the_run_that_finishes_second_replaces_the_first(capsys, monkeypatch, tmp_path, tiny_model):
    from convention_rt.predictions import PredictionWriter

    first = write_small_catalog(tmp_path / "first.fits", n_objects=3)
    second = write_small_catalog(tmp_path / "second.fits", n_objects=5, seed=1)
    out = tmp_path / "out.csv"
    close = PredictionWriter.close

    def another_run_finishes_first(self):
        monkeypatch.setattr(PredictionWriter, "close", close)
        assert main(["classify", str(first), "--model", str(tiny_model[0]), "--device", "cpu", "-o", str(out)]) == 0
        return close(self)

    monkeypatch.setattr(PredictionWriter, "close", another_run_finishes_first)
    code, _, err = run(capsys, "classify", second, "--model", tiny_model[0], "--device", "cpu", "-o", out,
                       "--overwrite")
    assert code == 0, err
    assert rows_in(out) == 5


def test_leftovers_of_killed_runs_are_removed_and_running_ones_named(capsys, tmp_path, tiny_model, sleeping_child):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    out = tmp_path / "survey.predictions.fits"
    stale = tmp_path / f".{out.name}.{dead_pid()}.deadbeef.part"
    live = tmp_path / f".{out.name}.{sleeping_child}.cafe0123.part"
    stale.write_bytes(b"SIMPLE  =   T")
    live.write_bytes(b"SIMPLE  =   T")
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu")
    assert code == 0, err
    assert err.strip().splitlines() == [
        f"info: {out}: removed 1 temporary file(s) left by runs that no longer run: {stale.name}",
        f"info: {out}: another run is writing it too ({live.name}); without --overwrite the run that finishes "
        "second fails"]
    assert not stale.exists() and live.exists() and out.is_file()


def test_an_unwritable_output_folder_is_exit_3_naming_the_output(capsys, tmp_path, tiny_model, read_only_folder):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    out = read_only_folder / "p.csv"
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o", out)
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1 and lines[0].startswith(f"error: {out}: cannot write: ")
    assert ".part" not in err and list(read_only_folder.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".fits", ".parquet"])
def test_a_full_disk_is_exit_3_naming_the_output_and_nothing_is_left(capsys, request, tmp_path, tiny_model, suffix):
    import errno
    import os

    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    catalog = write_small_catalog(tmp_path / "survey.fits", n_objects=60)
    request.getfixturevalue("full_disk")  # from here on
    out = tmp_path / f"p{suffix}"
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o", out,
                       "--chunk-size", "4")
    assert code == 3
    assert err.strip().splitlines() == [
        f"error: {out}: cannot write: {os.strerror(errno.ENOSPC)} (free some space or write elsewhere)"]
    assert outputs_of(tmp_path) == ["survey.fits"]


def test_a_file_size_limit_is_exit_3_naming_the_output(tmp_path, tiny_model):
    """A real write failure of the system: the process may write files of at most 16 kB (EFBIG)."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    catalog = write_small_catalog(tmp_path / "survey.fits", n_objects=120, epochs=2)
    out = tmp_path / "p.fits"

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write instead of a killed process
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    result = subprocess.run(
        [sys.executable, "-m", "convention_rt", "classify", str(catalog), "--model", str(tiny_model[0]),
         "--device", "cpu", "--threads", "1", "-o", str(out)],
        capture_output=True, text=True, check=False, preexec_fn=limit_file_size, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {out}: cannot write: {os.strerror(27)} "
                                                  "(write to a filesystem that allows larger files, or split the "
                                                  "input)"]
    assert outputs_of(tmp_path) == ["survey.fits"]


def test_an_unreadable_model_is_exit_3_naming_the_model(capsys, monkeypatch, tmp_path, tiny_model):
    import builtins
    import errno
    import os

    catalog = write_small_catalog(tmp_path / "survey.fits")
    model = str(tiny_model[0])
    real_open = builtins.open

    def open_unreadable(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if os.fspath(file) == model:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), model)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_unreadable)
    code, _, err = run(capsys, "classify", catalog, "--model", model, "--device", "cpu", "-o", tmp_path / "p.csv")
    assert code == 3
    lines = err.strip().splitlines()
    assert lines == [f"error: {model}: cannot read: {os.strerror(errno.EACCES)}"]
    assert not (tmp_path / "p.csv").exists()


def test_out_of_memory_is_one_line_exit_3_and_nothing_is_left(capsys, monkeypatch, tmp_path, tiny_model):
    from convention_rt.classifier import Classifier

    catalog = write_small_catalog(tmp_path / "survey.fits", n_objects=12)
    predict = Classifier.predict_opened

    def runs_out_of_memory(self, *args, **kwargs):
        for k, predictions in enumerate(predict(self, *args, **kwargs)):
            if k == 1:
                raise MemoryError
            yield predictions

    monkeypatch.setattr(Classifier, "predict_opened", runs_out_of_memory)
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "--chunk-size", "4")
    assert code == 3
    assert err.strip().splitlines() == [
        "error: out of memory; unfinished outputs are removed (try a smaller --chunk-size or --batch-size)"]
    assert "Traceback" not in err and outputs_of(tmp_path) == ["survey.fits"]


def test_a_non_ascii_catalog_path_is_percent_encoded_in_the_fits_header(capsys, tmp_path, tiny_model):
    from urllib.parse import unquote

    folder = tmp_path / "relevés"
    folder.mkdir()
    catalog = write_small_catalog(folder / "été 2024.fits")
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu")
    assert code == 0, err
    with fits.open(folder / "été 2024.predictions.fits") as hdul:
        hdul.verify("exception")
        value = hdul[0].header["CATALOG"]
    assert value == "%C3%A9t%C3%A9 2024.fits" and unquote(value) == catalog.name


def test_an_output_that_is_a_folder_is_a_usage_error(capsys, tmp_path, tiny_model):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    (tmp_path / "p.csv").mkdir()
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "-o", tmp_path / "p.csv", "--overwrite")
    assert code == 2 and err.strip() == f"error: {tmp_path / 'p.csv'}: is a folder; choose a file name"
    assert (tmp_path / "p.csv").is_dir()


def test_an_output_name_too_long_for_a_file_is_one_line_exit_2(capsys, tmp_path, tiny_model):
    catalog = write_small_catalog(tmp_path / "survey.fits")
    long_name = tmp_path / ("p" * 252 + ".csv")
    code, out, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o", long_name)
    assert code == 2 and not out
    assert err.strip().splitlines() == [f"error: {long_name}: the file name is 256 bytes long, more than the 255 a "
                                        f"file name may have; choose a shorter name"]
    fits_name = "p" * 246 + ".csv"  # 250 bytes: legal, and its temporary name must fit too
    code, _, err = run(capsys, "classify", catalog, "--model", tiny_model[0], "--device", "cpu", "-o",
                       tmp_path / fits_name)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["survey.fits", "card.json", "model.onnx",
                                                                 fits_name])


@pytest.mark.parametrize("command", ["classify", "validate"])
def test_an_unreadable_catalog_is_exit_1_naming_the_file(capsys, monkeypatch, tmp_path, tiny_model, command):
    import errno
    import os

    from convention_rt import catalog as catalog_module

    catalog = write_small_catalog(tmp_path / "survey.fits")
    real_open = os.open

    def open_unreadable(path, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if os.fspath(path) == str(catalog):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(catalog))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(catalog_module.os, "open", open_unreadable)
    extra = ["--model", tiny_model[0], "--device", "cpu", "-o", tmp_path / "p.csv"] if command == "classify" else []
    code, out, err = run(capsys, command, catalog, *extra)
    assert code == 1 and not out
    assert err.strip().splitlines() == [f"error: {catalog}: cannot be read: {os.strerror(errno.EACCES)}"]
    assert not (tmp_path / "p.csv").exists()
