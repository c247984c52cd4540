"""The prediction writers (``convention_rt.predictions``): exact text, clean usage errors, system errors."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from convention_rt.errors import BadInputError, OutputError, UsageError
from convention_rt.predictions import PredictionWriter
from convention_rt.schema import prediction_columns
from convention_rt.status import Note, ObjectStatus

IDS = ["é1", "ü1", "星-7", "plain"]  # the first two differ only outside ASCII


@pytest.fixture
def results(classifier):
    rng = np.random.default_rng(1)
    objects = [(rng.normal(50, 5, (3, 32, 32)), ["g", "r", "g"], [1.0, 2.0, 3.0]) for _ in IDS]
    return classifier.predict_batch(objects, object_ids=np.array(IDS))


@pytest.fixture
def folder(tmp_path):
    """An empty folder for the outputs (the model lives in tmp_path)."""
    path = tmp_path / "outputs"
    path.mkdir()
    return path


def read_ids(path: Path) -> list[str]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            return [row["object_id"] for row in csv.DictReader(handle)]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).column("object_id").to_pylist()
    table = Table.read(path, hdu="PREDICTIONS")  # decodes the UTF-8 bytes of FITS string columns
    return [str(v) for v in table["object_id"]]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_non_ascii_object_ids_stay_exact_and_distinct(folder, results, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = folder / f"out{suffix}"
    width = max(len(i.encode()) for i in IDS)
    with PredictionWriter(path, results.classes, id_width=width) as writer:
        writer.write(results)
    assert read_ids(path) == IDS


def test_fits_text_columns_hold_utf8_and_long_text_is_cut_visibly(folder, results):
    results.statuses[0] = ObjectStatus()
    results.statuses[0].note(Note.bands_unknown_to_model, 1, "é" * 150)  # over 300 bytes, longer than the column
    text = "ok;bands_unknown_to_model=1(" + "é" * 150 + ")"
    assert results.status[0] == text
    path = folder / "out.fits"
    with PredictionWriter(path, results.classes, id_width=8) as writer:
        writer.write(results)
    with fits.open(path) as hdul:
        status = hdul["PREDICTIONS"].data["status"][0]
    assert status.endswith(b"+") and len(status) <= 200
    assert status[:-1].decode("utf-8") == text[: len(status[:-1].decode("utf-8"))]


def test_an_id_longer_than_the_fits_column_is_refused_naming_the_object(folder, results):
    path = folder / "out.fits"
    with pytest.raises(BadInputError, match=f"^{path}: object 星-7: id of 5 UTF-8 bytes; the OBJECT_ID column "
                                            "holds 4$"):
        with PredictionWriter(path, results.classes, id_width=4) as writer:
            writer.write(results)
    assert list(folder.iterdir()) == []


def test_non_ascii_provenance_is_percent_encoded_in_fits_and_exact_in_parquet(folder, results):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    from urllib.parse import unquote

    header = {"CATALOG": "relevé été.fits", "MODEL": "tiny"}
    for suffix in (".fits", ".parquet"):
        with PredictionWriter(folder / f"out{suffix}", results.classes, id_width=8, header=header) as writer:
            writer.write(results)
    with fits.open(folder / "out.fits") as hdul:
        hdul.verify("exception")
        value = hdul[0].header["CATALOG"]
    assert value == "relev%C3%A9 %C3%A9t%C3%A9.fits" and unquote(value) == header["CATALOG"]
    assert pq.read_table(folder / "out.parquet").schema.metadata[b"CATALOG"].decode() == header["CATALOG"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: PredictionWriter(None, ("a", "b")), "an output must be named by a non-empty str or Path, got None"),
    (lambda tmp: PredictionWriter(tmp / "o.fits", ()), "classes must be distinct non-empty names"),
    (lambda tmp: PredictionWriter(tmp / "o.csv", "AGN"), "classes must be a tuple of class names"),
    (lambda tmp: PredictionWriter(tmp / "o.fits", ("a", "A")), "classes must be distinct non-empty names"),
    (lambda tmp: PredictionWriter(tmp / "o.fits", ("a", "b"), id_width=0), "id_width must be None"),
    (lambda tmp: PredictionWriter(tmp / "o.csv", ("a", "b"), id_width="8"), "id_width must be None"),
])
def test_bad_arguments_are_usage_errors(tmp_path, make, message):
    with pytest.raises(UsageError, match=message):
        make(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_bad_calls_of_write_are_usage_errors(folder, classifier, results, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = folder / f"out{suffix}"
    writer = PredictionWriter(path, results.classes, id_width=8)
    with pytest.raises(UsageError, match="write\\(\\) takes Predictions, got dict"):
        writer.write({"object_id": 1})
    other = PredictionWriter(folder / f"other{suffix}", ("SNIa", "AGN"), id_width=8)
    with pytest.raises(UsageError, match="results of classes AGN, SNIa; this file has SNIa, AGN"):
        other.write(results)
    other.abort()
    integer_ids = PredictionWriter(folder / f"ints{suffix}", results.classes)
    with pytest.raises(UsageError, match="object 'é1': this writer has integer ids"):
        integer_ids.write(results)
    integer_ids.abort()
    writer.write(results)
    writer.close()
    with pytest.raises(UsageError, match="this writer is closed"):
        writer.write(results)
    assert read_ids(path) == IDS
    assert sorted(p.name for p in folder.iterdir()) == [f"out{suffix}"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_a_full_disk_is_an_output_error_naming_the_output_and_nothing_is_left(folder, results, full_disk,
                                                                              suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    path = folder / f"out{suffix}"
    with pytest.raises(OutputError) as caught:
        with PredictionWriter(path, results.classes, id_width=8) as writer:
            for _ in range(100):
                writer.write(results)
    assert str(caught.value) == (f"{path}: cannot write: {os.strerror(errno.ENOSPC)} "
                                 "(free some space or write elsewhere)")
    assert caught.value.exit_code == 3
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_every_format_has_the_columns_of_the_schema_and_the_provenance_of_the_results(folder, classifier, results,
                                                                                      suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    assert results.provenance == classifier.provenance()  # what the API returns carries it
    provenance = classifier.provenance("survey.fits")
    path = folder / f"out{suffix}"
    with PredictionWriter(path, results.classes, id_width=8, provenance=provenance) as writer:
        writer.write(results)
    columns = prediction_columns(results.classes, id_width=8)
    names = [c.name for c in columns]
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            assert next(csv.reader(handle)) == names
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
        assert [(f.name, f.type) for f in schema] == [(c.name, c.arrow_type()) for c in columns]
        metadata = {k.decode(): v.decode() for k, v in schema.metadata.items() if k != b"ARROW:schema"}
    else:
        with fits.open(path) as hdul:
            table = hdul["PREDICTIONS"].columns
            assert [(c.name, c.format) for c in table] == [(c.name, c.fits_form) for c in columns]
            metadata = {k: str(hdul[0].header[k]) for k in provenance.header()}
    assert metadata == provenance.metadata()
    assert metadata["CATALOG"] == "survey.fits" and metadata["MODELSHA"] == classifier.card.sha256[:16]

