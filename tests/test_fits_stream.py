"""The streamed FITS table (``convention_rt.fits_stream``): ASCII headers from any text, clean usage errors."""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.errors import UsageError
from convention_rt.fits_stream import StreamingTable, header_text

COLUMNS = [fits.Column("A", "J"), fits.Column("B", "8A")]


@pytest.mark.parametrize("text", ["été.fits", "tab\there", "100%-of-ü", "星"])
def test_header_text_is_printable_ascii_and_gives_the_text_back(text):
    value = header_text(text)
    assert value.isascii() and value.isprintable() and unquote(value) == text


def test_header_text_leaves_ascii_and_other_values_alone():
    assert header_text("plain 100%.fits") == "plain 100%.fits"
    assert header_text(3) == 3 and header_text(("été", "comment é")) == ("%C3%A9t%C3%A9", "comment %C3%A9")


def test_non_ascii_keyword_values_and_comments_are_written(tmp_path):
    path = tmp_path / "t.fits"
    with StreamingTable(path, COLUMNS, name="T", primary_header={"SOURCE": ("relevé", "où")},
                        table_header={"NOTE": "naïve"}) as table:
        rows = table.empty_rows(2)
        rows["A"] = [1, 2]
        table.append(rows)
    with fits.open(path) as hdul:
        hdul.verify("exception")
        assert unquote(hdul[0].header["SOURCE"]) == "relevé" and unquote(hdul[0].header.comments["SOURCE"]) == "où"
        assert unquote(hdul["T"].header["NOTE"]) == "naïve" and hdul["T"].data["A"].tolist() == [1, 2]


def test_bad_calls_are_usage_errors_and_leave_nothing(tmp_path):
    with pytest.raises(UsageError, match="an output must be named by a non-empty str or Path, got None"):
        StreamingTable(None, COLUMNS, name="T")
    table = StreamingTable(tmp_path / "t.fits", COLUMNS, name="T")
    with pytest.raises(UsageError, match="rows must be a block made by empty_rows"):
        table.append(np.zeros(2, dtype=[("A", ">i4")]))
    with pytest.raises(UsageError, match="rows must be a block made by empty_rows"):
        table.append([1, 2])
    table.abort()
    with pytest.raises(UsageError, match="this writer is closed"):
        table.append(table.empty_rows(1))
    assert list(tmp_path.iterdir()) == []
