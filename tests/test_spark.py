"""Inference on Spark (``convention_rt.spark``): the pandas UDF and ``spark-classify``, in local mode.

The Spark tests share one ``local[2]`` session; they skip only where pyspark
or Java is missing.  The checks that stop a job before Spark starts need neither.
"""

import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from convention_rt import cli
from convention_rt import spark as crt_spark
from convention_rt.classifier import Classifier
from convention_rt.errors import BadInputError, ModelError, UsageError
from convention_rt.model_card import sha256_of
from helpers import (BAD_FILES, frame_columns, object_columns, problem_catalog, tiny_card, write_raw_catalog,
                     write_small_catalog, write_tiny_onnx)

# pyspark warns that it is not tested with pandas 3 yet; nothing else is let through.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


@pytest.fixture(scope="module")
def spark():
    """One local[2] session for the module; its Python workers run this interpreter and import this checkout.

    Starting it takes about 9 s, so every test that uses it is marked slow.
    """
    pytest.importorskip("pyspark", reason="the Spark tests need pyspark: pip install 'convention-rt[spark]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("the Spark tests need Java (17 or later): none on PATH or in JAVA_HOME")
    from pyspark.sql import SparkSession

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYSPARK_PYTHON", sys.executable)
        session = (SparkSession.builder.master("local[2]").appName("convention-rt tests")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.executorEnv.PYTHONPATH", str(Path(crt_spark.__file__).resolve().parents[1]))
                   .getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """The tiny test model, one path for the whole module (Python workers outlive a test)."""
    folder = tmp_path_factory.mktemp("model")
    path = write_tiny_onnx(folder / "model.onnx")
    (folder / "card.json").write_text(replace(tiny_card(), sha256=sha256_of(path)).to_json())
    return path


@pytest.fixture
def run(capsys):
    """``convention-rt ARGS...`` in-process; returns (code, out, err)."""

    def invoke(*args: object) -> tuple[int, str, str]:
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def history(rng: np.random.Generator, epochs: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """An object's (stamps, bands, mjd), epochs shuffled in time."""
    return (rng.normal(45.0, 5.0, size=(epochs, 32, 32)).astype(np.float32),
            [("g", "r", "i")[k % 3] for k in range(epochs)], rng.permutation(59000.0 + np.arange(epochs)))


def assert_same_results(ours: Path, reference: Path) -> None:
    """Same columns and types, same rows in the same order, probabilities within 1e-6 (NaN where NaN)."""
    ours_table, reference_table = pq.read_table(ours), pq.read_table(reference)
    assert [(f.name, f.type) for f in ours_table.schema] == [(f.name, f.type) for f in reference_table.schema]
    for name in ours_table.column_names:
        assert ours_table.column(name).null_count == reference_table.column(name).null_count == 0, name
        mine, theirs = ours_table.column(name).to_pylist(), reference_table.column(name).to_pylist()
        if name.startswith("p_") or name == "spread":
            np.testing.assert_allclose(np.array(mine, float), np.array(theirs, float), rtol=0, atol=1e-6)
        else:
            assert mine == theirs, name


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders left beside an output."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# -- without Spark ---------------------------------------------------------------------------------
def test_object_ranges_cover_the_catalog_in_balanced_contiguous_ranges():
    assert crt_spark.object_ranges(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert crt_spark.object_ranges(2, 8) == [(0, 1), (1, 2)]
    assert crt_spark.object_ranges(7, 1) == [(0, 7)]
    with pytest.raises(UsageError, match="partitions must be at least 1"):
        crt_spark.object_ranges(7, 0)


def test_failed_job_is_one_line_with_the_executor_error_when_it_is_ours():
    ours = crt_spark._job_error(RuntimeError(
        "Job aborted\nTraceback (most recent call last):\n  File ...\n"
        "convention_rt.errors.CatalogError: c.fits: EPOCHS.STAMP: cannot read stamps\n\tat org.apache.spark..."))
    assert isinstance(ours, BadInputError) and str(ours) == "c.fits: EPOCHS.STAMP: cannot read stamps"
    python = crt_spark._job_error(RuntimeError(
        "An exception was thrown from the Python worker:\nTraceback (most recent call last):\n  File ...\n"
        "MemoryError: out of memory\n"))
    assert isinstance(python, ModelError) and str(python) == "the Spark job failed: MemoryError: out of memory"
    jvm = crt_spark._job_error(RuntimeError("\nLost executor 3\n\tat org.apache.spark..."))
    assert isinstance(jvm, ModelError) and str(jvm) == "the Spark job failed: Lost executor 3"


def test_udf_body_builds_one_session_per_process_and_model(monkeypatch, tmp_path, model):
    built: list[str] = []

    class CountingClassifier(Classifier):
        def __init__(self, path, **options) -> None:
            built.append(path)
            super().__init__(path, **options)

    other = tmp_path / "copy" / "model.onnx"
    other.parent.mkdir()
    for name in ("model.onnx", "card.json"):
        shutil.copy(model.with_name(name), other.with_name(name))
    monkeypatch.setattr(crt_spark, "Classifier", CountingClassifier)
    crt_spark.get_classifier.cache_clear()
    rng = np.random.default_rng(1)
    objects = [history(rng, 4), history(rng, 5), (np.zeros((0, 32, 32), np.float32), [], np.zeros(0))]
    ids = pd.Series([7, 8, 9])
    # As Spark hands array columns to pandas UDFs: through Arrow, nested object arrays.
    flat = pa.array([[s.ravel() for s in stamps] for stamps, _, _ in objects],
                    pa.list_(pa.list_(pa.float32()))).to_pandas()
    nested = pa.array([stamps.tolist() for stamps, _, _ in objects],
                      pa.list_(pa.list_(pa.list_(pa.float32())))).to_pandas()
    bands = pd.Series([names for _, names, _ in objects])
    mjd = pd.Series([times for _, _, times in objects])
    try:
        results = [crt_spark.classify_objects(ids, stamps, bands, mjd, model=str(model))
                   for stamps in (flat, nested, flat)]
        assert built == [str(model)]
        crt_spark.classify_objects(ids, flat, bands, mjd, model=str(other))
        assert built == [str(model), str(other)]
    finally:
        crt_spark.get_classifier.cache_clear()  # no counting classifier left for other tests

    expected = Classifier(model, device="cpu").predict_batch(objects, object_ids=[7, 8, 9])
    for result in results:
        assert list(result.columns) == ["predicted_class", "p_AGN", "p_SNIa", "spread", "n_frames",
                                        "bands_used", "status", "model", "model_version"]
        probabilities = result[["p_AGN", "p_SNIa"]].to_numpy(dtype=float, na_value=np.nan)
        np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=1e-6)
        assert result["status"].tolist() == expected.status
        assert result["predicted_class"].tolist() == expected.predicted
    assert np.isnan(probabilities[2]).all() and expected.status[2] == "flagged:no_epochs"


def test_udf_body_names_the_object_with_a_stamp_of_the_wrong_size(model):
    stamps = pd.Series([[np.zeros(1024)], [np.zeros(100)]])
    with pytest.raises(BadInputError, match=r"object 12: a stamp of 100 values; the model needs 32x32"):
        crt_spark.classify_objects(pd.Series([11, 12]), stamps, pd.Series([["g"], ["g"]]),
                                   pd.Series([[59000.0], [59000.0]]), model=str(model))


@pytest.mark.parametrize(("build", "message"), BAD_FILES)
def test_bad_catalog_stops_before_spark_in_one_line_without_output(run, tmp_path, model, build, message):
    path = tmp_path / "bad.fits"
    build(path)
    output = tmp_path / "out.parquet"
    code, _, err = run("spark-classify", path, "-o", output, "--master", "local[1]", "--model", model)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"error: {path}") and re.search(message, err), err
    assert not output.exists() and leftovers(tmp_path) == []


def test_output_must_be_parquet_and_is_kept_without_overwrite(run, tmp_path, model):
    catalog = write_small_catalog(tmp_path / "c.fits")
    code, _, err = run("spark-classify", catalog, "-o", tmp_path / "out.csv", "--master", "local[1]")
    assert code == 2 and "output must end in .parquet" in err
    (tmp_path / "out.parquet").write_bytes(b"keep")
    code, _, err = run("spark-classify", catalog, "-o", tmp_path / "out.parquet", "--master", "local[1]",
                       "--model", model)
    assert code == 2 and "exists already (add --overwrite" in err
    assert (tmp_path / "out.parquet").read_bytes() == b"keep"
    long_name = tmp_path / ("a" * 250 + ".parquet")
    code, _, err = run("spark-classify", catalog, "-o", long_name, "--master", "local[1]", "--model", model)
    assert code == 2 and "more than the 255 a file name may have" in err and err.count("\n") == 1


# -- on Spark --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pandas_udf_on_spark_matches_the_python_api_with_one_session_per_worker(spark, model):
    from pyspark.sql.functions import pandas_udf

    rng = np.random.default_rng(2)
    objects = [history(rng, 3 + k) for k in range(5)] + [(np.zeros((0, 32, 32), np.float32), [], np.zeros(0))]
    rows = [(100 + k, [s.ravel().tolist() for s in stamps], names, times.tolist())
            for k, (stamps, names, times) in enumerate(objects)]
    frame = spark.createDataFrame(
        rows, "object_id long, stamps array<array<float>>, bands array<string>, mjd array<double>").coalesce(1)
    reference = str(model.resolve())

    @pandas_udf("long")
    def sessions_built(object_id: pd.Series) -> pd.Series:
        from convention_rt.spark import get_classifier

        get_classifier(reference)
        return pd.Series([get_classifier.cache_info().misses] * len(object_id))

    classify = crt_spark.classification_udf(model)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")  # 3 batches in one task
    try:
        collected = frame.select("object_id", classify("object_id", "stamps", "bands", "mjd").alias("c"),
                                 sessions_built("object_id").alias("built")).collect()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")

    assert [row["built"] for row in collected] == [1] * 6
    expected = Classifier(model, device="cpu").predict_batch(objects, object_ids=np.arange(100, 106))
    results = [row["c"] for row in collected]
    assert results[5]["p_AGN"] is not None and np.isnan(results[5]["p_AGN"])  # flagged: NaN, not null
    probabilities = np.array([[r["p_AGN"], r["p_SNIa"]] for r in results])
    np.testing.assert_allclose(probabilities, expected.probabilities, rtol=0, atol=1e-6)
    assert [r["status"] for r in results] == expected.status
    assert [r["predicted_class"] for r in results] == expected.predicted
    assert {(r["model"], r["model_version"]) for r in results} == {("tiny-test", "0.0.1")}


@pytest.mark.slow
def test_spark_classify_matches_classify_on_a_catalog_with_problems(spark, run, tmp_path, model):
    catalog = problem_catalog(tmp_path)
    code, _, err = run("classify", catalog, "-o", tmp_path / "single.parquet", "--model", model, "--device", "cpu")
    assert code == 0, err
    code, out, err = run("spark-classify", catalog, "-o", tmp_path / "spark.parquet", "--master", "local[2]",
                         "--model", model, "--partitions", "3")
    assert code == 0, err
    assert_same_results(tmp_path / "spark.parquet", tmp_path / "single.parquet")
    assert len(list((tmp_path / "spark.parquet").glob("part-*.parquet"))) == 3
    assert "8 objects" in out and "flagged: 7" in out
    assert leftovers(tmp_path) == []
    single = pq.read_schema(tmp_path / "single.parquet").metadata
    dataset = pq.read_schema(tmp_path / "spark.parquet" / "_common_metadata").metadata  # the same provenance
    for key in (b"CATALOG", b"MODEL", b"MODELVER", b"MODELSHA", b"CRTVERS"):
        assert dataset[key] == single[key], key
    assert dataset[b"CATALOG"] == catalog.name.encode() and single[b"DEVICE"] == b"cpu"


@pytest.mark.slow
def test_spark_classify_replaces_its_output_only_with_overwrite(spark, run, tmp_path, model):
    catalog = write_small_catalog(tmp_path / "survey.fits", n_objects=25, epochs=7)
    code, _, err = run("classify", catalog, "-o", tmp_path / "single.parquet", "--model", model, "--device", "cpu")
    assert code == 0, err
    output = tmp_path / "spark.parquet"
    code, _, err = run("spark-classify", catalog, "-o", output, "--master", "local[2]", "--model", model)
    assert code == 0, err
    assert_same_results(output, tmp_path / "single.parquet")
    code, _, err = run("spark-classify", catalog, "-o", output, "--master", "local[2]", "--model", model)
    assert code == 2 and "exists already (add --overwrite" in err
    code, _, err = run("spark-classify", catalog, "-o", output, "--master", "local[2]", "--model", model,
                       "--partitions", "1", "--overwrite")
    assert code == 0, err
    assert_same_results(output, tmp_path / "single.parquet")
    assert len(list(output.glob("part-*.parquet"))) == 1 and leftovers(tmp_path) == []


@pytest.mark.slow
def test_executor_error_is_one_line_and_leaves_nothing(spark, tmp_path, model):
    catalog = write_small_catalog(tmp_path / "moving.fits", n_objects=4)
    job = crt_spark.CatalogJob.plan(catalog, model=model)
    write_small_catalog(tmp_path / "other.fits", n_objects=3).replace(catalog)  # changed under the job
    output = tmp_path / "out.parquet"
    with pytest.raises(BadInputError) as caught:
        job.run(spark, output, partitions=2)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{job.catalog}: OBJECTS: has 3 objects on this executor")
    assert not output.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_spark_classify_on_invalid_raise_stops_on_a_flagged_object_in_one_line(spark, run, tmp_path, model):
    catalog = problem_catalog(tmp_path)
    code, _, single = run("classify", catalog, "-o", tmp_path / "single.parquet", "--model", model,
                          "--device", "cpu", "--on-invalid", "raise")
    assert code == 1
    output = tmp_path / "spark.parquet"
    code, _, err = run("spark-classify", catalog, "-o", output, "--master", "local[2]", "--model", model,
                       "--partitions", "1", "--on-invalid", "raise")
    assert code == 1 and err.count("\n") == 1 and err.strip() == single.strip(), err  # classify's bar: a blank
    assert not output.exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_spark_classify_crops_larger_stamps_like_classify(spark, run, tmp_path, model):
    catalog = write_small_catalog(tmp_path / "large.fits", n_objects=5, epochs=4, stamp_shape=(48, 48))
    output = tmp_path / "spark.parquet"
    code, _, err = run("spark-classify", catalog, "-o", output, "--master", "local[2]", "--model", model)
    assert code == 1 and "use --stamp-policy crop" in err and not output.exists()  # refused on the driver
    code, _, err = run("classify", catalog, "-o", tmp_path / "single.parquet", "--model", model, "--device", "cpu",
                       "--stamp-policy", "crop")
    assert code == 0, err
    code, out, err = run("spark-classify", catalog, "-o", output, "--master", "local[2]", "--model", model,
                         "--stamp-policy", "crop")
    assert code == 0, err
    assert_same_results(output, tmp_path / "single.parquet")
    assert "5 objects" in out and "flagged: 0" in out


@pytest.mark.slow
def test_spark_classify_reports_a_catalog_out_of_the_domain_like_classify(spark, run, tmp_path, model):
    stamps = np.random.default_rng(3).normal(50.0, 5.0, size=(4, 32, 32))
    catalog = write_raw_catalog(tmp_path / "undeclared.fits", object_columns([1, 2], [0, 2], [2, 2]),
                                frame_columns([1, 1, 2, 2], np.arange(4.0), ["g", "r", "g", "i"], stamps),
                                photometry=None)
    code, _, err = run("classify", catalog, "-o", tmp_path / "single.parquet", "--model", model, "--device", "cpu")
    assert code == 0, err
    notice = [line for line in err.splitlines() if "would mean nothing" in line]
    assert len(notice) == 1 and notice[0].startswith(f"warning: {catalog}: PRIMARY: "), err
    code, _, err = run("spark-classify", catalog, "-o", tmp_path / "spark.parquet", "--master", "local[2]",
                       "--model", model)
    assert code == 0, err
    assert [line for line in err.splitlines() if "would mean nothing" in line] == notice
    assert_same_results(tmp_path / "spark.parquet", tmp_path / "single.parquet")
