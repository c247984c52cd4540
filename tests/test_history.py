"""Alert histories: a refused alert changes nothing, in the cache and through the classifier."""

from __future__ import annotations

import numpy as np
import pytest

from convention_rt import HistoryCache
from convention_rt.errors import BadInputError, InputTypeError, UsageError


def good_alerts(n: int = 4, seed: int = 3):
    rng = np.random.default_rng(seed)
    return [(rng.normal(50, 5, (32, 32)), "gr"[t % 2], 59000.0 + t) for t in range(n)]


def snapshot(cache: HistoryCache, object_id):
    stamps, bands, mjd = cache.get(object_id)
    return stamps.copy(), list(bands), mjd.copy()


def assert_same_history(before, after):
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1] == after[1]
    np.testing.assert_array_equal(before[2], after[2])


REFUSED_BY_THE_CACHE = [
    (lambda: (np.ones((16, 16)), ["g"], 59010.0), BadInputError, "differ from its history's"),
    (lambda: (np.ones((32, 32)), ["g"], np.nan), BadInputError, "is not finite"),
    (lambda: (np.ones((32, 32)), ["g"], np.inf), BadInputError, "is not finite"),
    (lambda: (np.ones((32, 32)), ["g"], 1e300), BadInputError, r"is not finite or beyond \+-1e\+06 days"),
    (lambda: (np.ones((2, 32, 32)), ["g"], [1.0, 2.0]), BadInputError, "must agree"),
    (lambda: (np.zeros((0, 32, 32)), [], []), BadInputError, "no stamps"),
    (lambda: ([["a"] * 32] * 32, ["g"], 59010.0), InputTypeError, "not real numbers"),
    (lambda: (np.ones((32, 32)), [7], 59010.0), InputTypeError, "band names"),
]


@pytest.mark.parametrize(("alert", "error", "message"), REFUSED_BY_THE_CACHE)
def test_the_cache_refuses_an_alert_without_touching_anything(alert, error, message):
    cache = HistoryCache(max_objects=2, max_frames=10)
    for stamp, band, mjd in good_alerts(3):
        cache.add("A", stamp, [band], mjd)
    cache.add("B", np.ones((32, 32)), ["r"], 59000.0)
    before = snapshot(cache, "A")
    with pytest.raises(error, match=message):
        cache.add("A", *alert())
    assert_same_history(before, snapshot(cache, "A"))
    # A's place in the eviction order did not move either: it is still the least recently updated
    cache.add("C", np.ones((32, 32)), ["r"], 59000.0)
    assert "A" not in cache and "B" in cache and cache.evicted == 1


def test_a_refused_first_alert_is_not_stored():
    cache = HistoryCache()
    with pytest.raises(BadInputError, match="is not finite"):
        cache.add("A", np.ones((16, 16)), ["g"], np.nan)
    assert "A" not in cache and len(cache) == 0
    stamps, bands, mjd = cache.add("A", np.ones((32, 32)), ["g"], 59000.0)
    assert stamps.shape == (1, 32, 32) and bands == ["g"] and mjd.tolist() == [59000.0]


def test_cache_bounds_must_be_positive():
    with pytest.raises(UsageError, match="at least 1, got 0 and 99"):
        HistoryCache(max_objects=0)
    for value in ("10", 2.5, True, None):
        with pytest.raises(UsageError, match=rf"max_objects must be a whole number \(int\), got {value!r}"):
            HistoryCache(value)


def test_api_misuse_of_alerts_raises_the_projects_errors(classifier):
    stamp, bands, mjd = np.full((32, 32), 50.0), ["g"], 59000.0
    cache = HistoryCache()
    for object_id in (["a"], np.array([1, 2]), {"id": 1}):
        with pytest.raises(InputTypeError, match=r"object id .* cannot key a history; give a str or an int"):
            cache.add(object_id, stamp, bands, mjd)
        with pytest.raises(InputTypeError, match="cannot key a history"):
            classifier.predict_alert(cache, object_id, stamp, bands, mjd)
    assert len(cache) == 0
    with pytest.raises(InputTypeError, match=r"cache must be a HistoryCache, got dict; build one with HistoryCache"):
        classifier.predict_alert({}, "a", stamp, bands, mjd)


# Refused by the classifier before the cache sees them: the model could never use them.
REFUSED_BY_THE_MODEL = [
    (lambda: (np.ones((16, 16)), ["g"], 59010.0), "stamps are 16x16, the model needs 32x32"),
    (lambda: (np.full((32, 32), 50.0), ["z"], 59010.0), "band z is not one of the model's bands"),
    (lambda: (np.full((32, 32), np.nan), ["g"], 59010.0), "stamp 0 has 1024 bad pixels"),
    (lambda: (np.full((32, 32), -1e30), ["g"], 59010.0), "stamp 0 has 1024 bad pixels"),
    (lambda: (np.full((32, 32), 50.0), ["g"], np.nan), "is not finite"),
    (lambda: (np.full((2, 32, 32), 50.0), ["g", "r"], 59010.0), "must agree"),
]


@pytest.mark.parametrize(("alert", "message"), REFUSED_BY_THE_MODEL)
def test_a_refused_alert_neither_erases_nor_poisons_the_history(classifier, alert, message):
    cache = HistoryCache(max_frames=classifier.card.seq_len)
    alerts = good_alerts(4)
    for stamp, band, mjd in alerts[:3]:
        classifier.predict_alert(cache, "ZTF1", stamp, [band], mjd)
    before = snapshot(cache, "ZTF1")
    with pytest.raises(BadInputError, match=message) as caught:
        classifier.predict_alert(cache, "ZTF1", *alert())
    assert "object ZTF1" in str(caught.value)
    assert_same_history(before, snapshot(cache, "ZTF1"))
    stamp, band, mjd = alerts[3]
    streamed = classifier.predict_alert(cache, "ZTF1", stamp, [band], mjd)
    whole = classifier.predict_object([a[0] for a in alerts], [a[1] for a in alerts], [a[2] for a in alerts])
    assert streamed == whole and streamed.status == "ok" and streamed.n_frames == 4


@pytest.mark.parametrize(("alert", "message"), REFUSED_BY_THE_MODEL)
def test_a_refused_first_alert_does_not_block_the_next(classifier, alert, message):
    cache = HistoryCache(max_frames=classifier.card.seq_len)
    with pytest.raises(BadInputError, match=message):
        classifier.predict_alert(cache, "ZTF2", *alert())
    assert "ZTF2" not in cache
    stamp, band, mjd = good_alerts(1)[0]
    result = classifier.predict_alert(cache, "ZTF2", stamp, band, mjd)  # a lone band name is one band
    assert result == classifier.predict_object(stamp[None], [band], [mjd])
    assert result.status == "ok" and result.n_frames == 1


def test_a_nan_time_no_longer_flags_every_later_classification(classifier):
    cache = HistoryCache(max_frames=classifier.card.seq_len)
    alerts = good_alerts(3)
    classifier.predict_alert(cache, "ZTF3", *alerts[0])
    with pytest.raises(BadInputError, match="is not finite"):
        classifier.predict_alert(cache, "ZTF3", alerts[1][0], [alerts[1][1]], np.nan)
    for stamp, band, mjd in alerts[1:]:
        result = classifier.predict_alert(cache, "ZTF3", stamp, [band], mjd)
        assert result.status == "ok" and result.predicted
    assert result.n_frames == 3
