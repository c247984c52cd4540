"""Early classification: objects cut to their first frames."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
from train.early import first_frames  # noqa: E402

from convention_rt.catalog import ObjectChunk  # noqa: E402

pytestmark = pytest.mark.torch


def chunk_of(counts: list[int]) -> ObjectChunk:
    n, total = len(counts), sum(counts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    frames = np.arange(total, dtype=np.float32)[:, None, None] * np.ones((1, 4, 4), np.float32)
    return ObjectChunk(object_ids=np.arange(n), ra=np.zeros(n), dec=np.zeros(n), labels=None, typing=None,
                       frames=frames, band=np.arange(total, dtype=np.int32) % 2,
                       mjd=np.arange(total, dtype=np.float64) * 1.5, n_bad=np.zeros(total, np.int32),
                       offsets=offsets, bands=("g", "r"))


@pytest.mark.parametrize("keep", [1, 2, 3, 10])
def test_first_frames_keeps_each_object_s_earliest_frames(keep: int) -> None:
    counts = [3, 1, 0, 5]
    chunk = chunk_of(counts)
    cut = first_frames(chunk, keep)
    expected_rows = np.concatenate([np.arange(start, start + min(count, keep))
                                    for start, count in zip(chunk.offsets[:-1], counts)])
    np.testing.assert_array_equal(np.diff(cut.offsets), np.minimum(counts, keep))
    np.testing.assert_array_equal(cut.frames[:, 0, 0], expected_rows)
    np.testing.assert_array_equal(cut.mjd, chunk.mjd[expected_rows])
    np.testing.assert_array_equal(cut.band, chunk.band[expected_rows])
    assert cut.frames.shape[0] == cut.offsets[-1] == cut.n_bad.size
    np.testing.assert_array_equal(cut.object_ids, chunk.object_ids)


def test_first_frames_refuses_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        first_frames(chunk_of([2]), 0)


def test_random_prefixes_cut_the_chosen_share_log_uniformly() -> None:
    from train.early import random_prefixes

    counts = [100] * 4000
    chunk = chunk_of(counts)
    cut = random_prefixes(chunk, np.random.default_rng(0), 0.5)
    kept = np.diff(cut.offsets)
    assert 1 <= kept.min() and kept.max() == 100
    shortened = kept < 100
    assert abs(shortened.mean() - 0.5) < 0.03
    # log-uniform: about as many prefixes of 1-9 frames as of 10-99
    short, long = np.sum(kept[shortened] < 10), np.sum((kept[shortened] >= 10) & (kept[shortened] < 100))
    assert 0.7 < short / long < 1.4
    first_rows = cut.frames[cut.offsets[:-1], 0, 0]
    np.testing.assert_array_equal(first_rows, chunk.frames[chunk.offsets[:-1], 0, 0])  # prefixes, not windows
    untouched = random_prefixes(chunk, np.random.default_rng(0), 0.0)
    np.testing.assert_array_equal(untouched.offsets, chunk.offsets)
