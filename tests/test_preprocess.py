"""The compiled kernels against their NumPy references, and the wrappers' checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import preprocess_reference as ref
from convention_rt import _preprocess, preprocess
from convention_rt.errors import UsageError

# The bound on pixel magnitudes seen from float32: 1e15 itself is not a float32, the nearest one
# (999999986991104) lies below it and is a good pixel, as is the one before it; the next one up is
# the first float32 beyond 1e15, a bad pixel.
AT_BOUND = np.float32(1e15)
BELOW_BOUND = np.nextafter(AT_BOUND, np.float32(0))
ABOVE_BOUND = np.nextafter(AT_BOUND, np.float32(np.inf))
FLT_MAX = np.finfo(np.float32).max
# Bad in every way but NaN: infinities, sentinels that pipelines write, the bound's first neighbour out.
SENTINELS = [np.inf, -np.inf, ABOVE_BOUND, -ABOVE_BOUND, 2e15, -2e15, -1e30, 1e37, 3e38, -3e38, FLT_MAX]
EDGE_GOOD = [AT_BOUND, -AT_BOUND, BELOW_BOUND, -BELOW_BOUND]  # extreme but good pixels
SPECIALS = [np.nan, *SENTINELS, *EDGE_GOOD]

# Stamp shapes: H * W a multiple of 4 takes the SSE2 loop of the normalisation kernel (with a 16-byte
# aligned output), any other the scalar loop; 32x32 is the stamp of the shipped models.
SHAPES = st.one_of(st.tuples(st.integers(0, 5), st.integers(0, 5)), st.just((32, 32)), st.just((4, 4)))


@st.composite
def ragged_frames(draw, max_objects=6, max_count=9, n_bands=4):
    """Random ragged frames with bad and extreme pixels sprinkled in, including empty objects and stamps."""
    counts = draw(st.lists(st.integers(0, max_count), min_size=0, max_size=max_objects))
    height, width = draw(SHAPES)
    n = int(sum(counts))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    frames = rng.normal(draw(st.floats(-100, 100)), draw(st.floats(0.01, 50)),
                        size=(n, height, width)).astype(np.float32)
    if frames.size:
        bad_fraction = draw(st.sampled_from([0.0, 0.05, 0.6, 1.0]))
        bad = rng.random(frames.shape) < bad_fraction
        frames[bad] = rng.choice(SPECIALS, size=int(bad.sum()))
    band_ids = rng.integers(1, n_bands, size=n).astype(np.int32)
    mjd = np.round(rng.uniform(0, 50, size=n), 1)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    seeds = rng.integers(0, 2**63, size=len(counts), dtype=np.uint64)
    return frames, band_ids, mjd, offsets, seeds


STATS_MEAN = np.array([0.0, 10.0, -3.0, 0.5])
STATS_STD = np.array([1.0, 2.0, 0.25, 30.0])


def buffers_at(n_objects, seq_len, height, width, *, misaligned):
    """Output buffers for prepare_sequences whose stamps start 16-byte aligned, or 4 bytes past.

    Aligned (and H * W a multiple of 4), every slot is normalised by the SSE2 loop on x86;
    misaligned, every slot by the scalar loop: the same inputs through both paths.
    """
    buffers = preprocess.allocate_sequences(n_objects, seq_len, height, width)
    nbytes = buffers.stamps.nbytes
    raw = np.empty(nbytes + 32, dtype=np.uint8)
    start = (-raw.ctypes.data) % 16 + (4 if misaligned else 0)
    stamps = raw[start:start + nbytes].view(np.float32).reshape(buffers.stamps.shape)
    assert nbytes == 0 or stamps.ctypes.data % 16 == (4 if misaligned else 0)
    return dataclasses.replace(buffers, stamps=stamps)


@settings(max_examples=150, deadline=None)
@given(ragged_frames())
def test_count_bad_pixels_matches_reference(data):
    frames = data[0]
    np.testing.assert_array_equal(preprocess.count_bad_pixels(frames), ref.count_bad_pixels(frames))


@settings(max_examples=150, deadline=None)
@given(ragged_frames())
def test_normalise_bands_matches_reference(data):
    frames, band_ids, *_ = data
    out, n_bad = preprocess.normalise_bands(frames, band_ids, STATS_MEAN, STATS_STD)
    expected, expected_bad = ref.normalise_bands(frames, band_ids, STATS_MEAN, STATS_STD)
    np.testing.assert_array_equal(n_bad, expected_bad)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    assert np.all(np.isfinite(out))


@settings(max_examples=150, deadline=None)
@given(ragged_frames(), st.integers(1, 7), st.sampled_from(["latest", "random"]),
       st.sampled_from([0.0, 0.3, 0.9]))
def test_window_sequence_matches_reference(data, seq_len, mode, drop_prob):
    frames, band_ids, mjd, offsets, seeds = data
    if mode == "latest":
        drop_prob = 0.0
    got = preprocess.window_sequence(frames, band_ids, mjd, offsets, seq_len, mode=mode,
                                     seeds=seeds, drop_prob=drop_prob)
    stamps, bands, times, mask = ref.window_sequence(frames, band_ids, mjd, offsets, seq_len,
                                                     mode, seeds, drop_prob)
    np.testing.assert_array_equal(got.band_ids, bands)
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_array_equal(got.mjd, times)
    np.testing.assert_array_equal(got.stamps, stamps)  # copies: bit-identical, NaN included
    assert got.stamps.shape == (len(offsets) - 1, seq_len) + frames.shape[1:]


@settings(max_examples=150, deadline=None)
@given(ragged_frames(), st.integers(1, 7), st.sampled_from(["latest", "random"]),
       st.sampled_from([0.0, 0.5]), st.booleans())
def test_prepare_sequences_equals_window_of_normalised(data, seq_len, mode, drop_prob, misaligned):
    frames, band_ids, mjd, offsets, seeds = data
    if mode == "latest":
        drop_prob = 0.0
    out = buffers_at(len(offsets) - 1, seq_len, *frames.shape[1:], misaligned=misaligned)
    got = preprocess.prepare_sequences(frames, band_ids, mjd, offsets, STATS_MEAN, STATS_STD,
                                       seq_len, mode=mode, seeds=seeds, drop_prob=drop_prob, out=out)
    assert got is out
    stamps, bands, times, mask, n_bad = ref.prepare_sequences(
        frames, band_ids, mjd, offsets, STATS_MEAN, STATS_STD, seq_len, mode, seeds, drop_prob)
    np.testing.assert_array_equal(got.band_ids, bands)
    np.testing.assert_array_equal(got.mask, mask)
    np.testing.assert_array_equal(got.mjd, times)
    np.testing.assert_array_equal(got.n_bad, n_bad)
    np.testing.assert_allclose(got.stamps, stamps, rtol=1e-6, atol=1e-6)


@st.composite
def ragged_cubes(draw):
    counts = draw(st.lists(st.integers(0, 5), min_size=0, max_size=5))
    n_planes = draw(st.integers(1, 4))
    side = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = int(sum(counts))
    cubes = rng.normal(size=(n, n_planes, side, side)).astype(np.float32)
    missing = rng.random((n, n_planes)) < 0.3
    fill = rng.choice([np.nan, np.inf, -1e30, 3e38, ABOVE_BOUND], size=(n, n_planes))
    cubes[missing] = fill[missing][:, None, None]  # missing planes filled with NaN or a sentinel
    stray = rng.random(cubes.shape) < 0.05
    cubes[stray] = rng.choice(SPECIALS, size=int(stray.sum()))  # stray bad pixels keep a plane
    present = rng.random((n, n_planes)) > 0.2  # absent planes
    mjd = rng.integers(0, 6, size=n).astype(np.float64)  # ties test the stable order
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return cubes, mjd, offsets, present


@settings(max_examples=200, deadline=None)
@given(ragged_cubes())
def test_separate_bands_matches_reference(data):
    cubes, mjd, offsets, present = data
    got = preprocess.separate_bands(cubes, mjd, offsets, present)
    frames, plane, times, new_offsets = ref.separate_bands(cubes, mjd, offsets, present)
    np.testing.assert_array_equal(got.offsets, new_offsets)
    np.testing.assert_array_equal(got.plane, plane)
    np.testing.assert_array_equal(got.mjd, times)
    np.testing.assert_array_equal(got.frames, frames)


def test_latest_window_keeps_the_most_recent_frames_and_pads_at_the_end():
    frames = np.arange(7 * 4, dtype=np.float32).reshape(7, 2, 2)
    out = preprocess.window_sequence(frames, np.full(7, 2), np.arange(7.0), [0, 5, 7], 3)
    np.testing.assert_array_equal(out.mjd, [[2, 3, 4], [5, 6, 0]])
    np.testing.assert_array_equal(out.band_ids, [[2, 2, 2], [2, 2, 0]])
    np.testing.assert_array_equal(out.mask, [[True] * 3, [True, True, False]])
    assert not out.stamps[1, 2].any()
    np.testing.assert_array_equal(out.n_frames, [3, 2])


def test_random_window_is_reproducible_and_seed_dependent():
    rng = np.random.default_rng(1)
    frames = rng.normal(size=(200, 4, 4)).astype(np.float32)
    args = (frames, np.ones(200, dtype=np.int32), np.arange(200.0), [0, 200], 10)
    first = preprocess.window_sequence(*args, mode="random", seeds=[7], drop_prob=0.2)
    again = preprocess.window_sequence(*args, mode="random", seeds=[7], drop_prob=0.2)
    other = preprocess.window_sequence(*args, mode="random", seeds=[8], drop_prob=0.2)
    np.testing.assert_array_equal(first.mjd, again.mjd)
    assert not np.array_equal(first.mjd, other.mjd)
    assert np.all(np.diff(first.mjd[0]) > 0)  # still time-ordered


def test_random_drops_never_empty_an_object():
    out = preprocess.window_sequence(np.zeros((3, 2, 2)), np.ones(3, dtype=int), np.arange(3.0), [0, 3], 5,
                                     mode="random", seeds=[123], drop_prob=0.999)
    assert out.mask.sum() >= 1


def test_bad_pixels_take_the_frame_median_before_normalisation():
    frame = np.array([[[1.0, 2.0], [np.nan, 4.0]]], dtype=np.float32)
    out, n_bad = preprocess.normalise_bands(frame, [1], [0.0, 1.0], [1.0, 2.0])
    assert n_bad.tolist() == [1]
    np.testing.assert_allclose(out[0, 1, 0], (2.0 - 1.0) / 2.0)
    all_bad = np.full((1, 2, 2), np.inf, dtype=np.float32)
    out, _ = preprocess.normalise_bands(all_bad, [1], [0.0, 1.0], [1.0, 2.0])
    assert np.all(out == 0.0)  # no finite pixel: the band mean, i.e. zero after normalisation


def test_big_endian_and_non_contiguous_inputs_are_converted():
    rng = np.random.default_rng(3)
    frames = rng.normal(size=(6, 4, 4)).astype(">f4")[::2]  # big-endian and strided
    out, _ = preprocess.normalise_bands(frames, [1, 2, 3], STATS_MEAN, STATS_STD)
    expected, _ = ref.normalise_bands(frames.astype(np.float32), np.array([1, 2, 3]), STATS_MEAN, STATS_STD)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: preprocess.normalise_bands(np.zeros((2, 3, 3)), [1, 4], STATS_MEAN, STATS_STD),
         "band_ids must lie in"),
        (lambda: preprocess.normalise_bands(np.zeros((2, 3, 3)), [1, -1], STATS_MEAN, STATS_STD),
         "band_ids must lie in"),
        (lambda: preprocess.normalise_bands(np.zeros((2, 3)), [1, 1], STATS_MEAN, STATS_STD),
         "3 dimensions"),
        (lambda: preprocess.normalise_bands(np.zeros((2, 3, 3)), [1], STATS_MEAN, STATS_STD),
         "one id per frame"),
        (lambda: preprocess.normalise_bands(np.zeros((1, 3, 3)), [1], [0, 0], [1, 0]),
         "std finite and positive"),
        (lambda: preprocess.normalise_bands(np.zeros((1, 3, 3), dtype=complex), [1], [0, 0], [1, 1]),
         "float32-compatible"),
        (lambda: preprocess.window_sequence(np.zeros((4, 2, 2)), np.ones(4, dtype=int), np.zeros(4), [0, 5], 3),
         "offsets must lie within"),
        (lambda: preprocess.window_sequence(np.zeros((4, 2, 2)), np.ones(4, dtype=int), np.zeros(4), [0, 3, 2], 3),
         "non-decreasing"),
        (lambda: preprocess.window_sequence(np.zeros((4, 2, 2)), np.ones(4, dtype=int), np.zeros(4), [0, 4], 0),
         "seq_len must be at least 1"),
        (lambda: preprocess.window_sequence(np.zeros((4, 2, 2)), np.ones(4, dtype=int), np.zeros(4), [0, 4], 2,
                                            mode="random"), "one seed per object"),
        (lambda: preprocess.window_sequence(np.zeros((4, 2, 2)), np.ones(4, dtype=int), np.zeros(4), [0, 4], 2,
                                            mode="random", seeds=[1], drop_prob=1.0), "drop_prob"),
        (lambda: preprocess.window_sequence(np.zeros((4, 2, 2)), np.ones(4, dtype=int), np.zeros(4), [0, 4], 2,
                                            mode="sideways"), "mode must be"),
        (lambda: preprocess.separate_bands(np.zeros((2, 3, 2, 2)), np.zeros(2), [0, 2],
                                           present=np.ones((2, 2))), "present must have shape"),
        (lambda: preprocess.separate_bands(np.zeros((2, 3, 2, 2)), np.zeros(3), [0, 2]), "3 entries"),
    ],
)
def test_wrappers_refuse_what_the_kernels_cannot_take(call, message):
    with pytest.raises(UsageError, match=message):
        call()



def test_the_bound_is_read_from_the_kernels_and_is_the_documented_one():
    assert preprocess.MAX_PIXEL_MAGNITUDE == _preprocess.MAX_PIXEL_MAGNITUDE == ref.MAX_PIXEL_MAGNITUDE == 1e15
    assert BELOW_BOUND < AT_BOUND <= 1e15 < ABOVE_BOUND


EDGES = [(AT_BOUND, False), (-AT_BOUND, False), (BELOW_BOUND, False), (-BELOW_BOUND, False),
         (ABOVE_BOUND, True), (-ABOVE_BOUND, True), (np.inf, True), (-np.inf, True), (np.nan, True),
         (FLT_MAX, True), (-1e30, True), (0.0, False)]


@pytest.mark.parametrize("shape", [(3, 3), (4, 4), (32, 32)], ids=["scalar", "sse2-4x4", "sse2-32x32"])
@pytest.mark.parametrize(("value", "bad"), EDGES, ids=[repr(float(v)) for v, _ in EDGES])
def test_pixels_up_to_the_bound_are_good_and_beyond_it_bad(value, bad, shape):
    frames = np.full((2, *shape), 5.0, dtype=np.float32)
    frames[:, 1, 2] = value
    frames[1, 0, 0] = np.nan  # a second frame with a NaN besides
    expected_bad = [int(bad), int(bad) + 1]
    np.testing.assert_array_equal(preprocess.count_bad_pixels(frames), expected_bad)
    mean, std = [0.0, 1.0], [1.0, 2.0]
    scaled = np.float32((np.float32(value) - np.float32(1.0)) * np.float32(0.5))
    expected = np.full_like(frames, (5.0 - 1.0) / 2.0)
    expected[:, 1, 2] = 2.0 if bad else scaled
    normalised, n_bad = preprocess.normalise_bands(frames, [1, 1], mean, std)
    np.testing.assert_array_equal(n_bad, expected_bad)
    np.testing.assert_array_equal(normalised, expected)
    for misaligned in (False, True):
        out = buffers_at(1, 3, *shape, misaligned=misaligned)
        got = preprocess.prepare_sequences(frames, [1, 1], [0.0, 1.0], [0, 2], mean, std, 3, out=out)
        np.testing.assert_array_equal(got.n_bad, [expected_bad + [0]])
        np.testing.assert_array_equal(got.stamps[0, :2], expected)
    # A plane of nothing but this value is a missing band exactly when the value is bad.
    cubes = np.stack([frames[:1], np.full((1, *shape), value, dtype=np.float32)], axis=1)
    separated = preprocess.separate_bands(cubes, [0.0], [0, 1])
    assert separated.plane.tolist() == ([0] if bad else [0, 1])


@st.composite
def frames_with_sentinels(draw):
    """Ragged frames with sentinels (inf included) at some good pixels, the same frames with NaN there,
    and output buffers that take the SSE2 or the scalar path."""
    frames, band_ids, mjd, offsets, seeds = draw(ragged_frames())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    fraction = draw(st.sampled_from([0.0, 0.02, 0.3, 0.6, 1.0]))
    hit = (rng.random(frames.shape) < fraction) & ~ref.is_bad(frames)
    with_sentinels = frames.copy()
    with_sentinels[hit] = rng.choice(SENTINELS, size=int(hit.sum()))
    with_nan = frames.copy()
    with_nan[hit] = np.nan
    return with_sentinels, with_nan, band_ids, mjd, offsets, seeds, draw(st.booleans())


@settings(max_examples=150, deadline=None)
@given(frames_with_sentinels())
def test_sentinel_pixels_are_counted_and_replaced_as_nan(data):
    with_sentinels, with_nan, band_ids, *_ = data
    counted = preprocess.count_bad_pixels(with_sentinels)
    np.testing.assert_array_equal(counted, preprocess.count_bad_pixels(with_nan))
    np.testing.assert_array_equal(counted, ref.count_bad_pixels(with_nan))
    got, got_bad = preprocess.normalise_bands(with_sentinels, band_ids, STATS_MEAN, STATS_STD)
    expected, expected_bad = preprocess.normalise_bands(with_nan, band_ids, STATS_MEAN, STATS_STD)
    np.testing.assert_array_equal(got_bad, expected_bad)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got_bad, counted)
    assert np.isfinite(got).all()


@settings(max_examples=150, deadline=None)
@given(frames_with_sentinels(), st.integers(1, 7), st.sampled_from(["latest", "random"]))
def test_prepare_sequences_replaces_sentinel_pixels_as_nan(data, seq_len, mode):
    with_sentinels, with_nan, band_ids, mjd, offsets, seeds, misaligned = data
    args = (band_ids, mjd, offsets, STATS_MEAN, STATS_STD, seq_len)
    options = {"mode": mode, "seeds": seeds, "drop_prob": 0.5 if mode == "random" else 0.0}
    shape = (len(offsets) - 1, seq_len, *with_nan.shape[1:])
    got = preprocess.prepare_sequences(with_sentinels, *args, **options,
                                       out=buffers_at(*shape, misaligned=misaligned))
    # NaN through the other path: both paths agree, whichever the sentinels take.
    expected = preprocess.prepare_sequences(with_nan, *args, **options,
                                            out=buffers_at(*shape, misaligned=not misaligned))
    np.testing.assert_array_equal(got.n_bad, expected.n_bad)
    np.testing.assert_array_equal(got.stamps, expected.stamps)
    np.testing.assert_array_equal(got.mask, expected.mask)
    assert np.isfinite(got.stamps).all()


@settings(max_examples=100, deadline=None)
@given(ragged_cubes())
def test_planes_of_sentinels_are_missing_bands_as_planes_of_nan(data):
    cubes, mjd, offsets, present = data
    as_nan = np.where(ref.is_bad(cubes), np.float32(np.nan), cubes)
    got = preprocess.separate_bands(cubes, mjd, offsets, present)
    expected = preprocess.separate_bands(as_nan, mjd, offsets, present)
    np.testing.assert_array_equal(got.offsets, expected.offsets)
    np.testing.assert_array_equal(got.plane, expected.plane)
    np.testing.assert_array_equal(got.mjd, expected.mjd)
    np.testing.assert_array_equal(np.where(ref.is_bad(got.frames), np.nan, got.frames), expected.frames)
