"""The command line, run in-process: exit codes and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import frame_columns, object_columns, write_raw_catalog
from convention_rt import __version__
from convention_rt.cli import main

from convention_rt.data import sample_catalog_path


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
