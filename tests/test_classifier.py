"""The Python API, the history cache and the prediction writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from astropy.io import fits

from convention_rt import Classifier, HistoryCache
from convention_rt.catalog import Catalog
from convention_rt.errors import BadInputError, ConventionError, InputTypeError, ModelError, UsageError
from convention_rt.predictions import PredictionWriter


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


@pytest.mark.parametrize("mjd", [[1e300, 1.0, 2.0], [59000.0, 59001.0, -1e7]])
def test_times_beyond_the_plausible_range_are_flagged_without_a_warning(classifier, mjd):
    """pytest turns warnings into errors: an overflow while casting the times would fail here."""
    stamps = np.random.default_rng(0).normal(50, 5, (3, 32, 32))
    single = classifier.predict_object(stamps, ["g", "r", "g"], mjd)
    assert single.status.startswith("flagged:mjd_out_of_range") and single.predicted == ""
    assert np.isnan(list(single.probabilities.values())).all()
    assert classifier.predict_object(stamps, ["g", "r", "g"], [59000.0, 59001.0, 59002.0]).status == "ok"


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
            assert table["object_id"].tolist() == [r["object_id"] for r in rows]
            np.testing.assert_allclose(table["p_AGN"], [r["p_AGN"] for r in rows], rtol=1e-6)
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


# -- out-of-range pixels and non-finite outputs ----------------------------------------------------
@pytest.fixture(scope="module")
def shipped():
    return Classifier("convention-compact/1.1.0", device="cpu", threads=1, batch_size=3)


def sentinel_object(value: float, where: str, seed: int = 5):
    rng = np.random.default_rng(seed)
    stamps = rng.normal(5.0, 20.0, (10, 32, 32)).astype(np.float32)
    if where == "patch":
        stamps[3, 5:10, 5:10] = value
    elif where == "frame":
        stamps[3] = value
    else:
        stamps[:] = value
    return stamps, ["g", "r"] * 5, 59000.0 + np.arange(10.0)


@pytest.mark.parametrize("value", [1e37, 3e38, -1e30])
def test_sentinel_pixels_are_bad_pixels_never_an_ok_guess(shipped, value):
    # 10 frames: fewer than the shipped model's validated minimum, so classified with low_information
    for where, status in [("patch", "low_information:few_frames;bad_pixels=25"),
                          ("frame", "low_information:few_frames;bad_pixels=1024;mostly_bad_frames_dropped=1"),
                          ("all", "flagged:all_frames_mostly_bad;bad_pixels=10240;mostly_bad_frames_dropped=10")]:
        result = shipped.predict_object(*sentinel_object(value, where))
        as_nan = shipped.predict_object(*sentinel_object(np.nan, where))
        assert result.status == status == as_nan.status and result.predicted == as_nan.predicted
        np.testing.assert_array_equal(list(result.probabilities.values()), list(as_nan.probabilities.values()))
        if status.startswith("low_information"):
            assert result.predicted and np.isfinite(list(result.probabilities.values())).all()
        else:
            assert result.predicted == "" and np.isnan(list(result.probabilities.values())).all()
    clean = shipped.predict_object(*sentinel_object(0.0, "none-replaced", seed=6))
    batch = shipped.predict_batch([sentinel_object(value, "patch"), sentinel_object(value, "all"),
                                   sentinel_object(0.0, "none-replaced", seed=6)], object_ids=["a", "b", "c"])
    assert batch.status == ["low_information:few_frames;bad_pixels=25",
                            "flagged:all_frames_mostly_bad;bad_pixels=10240;mostly_bad_frames_dropped=10",
                            "low_information:few_frames"]
    assert batch.ok.tolist() == [True, False, True] and batch.predicted[2] == clean.predicted
    np.testing.assert_allclose(batch.probabilities[2], list(clean.probabilities.values()), rtol=1e-6)


def write_sqrt_onnx(path):
    """Like the tiny test model, but the logits go through a square root: NaN for negative stamp means."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", ["stamps", "axes"], ["mean"], keepdims=0),
        helper.make_node("Sqrt", ["mean"], ["root"]),
        helper.make_node("MatMul", ["root", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("Unsqueeze", ["p", "one"], ["probabilities"]),
    ]
    inputs = [helper.make_tensor_value_info("stamps", TensorProto.FLOAT, ["n", 6, 32, 32]),
              helper.make_tensor_value_info("band_ids", TensorProto.INT64, ["n", 6]),
              helper.make_tensor_value_info("times", TensorProto.FLOAT, ["n", 6])]
    graph = helper.make_graph(
        nodes, "sqrt", inputs, [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 1, 2])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.array([2, 3]), "axes"),
         numpy_helper.from_array(np.array([1]), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


def test_non_finite_model_outputs_flag_the_object(tmp_path):
    from dataclasses import replace

    from convention_rt.model_card import sha256_of
    from helpers import tiny_card

    model = write_sqrt_onnx(tmp_path / "model.onnx")
    (tmp_path / "card.json").write_text(replace(tiny_card(), sha256=sha256_of(model)).to_json())
    classifier = Classifier(model, device="cpu", threads=1, batch_size=2)
    bright = (np.full((3, 32, 32), 80.0), ["g", "r", "g"], [1.0, 2.0, 3.0])  # normalised means > 0
    faint = (np.full((3, 32, 32), 10.0), ["g", "r", "g"], [1.0, 2.0, 3.0])  # < 0: the square root is NaN
    result = classifier.predict_batch([bright, faint, bright], object_ids=[1, 2, 3])
    assert result.status == ["ok", "flagged:non_finite_output", "ok"]
    assert result.predicted[1] == "" and result.predicted[0] in classifier.classes
    assert np.isnan(result.probabilities[1]).all() and np.isnan(result.spread[1]) and result.n_frames[1] == 0
    assert np.isfinite(result.probabilities[[0, 2]]).all()
    single = classifier.predict_object(*faint)
    assert single.status == "flagged:non_finite_output" and single.predicted == ""


# -- misuse of the API -------------------------------------------------------------------------------
S, B, T = np.zeros((2, 32, 32)), ["g", "r"], [1.0, 2.0]

MISUSE = [
    (lambda c: c.predict_object(np.zeros((1, 2, 32, 32)), B, T), BadInputError, r"object 0: stamps has shape \(1, 2"),
    (lambda c: c.predict_object(np.zeros(32), ["g"], [1.0]), BadInputError, r"stamps has shape \(32,\)"),
    (lambda c: c.predict_object(np.zeros((2, 31, 32)), B, T), BadInputError, "stamps are 31x32, the model needs 32x32"),
    (lambda c: c.predict_object(S, ["g"], T), BadInputError, "2 stamps, 1 bands and 2 times must agree"),
    (lambda c: c.predict_object(S, "gr", T), BadInputError, "2 stamps, 1 bands and 2 times must agree"),
    (lambda c: c.predict_object(S, B, 1.0), BadInputError, "2 stamps, 2 bands and 1 times must agree"),
    (lambda c: c.predict_object(S, B, [[1.0, 2.0]]), BadInputError, r"mjd has shape \(1, 2\)"),
    (lambda c: c.predict_object(S, [1, 2], T), InputTypeError, r"bands must be band names \(str\), got 1 \(int\)"),
    (lambda c: c.predict_object(S, [b"g", b"r"], T), InputTypeError, "decode bytes first"),
    (lambda c: c.predict_object(S, None, T), InputTypeError, "bands is NoneType, not a sequence"),
    (lambda c: c.predict_object(np.full((1, 32, 32), "a"), ["g"], [1.0]), InputTypeError,
     "stamps holds dtype <U1, not real numbers"),
    (lambda c: c.predict_object([np.zeros((32, 32)), np.zeros((31, 32))], B, T), BadInputError,
     "stamps is not a regular array"),
    (lambda c: c.predict_object(S.astype(complex), B, T), InputTypeError, "dtype complex128"),
    (lambda c: c.predict_object(S.astype(bool), B, T), InputTypeError, "stamps holds booleans"),
    (lambda c: c.predict_object(S, B, ["a", "b"]), InputTypeError, "mjd holds dtype <U1"),
    (lambda c: c.predict_object(S, B, np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]")),
     InputTypeError, r"mjd holds dtype datetime64\[D\]"),
    (lambda c: c.predict_batch([S]), InputTypeError, "object 0: expected a .stamps, bands, mjd. tuple, got ndarray"),
    (lambda c: c.predict_batch([(S, B)]), InputTypeError, "got tuple of 2"),
    (lambda c: c.predict_batch(S), InputTypeError, "objects must be a sequence of .stamps, bands, mjd. tuples"),
    (lambda c: c.predict_batch([(S, B, T)], object_ids=[1, 2]), BadInputError,
     "object_ids has 2 entries for 1 objects; give one id per object"),
    (lambda c: c.predict_batch([(S, B, T)], object_ids=[[1]]), BadInputError, r"object_ids has shape \(1, 1\)"),
    (lambda c: c.predict_batch([(S, B, T), (S, ["g"], T)], object_ids=["a", "b"]), BadInputError,
     "object b: 2 stamps, 1 bands"),
    (lambda c: Classifier(c.session.model_path, device="cpu", batch_size=0), UsageError,
     "batch_size must be a whole number of objects, at least 1, got 0"),
    (lambda c: Classifier(c.session.model_path, device="cpu", batch_size=2.5), UsageError, "got 2.5"),
]


@pytest.mark.parametrize(("call", "error", "message"), MISUSE)
def test_misuse_raises_the_projects_errors_saying_what_to_fix(classifier, call, error, message):
    with pytest.raises(error, match=message) as caught:
        call(classifier)
    assert isinstance(caught.value, ConventionError) and "\n" not in str(caught.value)
    if error is InputTypeError:
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)


