"""The command line, run in-process: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from convention_rt import __version__
from convention_rt.cli import main
from convention_rt.data import sample_catalog_path
from convention_rt.registry import resolve_model
from helpers import frame_columns, object_columns, write_raw_catalog


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out


def test_validate_prints_a_summary_and_succeeds(capsys, small_catalog):
    code, out, err = run(capsys, "validate", str(small_catalog))
    assert code == 0, err
    assert str(small_catalog) in out and "objects" in out
    assert "fixed   epochs_sorted_by_time: 6 object(s)" in out
    assert "g: 12" in out and "AGN: 2" in out


def test_validate_flags_problems_with_exit_code_1(capsys, tmp_path):
    import numpy as np

    path = write_raw_catalog(tmp_path / "p.fits", object_columns([1, 2], [0, 1], [1, 0]),
                             frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.float32)))
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1
    assert "no_epochs: 1 object(s), e.g. 2" in out
    assert err.strip() == f"{path}: 1 object(s) cannot be classified (see problems)"
    code, _, err = run(capsys, "validate", str(path), "--on-invalid", "raise")
    assert code == 1 and err.strip() == f"error: {path}: OBJECTS: object 2: no epochs"


def test_bad_file_is_one_line_exit_1_without_traceback(capsys, tmp_path):
    path = tmp_path / "junk.fits"
    path.write_bytes(b"\x00" * 5000)
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:")
    assert "Traceback" not in err


def test_stamp_policy_option(capsys, tmp_path):
    import numpy as np

    path = write_raw_catalog(tmp_path / "big.fits", object_columns([1], [0], [1]),
                             frame_columns([1], [0.0], ["g"], np.zeros((1, 40, 40), np.float32)))
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1 and "EPOCHS.STAMP: stamps are 40x40" in err and "--stamp-policy crop" in err
    code, out, _ = run(capsys, "validate", str(path), "--stamp-policy", "crop")
    assert code == 0 and "problems: none" in out


def test_usage_errors_exit_2(capsys):
    code, _, err = run(capsys, "validate")
    assert code == 2 and "Missing argument" in err
    code, _, _ = run(capsys, "validate", "x.fits", "--on-invalid", "explode")
    assert code == 2


def test_debug_shows_the_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "--debug", "validate", str(tmp_path / "none.fits"))
    assert code == 1 and "Traceback" in err


def test_sample_command_copies_the_shipped_catalog_which_validates(capsys, tmp_path):
    target = tmp_path / "sample.fits"
    code, _, err = run(capsys, "sample", str(target))
    assert code == 0, err
    assert target.read_bytes() == sample_catalog_path().read_bytes()
    code, out, err = run(capsys, "validate", str(target))
    assert code == 0, err
    assert "problems: none" in out
    code, _, err = run(capsys, "sample", str(target))
    assert code == 2 and "exists already" in err


def test_console_script_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "convention_rt", "--version"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("command", [[], ["validate"], ["classify"], ["info"], ["models"], ["sample"],
                                     ["ingest"], ["ingest", "ztf"], ["ingest", "rubin"], ["spark-classify"]])
def test_every_help_page_renders(capsys, command):
    code, out, err = run(capsys, *command, "--help")
    assert code == 0, err
    assert "Usage" in out


def test_sample_refuses_a_folder_and_a_missing_folder_in_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "sample", str(tmp_path))
    assert code == 2 and err.strip() == f"error: {tmp_path}: is a folder; give a file name such as " \
                                        f"{tmp_path / 'sample.fits'}"
    target = tmp_path / "missing" / "sample.fits"
    code, _, err = run(capsys, "sample", str(target))
    assert code == 2 and err.strip() == f"error: {target}: folder {target.parent} does not exist"
    assert list(tmp_path.iterdir()) == []


def test_sample_does_not_replace_a_copy_written_meanwhile(capsys, monkeypatch, tmp_path):
    from convention_rt import publish

    target = tmp_path / "sample.fits"
    publish_now = publish.publish

    def another_run_finishes_first(temporary, path, *, overwrite):
        path.write_bytes(b"the other run's copy")
        return publish_now(temporary, path, overwrite=overwrite)

    monkeypatch.setattr(publish, "publish", another_run_finishes_first)
    code, _, err = run(capsys, "sample", str(target))
    assert code == 1 and err.strip() == (f"error: {target}: exists already: another run wrote it while this one ran, "
                                         "and this run's result was discarded (add --overwrite to replace it)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.fits"]
    assert target.read_bytes() == b"the other run's copy"
    code, _, err = run(capsys, "sample", str(target), "--overwrite")
    assert code == 0, err
    assert target.read_bytes() == sample_catalog_path().read_bytes()


@pytest.mark.parametrize("name", ["same path", "symbolic link", "hard link"])
def test_ingest_refuses_to_write_over_its_input(capsys, tmp_path, name):
    import os
    import shutil
    from pathlib import Path

    pytest.importorskip("fastavro")
    alerts = tmp_path / "alerts.avro"
    shutil.copyfile(Path(__file__).parent / "data" / "ztf" / "2019_01_10_739260766315010006.avro", alerts)
    before = alerts.read_bytes()
    out = {"same path": alerts, "symbolic link": tmp_path / "link.fits", "hard link": tmp_path / "hard.fits"}[name]
    if name == "symbolic link":
        out.symlink_to(alerts)
    elif name == "hard link":
        os.link(alerts, out)
    code, _, err = run(capsys, "ingest", "ztf", str(alerts), "-o", str(out), "--overwrite")
    assert code == 2 and err.strip() == f"error: {out}: is the input file {alerts}; choose another --out"
    assert alerts.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_an_unexpected_system_error_is_exit_3_in_one_line(capsys, monkeypatch, small_catalog):
    import errno
    import os

    from convention_rt import validate

    def fails(*args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(small_catalog))

    monkeypatch.setattr(validate, "summarise", fails)
    code, _, err = run(capsys, "validate", str(small_catalog))
    assert code == 3 and err.strip() == f"error: {small_catalog}: {os.strerror(errno.EMFILE)}"


def test_main_takes_paths_and_numbers_and_refuses_other_words_in_one_line(capsys, small_catalog):
    code, out, err = run(capsys, "validate", small_catalog, "--stamp-size", 32)
    assert code == 0, err
    code, _, err = run(capsys, "validate", None)
    assert code == 2 and err.strip() == "error: main() takes str, paths and numbers as words, got None"
    code = main("validate x.fits")
    assert code == 2 and capsys.readouterr().err.strip() == (
        "error: main() takes a list of words such as ['classify', 'catalog.fits'], got 'validate x.fits'")


def test_info_shows_the_early_curve_and_the_calibration_of_the_default_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per row
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    card = resolve_model(None).card()
    early = card.metrics["early"]
    assert f"1: {early['macro_f1']['mean'][0]:.2f}" in out and f"({early['folds']} folds)" in out
    calibration = card.metrics["calibration"]
    assert f"temperature {calibration['temperature']:.3f}" in out
    if calibration["chosen"] == "none":  # no temperature helped: the ECE as it is
        assert f"(none helped): held-out ECE {calibration['ece']['mean']:.3f}" in out
    else:
        assert f"held-out ECE {calibration['ece']['mean']:.3f} ->" in out


def test_version_is_answered_without_loading_the_runtime():
    import subprocess
    import sys

    script = ("import sys\nfrom convention_rt.launcher import main\ncode = main(['--version'])\n"
              "print(code, [m for m in ('astropy', 'onnxruntime', 'numpy', 'typer') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"convention-rt {__version__}", "0 []"]


@pytest.mark.parametrize("args", [["--debug", "--version"], ["--version", "--debug"]])
def test_version_with_global_options_only_is_answered_without_loading_the_runtime(args):
    import subprocess
    import sys

    script = (f"import sys\nfrom convention_rt.launcher import main\ncode = main({args!r})\n"
              "print(code, [m for m in ('astropy', 'onnxruntime', 'numpy', 'typer') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"convention-rt {__version__}", "0 []"]


def test_the_entry_point_runs_the_command_line_and_exits_with_its_code(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "convention_rt", "validate", str(tmp_path / "missing.fits")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("error: ") and "missing.fits" in done.stderr
    from convention_rt.launcher import main as launch

    assert launch(["models"]) == 0
