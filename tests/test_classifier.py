"""The Python API, the history cache and the prediction writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.io import fits

from convention_rt import Classifier, HistoryCache
from convention_rt.catalog import Catalog
from convention_rt.errors import BadInputError, ModelError, UsageError
from convention_rt.predictions import PredictionWriter


@pytest.fixture
def classifier(tiny_model):
    return Classifier(tiny_model[0], device="cpu", threads=1, batch_size=4)


def catalog_results(classifier, path):
    return [p for p in classifier.predict_catalog(path, chunk_objects=4)]


def test_catalog_predictions(classifier, small_catalog):
    parts = catalog_results(classifier, small_catalog)
    assert [len(p) for p in parts] == [4, 2]
    first = parts[0]
    assert first.object_ids.tolist() == [100, 101, 102, 103]
    np.testing.assert_allclose(first.probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(first.spread == 0.0)  # one member
    assert first.n_frames.tolist() == [4, 4, 4, 4]  # 5 epochs, one in band i the model does not know
    assert first.bands_used == ["g,r"] * 4
    assert all(s.startswith("ok;") and "bands_unknown_to_model=1(i)" in s for s in first.status)
    assert set(first.predicted) <= {"AGN", "SNIa"}


def test_one_object_in_memory_matches_the_catalog_path(classifier, small_catalog):
    with Catalog(small_catalog) as catalog:
        chunk = next(catalog.iter_chunks(max_objects=1))
    stamps, mjd = chunk.frames, chunk.mjd
    bands = [chunk.bands[b] for b in chunk.band]
    single = classifier.predict_object(stamps[::-1], bands[::-1], mjd[::-1])  # any order
    from_catalog = catalog_results(classifier, small_catalog)[0]
    assert single.predicted == from_catalog.predicted[0]
    np.testing.assert_allclose(list(single.probabilities.values()), from_catalog.probabilities[0], rtol=1e-6)
    assert single.status == "ok;epochs_sorted_by_time;bands_unknown_to_model=1(i)"


def test_flagged_objects_get_nan_never_a_made_up_value(classifier):
    good = (np.random.default_rng(0).normal(50, 5, (3, 32, 32)), ["g", "r", "g"], [1.0, 2.0, 3.0])
    only_unknown = (np.zeros((2, 32, 32)), ["z", "z"], [1.0, 2.0])
    all_nan = (np.full((1, 32, 32), np.nan), ["g"], [1.0])
    result = classifier.predict_batch([good, only_unknown, all_nan], object_ids=["a", "b", "c"])
    assert result.ok.tolist() == [True, False, False]
    assert np.isnan(result.probabilities[1:]).all() and np.isnan(result.spread[1:]).all()
    assert result.predicted[1:] == ["", ""]
    assert result.status[1].startswith("flagged:no_frames_in_model_bands")
    assert result.status[2].startswith("flagged:all_frames_mostly_bad")


def test_bad_shapes_are_refused(classifier):
    with pytest.raises(BadInputError, match="object 0: stamps"):
        classifier.predict_object(np.zeros((2, 31, 32)), ["g", "g"], [1.0, 2.0])
    with pytest.raises(BadInputError, match="must agree"):
        classifier.predict_object(np.zeros((2, 32, 32)), ["g"], [1.0, 2.0])


def test_one_classifier_serves_many_threads(classifier):
    rng = np.random.default_rng(1)
    objects = [(rng.normal(45, 5, (5, 32, 32)), ["g", "r", "g", "r", "g"], np.arange(5.0)) for _ in range(8)]
    expected = [classifier.predict_object(*o).probabilities for o in objects]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda o: classifier.predict_object(*o).probabilities, objects * 4))
    for k, probabilities in enumerate(got):
        assert probabilities == expected[k % 8]


def test_history_cache_accumulates_bounds_and_evicts():
    cache = HistoryCache(max_objects=2, max_frames=3)
    stamp = np.ones((32, 32))
    for t in range(5):
        stamps, bands, mjd = cache.add("A", stamp * t, ["g"], t)
    assert mjd.tolist() == [2.0, 3.0, 4.0] and stamps[:, 0, 0].tolist() == [2.0, 3.0, 4.0]
    stamps, bands, mjd = cache.add("A", stamp * 9, ["g"], 3.0)  # same (time, band): replaces
    assert mjd.tolist() == [2.0, 3.0, 4.0] and stamps[1, 0, 0] == 9.0
    cache.add("B", stamp, ["r"], 1.0)
    cache.add("C", stamp, ["r"], 1.0)  # A is the least recently updated
    assert "A" not in cache and len(cache) == 2 and cache.evicted == 1
    with pytest.raises(BadInputError, match="differ from its history"):
        cache.add("B", np.ones((16, 16)), ["r"], 2.0)


def test_alert_stream_classifies_the_whole_history(classifier):
    rng = np.random.default_rng(2)
    stamps = rng.normal(50, 5, (6, 32, 32))
    bands = ["g", "r"] * 3
    cache = HistoryCache(max_frames=classifier.card.seq_len)
    for t in range(6):
        streamed = classifier.predict_alert(cache, "ZTF1", stamps[t], [bands[t]], 59000.0 + t)
    whole = classifier.predict_object(stamps, bands, 59000.0 + np.arange(6))
    assert streamed == whole and streamed.n_frames == 6


@pytest.mark.parametrize("suffix", [".fits", ".csv", ".parquet"])
def test_writers_round_trip_and_are_atomic(classifier, small_catalog, tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    parts = catalog_results(classifier, small_catalog)
    tmp_path = tmp_path / "outputs"
    tmp_path.mkdir()
    path = tmp_path / f"out{suffix}"
    with PredictionWriter(path, classifier.classes, header={"MODEL": "tiny"}) as writer:
        for part in parts:
            writer.write(part)
    rows = [row for part in parts for row in part.rows()]
    if suffix == ".fits":
        with fits.open(path) as hdul:
            table = hdul["PREDICTIONS"].data
            assert table["OBJECT_ID"].tolist() == [r["object_id"] for r in rows]
            np.testing.assert_allclose(table["P_AGN"], [r["p_AGN"] for r in rows], rtol=1e-6)
            assert hdul[0].header["MODEL"] == "tiny"
    elif suffix == ".csv":
        import csv

        with open(path, newline="") as handle:
            read = list(csv.DictReader(handle))
        assert [int(r["object_id"]) for r in read] == [r["object_id"] for r in rows]
        assert read[0]["status"] == rows[0]["status"]
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        assert table.column("object_id").to_pylist() == [r["object_id"] for r in rows]
        assert table.schema.metadata[b"MODEL"] == b"tiny"
    with pytest.raises(UsageError, match="exists already"):
        PredictionWriter(path, classifier.classes)
    with pytest.raises(RuntimeError):
        with PredictionWriter(tmp_path / f"broken{suffix}", classifier.classes) as writer:
            writer.write(parts[0])
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{suffix}"]


def test_unknown_output_format_and_missing_model(tmp_path, tiny_model):
    with pytest.raises(UsageError, match="must end in .fits, .csv or .parquet"):
        PredictionWriter(tmp_path / "out.txt", ("a", "b"))
    with pytest.raises(ModelError, match="no model 'nonexistent'"):
        Classifier("nonexistent")