def test_empty_inputs_follow_the_per_object_policy(classifier):
    empty = classifier.predict_batch([])
    assert len(empty) == 0 and empty.probabilities.shape == (0, 2)
    assert classifier.predict_batch(iter([(S, B, T)])).ok.tolist() == [True]  # any iterable of objects
    no_epochs = classifier.predict_object(np.zeros((0, 32, 32)), [], [])
    assert no_epochs.status == "flagged:no_epochs" and no_epochs.predicted == ""


# -- long lists: in batches of batch_size ------------------------------------------------------------
def test_predict_batch_runs_in_batches_with_the_same_results(classifier, monkeypatch):
    from convention_rt import classifier as classifier_module
    from convention_rt.transform import chunk_from_objects

    rng = np.random.default_rng(4)
    objects = [(rng.normal(45, 5, (k + 1, 32, 32)), ["g", "r", "i"] * 3 + ["g"], 59000.0 + np.arange(k + 1.0))
               for k in range(10)]
    objects = [(s, b[:len(s)], t) for s, b, t in objects]
    objects[4] = (np.zeros((2, 32, 32)), ["z", "z"], [1.0, 2.0])  # flagged: no band the model knows
    objects[7] = (np.full((1, 32, 32), np.nan), ["g"], [1.0])  # flagged: all frames bad
    ids = [f"obj{k}" for k in range(10)]
    # what predict_batch computed before, all objects in one chunk
    bands = tuple(dict.fromkeys(b for _, names, _ in objects for b in names))
    expected = classifier.predict_chunk(chunk_from_objects(objects, bands, ids, stamp_size=32))

    calls, prepared = [], []
    run = classifier.session.run
    monkeypatch.setattr(classifier.session, "run", lambda *a: calls.append(len(a[0])) or run(*a))
    to_inputs = classifier_module.to_inputs
    monkeypatch.setattr(classifier_module, "to_inputs",
                        lambda chunk, *a, **k: prepared.append(len(chunk)) or to_inputs(chunk, *a, **k))
    got = classifier.predict_batch(objects, object_ids=ids)
    assert prepared == [4, 4, 2] and len(calls) >= 3 and max(calls) <= 4  # never more than a batch at once
    assert got.object_ids.tolist() == ids and got.status == expected.status
    np.testing.assert_array_equal(got.probabilities, expected.probabilities)
    np.testing.assert_array_equal(got.spread, expected.spread)
    np.testing.assert_array_equal(got.n_frames, expected.n_frames)
    assert got.bands_used == expected.bands_used and got.predicted == expected.predicted
    assert got.ok.tolist() == [k not in (4, 7) for k in range(10)]


def test_the_kept_tiny_model_is_what_the_builder_makes(tmp_path) -> None:
    """tests/data/tiny.onnx stands in for write_tiny_onnx's defaults where onnx is not installed."""
    onnx = pytest.importorskip("onnx")
    from helpers import TINY_ONNX, write_tiny_onnx

    built = write_tiny_onnx(tmp_path / "built.onnx")
    assert onnx.load(str(built)) == onnx.load(str(TINY_ONNX))
