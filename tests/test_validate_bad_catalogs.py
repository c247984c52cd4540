"""``convention-rt validate`` on catalogs the reader refuses: one line naming file and field, exit code 1."""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.catalog import CatalogWarning
from convention_rt.cli import main
from helpers import (
    frame_columns,
    object_columns,
    orphan_catalog,
    rename_column,
    write_raw_catalog,
    write_small_catalog,
)


def stored_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "bad.fits.gz"
    path.write_bytes(gzip.compress(write_small_catalog(tmp_path / "plain.fits").read_bytes(), compresslevel=0))
    return path


def named_pipe(tmp_path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this system")
    path = tmp_path / "bad.fits"
    os.mkfifo(path)
    return path


def two_mjds(tmp_path: Path) -> Path:
    epochs = frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.float32))
    epochs[1] = fits.Column("MJD", "2D", array=np.zeros((1, 2)))
    return write_raw_catalog(tmp_path / "bad.fits", object_columns([1], [0], [1]), epochs)


def two_ras(tmp_path: Path) -> Path:
    objects = object_columns([1], [0], [1]) + [fits.Column("RAX", "D", array=np.zeros(1))]
    path = write_raw_catalog(tmp_path / "bad.fits", objects,
                             frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.float32)))
    return rename_column(path, "RAX", "RA")


def orphans(tmp_path: Path) -> Path:
    return orphan_catalog(tmp_path)


CASES = [
    (stored_gzip, [], "is a gzip-compressed file: decompress it first"),
    (named_pipe, [], "is a named pipe (FIFO), not a regular file"),
    (two_mjds, [], "EPOCHS.MJD: must hold one value per row, got 2 (TFORM 2D)"),
    (two_ras, [], "OBJECTS.RA: column name appears twice"),
    (orphans, ["--on-invalid", "raise"], "EPOCHS: 3 row(s) belong to no object"),
]


@pytest.mark.parametrize(("build", "options", "message"), CASES, ids=[c[0].__name__ for c in CASES])
def test_validate_refuses_in_one_line_with_exit_code_1(capsys, tmp_path, build, options, message):
    path = build(tmp_path)
    code = main(["validate", str(path), *options])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: ") and message in lines[0]
    assert "Traceback" not in err


def test_validate_shows_rows_of_no_object_as_a_warning_line(capsys, tmp_path):
    path = orphan_catalog(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("always", CatalogWarning)  # as outside pytest (filterwarnings=error)
        main(["validate", str(path)])
    err = capsys.readouterr().err
    assert f"warning: {path}: EPOCHS: 3 row(s) belong to no object (rows 2..3, OBJECT_ID 9" in err


def test_validate_exits_1_and_lists_rows_of_no_object_as_a_problem(capsys, tmp_path):
    path = orphan_catalog(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CatalogWarning)
        code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "problems: none" not in captured.out
    assert "EPOCHS: 3 row(s) belong to no object" in captured.out
    assert "problem(s) of the catalog as a whole" in captured.err
