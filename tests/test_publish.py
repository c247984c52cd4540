"""Publishing outputs (``convention_rt.publish``): no silent replacement, stale temporaries, system errors."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from convention_rt import publish as crt_publish
from convention_rt.errors import OutputError, OutputExistsError, UsageError
from convention_rt.publish import StagedOutput, clean_stale, output_error, process_running, publish, temporary_path
from helpers import dead_pid


def parts(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def no_hard_links(monkeypatch):
    """A filesystem without hard links (FAT, some network filesystems): link(2) fails with EPERM."""
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(crt_publish.os, "link", refuse)


def staged(path: Path, content: bytes, *, overwrite: bool = False) -> StagedOutput:
    output = StagedOutput(path, overwrite=overwrite)
    output.file.write(content)
    return output


def test_temporary_name_is_hidden_beside_the_output_with_the_process_id(tmp_path):
    name = temporary_path(tmp_path / "out.fits").name
    assert name.startswith(f".out.fits.{os.getpid()}.") and name.endswith(".part")
    assert temporary_path(tmp_path / "out.fits") != temporary_path(tmp_path / "out.fits")


@pytest.mark.parametrize("links", ["hard links", "no hard links"])
def test_of_two_runs_the_second_to_finish_fails_and_the_first_result_stays(tmp_path, request, links):
    if links == "no hard links":
        request.getfixturevalue("no_hard_links")
    out = tmp_path / "out.csv"
    first, second = staged(out, b"first run\n"), staged(out, b"second run\n")  # both started before either ended
    assert first.publish() == out
    with pytest.raises(OutputExistsError) as caught:
        second.publish()
    message = str(caught.value)
    assert message.startswith(f"{out}: exists already") and "--overwrite" in message and "\n" not in message
    assert caught.value.exit_code == 1
    assert out.read_bytes() == b"first run\n"
    assert parts(tmp_path) == []


@pytest.mark.parametrize("links", ["hard links", "no hard links"])
def test_publish_puts_the_whole_file_in_place(tmp_path, request, links):
    if links == "no hard links":
        request.getfixturevalue("no_hard_links")
    out = tmp_path / "out.fits"
    output = staged(out, b"x" * 10_000)
    output.publish()
    assert out.read_bytes() == b"x" * 10_000 and parts(tmp_path) == []


def test_overwrite_replaces_at_publish_time(tmp_path):
    out = tmp_path / "out.csv"
    first, second = staged(out, b"first\n", overwrite=True), staged(out, b"second\n", overwrite=True)
    first.publish()
    second.publish()
    assert out.read_bytes() == b"second\n" and parts(tmp_path) == []


def test_a_file_never_replaces_a_folder(tmp_path):
    out = tmp_path / "out.fits"
    output = staged(out, b"x", overwrite=True)
    out.mkdir()
    (out / "keep").write_text("kept")
    with pytest.raises(UsageError, match="is a folder"):
        output.publish()
    assert (out / "keep").read_text() == "kept" and parts(tmp_path) == []
    with pytest.raises(UsageError, match="is a folder"):
        StagedOutput(out, overwrite=True)


def make_dataset(output: StagedOutput, text: str) -> None:
    output.temporary.mkdir()
    (output.temporary / "part-0.parquet").write_text(text)


@pytest.mark.parametrize("links", ["hard links", "no hard links"])
def test_folders_claim_their_name_and_overwrite_moves_the_old_one_aside(tmp_path, request, links):
    if links == "no hard links":
        request.getfixturevalue("no_hard_links")
    out = tmp_path / "out.parquet"
    first, second = StagedOutput(out, folder=True), StagedOutput(out, folder=True)
    assert first.file is None
    make_dataset(first, "first")
    make_dataset(second, "second")
    first.publish()
    with pytest.raises(OutputExistsError):
        second.publish()
    assert (out / "part-0.parquet").read_text() == "first"
    third = StagedOutput(out, folder=True, overwrite=True)
    make_dataset(third, "third")
    third.publish()
    assert sorted(os.listdir(out)) == ["part-0.parquet"] and (out / "part-0.parquet").read_text() == "third"
    assert parts(tmp_path) == []


def test_an_empty_folder_counts_as_an_output_without_overwrite(tmp_path):
    out = tmp_path / "out.parquet"
    output = StagedOutput(out, folder=True)
    make_dataset(output, "new")
    out.mkdir()
    with pytest.raises(OutputExistsError):
        output.publish()
    assert list(out.iterdir()) == [] and parts(tmp_path) == []


def test_process_running():
    assert process_running(os.getpid())
    assert not process_running(dead_pid())
    assert not process_running(0) and not process_running(-1)
    assert not process_running(2**80)


def test_stale_temporaries_are_removed_and_live_ones_named(tmp_path, sleeping_child, caplog):
    out = tmp_path / "out.fits"
    stale = tmp_path / f".out.fits.{dead_pid()}.deadbeef.part"
    stale_folder = tmp_path / f".out.fits.{dead_pid()}.0badcafe.part"
    live = tmp_path / f".out.fits.{sleeping_child}.cafe0123.part"
    mine = tmp_path / f".out.fits.{os.getpid()}.01234567.part"
    other_output = tmp_path / f".other.fits.{dead_pid()}.deadbeef.part"
    not_ours = tmp_path / ".out.fits.notes.part"
    for path in (stale, live, mine, other_output, not_ours):
        path.write_bytes(b"partial")
    stale_folder.mkdir()
    (stale_folder / "part-0.parquet").write_bytes(b"partial")
    with caplog.at_level(logging.INFO, logger="convention_rt"):
        running = clean_stale(out)
    assert running == [live]
    assert sorted(parts(tmp_path)) == sorted(p.name for p in (live, mine, other_output, not_ours))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0] == (f"{out}: removed 2 temporary file(s) left by runs that no longer run: "
                        f"{', '.join(sorted([stale.name, stale_folder.name]))}")
    assert lines[1].startswith(f"{out}: another run is writing it too ({live.name})")


def test_a_new_output_cleans_the_stale_temporaries_first(tmp_path):
    out = tmp_path / "out.csv"
    stale = tmp_path / f".out.csv.{dead_pid()}.deadbeef.part"
    stale.write_bytes(b"partial")
    output = staged(out, b"done\n")
    assert not stale.exists()
    output.publish()
    assert parts(tmp_path) == []


def test_system_errors_name_the_output_and_the_reason(tmp_path):
    out = tmp_path / "out.fits"
    error = output_error(out, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".out.fits.1.a.part")))
    assert isinstance(error, OutputError) and isinstance(error, OSError) and error.exit_code == 3
    assert str(error) == f"{out}: cannot write: {os.strerror(errno.ENOSPC)} (free some space or write elsewhere)"
    assert error.errno == errno.ENOSPC


def test_an_unwritable_folder_is_an_output_error_naming_the_output(read_only_folder):
    out = read_only_folder / "out.fits"
    with pytest.raises(OutputError) as caught:
        StagedOutput(out)
    message = str(caught.value)
    assert message.startswith(f"{out}: cannot write: ") and ".part" not in message
    assert caught.value.exit_code == 3 and list(read_only_folder.iterdir()) == []


def test_a_failed_write_discards_the_temporary_file(tmp_path):
    out = tmp_path / "out.csv"
    output = StagedOutput(out)
    with pytest.raises(OutputError, match=f"^{out}: cannot write: {os.strerror(errno.ENOSPC)}"):
        with output.writing():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert not out.exists() and parts(tmp_path) == []
    with pytest.raises(UsageError, match="published or discarded already"):
        output.publish()


def test_publish_refuses_without_overwrite_at_the_last_moment(tmp_path):
    out = tmp_path / "out.csv"
    temporary = temporary_path(out)
    temporary.write_bytes(b"new")
    out.write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        publish(temporary, out, overwrite=False)
    assert out.read_bytes() == b"old" and temporary.read_bytes() == b"new"


@pytest.mark.parametrize("length", [229, 230, 236, 255])
@pytest.mark.parametrize("letter", ["p", "é"])  # 1 and 2 bytes per character
def test_outputs_of_the_longest_names_are_written_and_their_stale_files_found(tmp_path, length, letter):
    suffix = ".csv"
    name = letter * ((length - len(suffix)) // len(letter.encode())) + suffix
    out = tmp_path / name
    temporary = temporary_path(out)
    assert len(os.fsencode(temporary.name)) <= crt_publish.NAME_MAX
    stale = temporary.with_name(temporary.name.replace(f".{os.getpid()}.", f".{dead_pid()}.", 1))
    stale.write_bytes(b"partial")  # a run that died: the next one removes it
    output = staged(out, b"done\n")
    assert not stale.exists()
    assert output.publish() == out and out.read_bytes() == b"done\n" and parts(tmp_path) == []


def test_a_name_too_long_for_a_file_is_a_usage_error_before_anything_is_written(tmp_path):
    from convention_rt.publish import output_path

    name = "p" * 252 + ".csv"
    with pytest.raises(UsageError, match=r"the file name is 256 bytes long, more than the 255 a file name may "
                                         r"have; choose a shorter name$"):
        output_path(tmp_path / name)
    with pytest.raises(UsageError, match="256 bytes long"):
        StagedOutput(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
