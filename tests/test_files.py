"""train.files: training's files are published whole, through the runtime's publish helper."""

from __future__ import annotations

import pytest

from convention_rt.errors import UsageError
from train.files import copy_atomically, write_atomically


def test_a_file_is_replaced_whole_and_no_temporary_is_left(tmp_path) -> None:
    target = tmp_path / "fold0.json"
    target.write_text("old")
    write_atomically(target, lambda path: path.write_text("new"))
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold0.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old")

    def half_then_fail(path):
        path.write_text("ha")
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        write_atomically(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_copy_is_published_whole(tmp_path) -> None:
    source = tmp_path / "folds.json"
    source.write_text('{"seed": 0}')
    copy_atomically(source, tmp_path / "copy.json")
    assert (tmp_path / "copy.json").read_text() == '{"seed": 0}'


def test_a_folder_in_the_way_is_an_error_of_the_project(tmp_path) -> None:
    (tmp_path / "record.json").mkdir()
    with pytest.raises(UsageError, match=r"record\.json: is a folder"):
        write_atomically(tmp_path / "record.json", lambda path: path.write_text("x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
