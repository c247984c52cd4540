"""The event window against loop references, its properties, and how cards and training use it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convention_rt import preprocess
from convention_rt.errors import ModelError, UsageError
from convention_rt.event_window import CORE_RADIUS, EXCESS_THRESHOLD, event_excess, event_selection
from convention_rt.preprocess import MAX_PIXEL_MAGNITUDE, select_frames


def reference_excess(frames, band_ids, offsets):
    """Loop over objects and bands: core flux (bad pixels take the frame's good median), median, MAD, excess."""
    height, width = frames.shape[1:]
    excess = np.zeros(frames.shape[0])
    for i in range(len(offsets) - 1):
        for band in np.unique(band_ids[offsets[i]:offsets[i + 1]]):
            rows = [k for k in range(offsets[i], offsets[i + 1]) if band_ids[k] == band]
            core = []
            for k in rows:
                good = [float(v) for v in frames[k].ravel() if np.isfinite(v) and abs(v) <= MAX_PIXEL_MAGNITUDE]
                fill = float(np.median(good)) if good else 0.0
                total = 0.0
                for y in range(height):
                    for x in range(width):
                        value = float(frames[k, y, x])
                        if np.hypot(y - height // 2, x - width // 2) <= CORE_RADIUS:
                            total += value if np.isfinite(value) and abs(value) <= MAX_PIXEL_MAGNITUDE else fill
                core.append(total)
            core = np.array(core)
            median = np.median(core)
            scale = 1.4826 * np.median(np.abs(core - median))
            for k, value in zip(rows, core):
                z = (value - median) / scale if scale > 0 else 0.0
                excess[k] = max(z - EXCESS_THRESHOLD, 0.0)
    return excess


def reference_selection(offsets, excess, seq_len):
    """Inference choice by brute force: every window's summed excess, the latest of the best."""
    selection = np.full((len(offsets) - 1, seq_len), -1)
    for i in range(len(offsets) - 1):
        frames = list(range(offsets[i], offsets[i + 1]))
        if len(frames) > seq_len:
            sums = [sum(excess[frames[s:s + seq_len]]) for s in range(len(frames) - seq_len + 1)]
            best = max(sums)
            start = max(s for s, total in enumerate(sums) if total >= best - 1e-9 * best)
            frames = frames[start:start + seq_len]
        selection[i, :len(frames)] = frames
    return selection


@st.composite
def objects_with_events(draw, max_objects=5, max_count=30):
    """Ragged frames of a few bands; some objects brighten in their core for a few frames."""
    counts = draw(st.lists(st.integers(0, max_count), min_size=1, max_size=max_objects))
    side = draw(st.sampled_from([7, 8, 12]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = int(sum(counts))
    frames = rng.normal(draw(st.floats(-10, 10)), 1.0, size=(n, side, side)).astype(np.float32)
    band_ids = rng.integers(1, 4, size=n).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for i, count in enumerate(counts):
        if count > 4 and draw(st.booleans()):
            start = offsets[i] + draw(st.integers(0, count - 4))
            frames[start:start + draw(st.integers(1, 4)), side // 2, side // 2] += draw(st.floats(5, 500))
    if n and draw(st.booleans()):  # a few bad pixels, which count as 0
        frames.reshape(-1)[rng.integers(0, frames.size, size=3)] = rng.choice([np.nan, np.inf, -3e38], size=3)
    return frames, band_ids, offsets


@settings(max_examples=60, deadline=None)
@given(objects_with_events())
def test_excess_matches_the_loop_reference(data):
    frames, band_ids, offsets = data
    got = event_excess(frames, band_ids, offsets, MAX_PIXEL_MAGNITUDE)
    np.testing.assert_allclose(got, reference_excess(frames, band_ids, offsets), rtol=1e-9, atol=1e-9)
    assert (got >= 0).all()


@settings(max_examples=100, deadline=None)
@given(objects_with_events(), st.integers(1, 12))
def test_selection_matches_the_brute_force_reference(data, seq_len):
    frames, band_ids, offsets = data
    excess = event_excess(frames, band_ids, offsets, MAX_PIXEL_MAGNITUDE)
    np.testing.assert_array_equal(select_frames(offsets, seq_len, mode="event", excess=excess),
                                  reference_selection(offsets, excess, seq_len))


@settings(max_examples=60, deadline=None)
@given(objects_with_events(), st.integers(1, 12), st.sampled_from([0.25, 0.5, 2.0, 8.0]), st.integers(-100, 100))
def test_the_choice_does_not_depend_on_a_band_s_units(data, seq_len, scale, shift):
    frames, band_ids, offsets = data
    good = np.abs(frames) <= MAX_PIXEL_MAGNITUDE
    frames = np.where(good, np.round(frames), frames)  # whole numbers: the affine map below is exact
    rescaled = frames.copy()
    in_band = (band_ids == 1)[:, None, None] & good
    rescaled[in_band] = frames[in_band] * np.float32(scale) + np.float32(shift)
    times = np.arange(frames.shape[0], dtype=np.float64)
    base = preprocess.window_sequence(frames, band_ids, times, offsets, seq_len, mode="event")
    other = preprocess.window_sequence(rescaled, band_ids, times, offsets, seq_len, mode="event")
    np.testing.assert_array_equal(base.mjd, other.mjd)  # the same frames (their times are their indices)


def test_a_past_event_is_kept_and_a_quiet_object_reads_its_latest_frames():
    rng = np.random.default_rng(1)
    frames = rng.normal(0, 1, size=(400, 32, 32)).astype(np.float32)
    band_ids = np.tile(np.arange(1, 5, dtype=np.int32), 100)
    frames[60:75, 14:19, 14:19] += 20.0  # the first object's supernova, long before its last frame
    offsets = np.array([0, 250, 400])
    selection = preprocess.select_frames(
        offsets, 99, mode="event", excess=event_excess(frames, band_ids, offsets, MAX_PIXEL_MAGNITUDE))
    np.testing.assert_array_equal(selection[0], np.arange(60, 159))  # from the brightening's first frame on
    np.testing.assert_array_equal(selection[1], np.arange(301, 400))  # quiet: the latest 99
    short = preprocess.select_frames(np.array([0, 40]), 99, mode="event", excess=np.ones(40))
    np.testing.assert_array_equal(short[0, :40], np.arange(40))
    assert (short[0, 40:] == -1).all()


def test_training_draws_are_reproducible_jittered_and_never_empty():
    rng = np.random.default_rng(2)
    excess = np.zeros(200)
    excess[50:60] = 5.0
    offsets = np.array([0, 200])
    inference = event_selection(offsets, excess, 30)
    assert inference[0, 0] == 50
    starts = []
    for seed in range(40):
        seeds = np.array([seed], dtype=np.uint64)
        draw = event_selection(offsets, excess, 30, seeds=seeds, drop_prob=0.0, jitter=5)
        np.testing.assert_array_equal(draw, event_selection(offsets, excess, 30, seeds=seeds, jitter=5))
        starts.append(int(draw[0, 0]))
        assert np.array_equal(draw[0], np.arange(draw[0, 0], draw[0, 0] + 30))
    assert min(starts) >= 45 and max(starts) <= 55 and len(set(starts)) > 3
    for seed in rng.integers(0, 2**63, size=20, dtype=np.uint64):
        draw = event_selection(np.array([0, 3]), np.zeros(3), 30, seeds=np.array([seed]), drop_prob=0.99)
        assert (draw[0] >= 0).sum() >= 1


def test_prepare_sequences_in_event_mode_equals_the_window_of_normalised_frames():
    rng = np.random.default_rng(3)
    frames = rng.normal(5, 2, size=(130, 8, 8)).astype(np.float32)
    frames[10:14, 4, 4] += 200
    band_ids = rng.integers(1, 3, size=130).astype(np.int32)
    mjd = np.arange(130, dtype=np.float64)
    offsets = np.array([0, 100, 130])
    mean, std = np.array([0.0, 5.0, 5.0]), np.array([1.0, 2.0, 2.0])
    fused = preprocess.prepare_sequences(frames, band_ids, mjd, offsets, mean, std, 21, mode="event")
    normalised, _ = preprocess.normalise_bands(frames, band_ids, mean, std)
    windowed = preprocess.window_sequence(normalised, band_ids, mjd, offsets, 21, mode="event")
    np.testing.assert_array_equal(fused.mjd, windowed.mjd)
    np.testing.assert_array_equal(fused.stamps, windowed.stamps)
    assert fused.mjd[0, 0] == 10.0


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "event"}, "needs each frame's excess"),
    ({"mode": "event", "excess": np.zeros(3)}, "excess must have shape"),
    ({"mode": "latest", "jitter": 2}, "training draws"),
    ({"mode": "random", "seeds": np.zeros(1, np.uint64), "jitter": 2}, "mode='event' only"),
    ({"mode": "window"}, "mode must be"),
])
def test_select_frames_refuses_what_the_event_window_cannot_take(kwargs, message):
    with pytest.raises(UsageError, match=message):
        select_frames(np.array([0, 5]), 2, **kwargs)


def test_a_card_names_its_window_and_inputs_follow_it(tmp_path):
    from convention_rt.catalog import Catalog
    from convention_rt.model_card import BandStats
    from convention_rt.transform import to_inputs
    from helpers import tiny_card, write_small_catalog

    stats = {band: BandStats(50.0, 5.0) for band in ("g", "r", "i")}
    latest, event = (tiny_card(bands=("g", "r", "i"), normalisation=stats, window=w) for w in ("latest", "event"))
    with Catalog(write_small_catalog(tmp_path / "c.fits", n_objects=1, epochs=20)) as catalog:
        (chunk,) = list(catalog.iter_chunks())
    frames = chunk.frames.copy()
    frames[3:5, 14:19, 14:19] += 500.0  # a brightening early in the series
    chunk = dataclasses.replace(chunk, frames=frames)
    start = chunk.mjd[3]
    assert to_inputs(chunk, latest).sequences.mjd[0, 0] == chunk.mjd[14]
    assert to_inputs(chunk, event).sequences.mjd[0, 0] == start
    with pytest.raises(ModelError, match="window 'middle' is not supported"):
        tiny_card(window="middle")
