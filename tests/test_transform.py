"""The transform stage: the same object gives the same status whatever the catalog layout."""

from __future__ import annotations

import numpy as np
import pytest

from convention_rt.chunks import EpochChunk
from convention_rt.status import ObjectStatus, format_status
from convention_rt.transform import to_frames

BANDS = ("g", "r")
SIDE = 32


def _epochs(layout: str, stamps: np.ndarray, mjd: np.ndarray, band: np.ndarray | None) -> EpochChunk:
    return EpochChunk(object_ids=np.array([7]), ra=np.full(1, np.nan), dec=np.full(1, np.nan), labels=None,
                      typing=None, layout=layout, stamps=np.ascontiguousarray(stamps, dtype=np.float32),
                      band=band, unknown_bands=(), present=None, mjd=np.asarray(mjd, dtype=np.float64),
                      offsets=np.array([0, mjd.size], dtype=np.int64), bands=BANDS, statuses=[ObjectStatus()])


def _one_object(plane_at_fault: str) -> tuple[np.ndarray, np.ndarray]:
    """Cubes (3 epochs, 2 bands) out of time order, one plane bad (``all`` its pixels or ``most`` of them)."""
    rng = np.random.default_rng(0)
    cubes = rng.normal(50.0, 5.0, size=(3, 2, SIDE, SIDE)).astype(np.float32)
    cubes[0, 0, 0, :4] = np.nan  # a few bad pixels in a frame kept
    if plane_at_fault == "all":
        cubes[1, 1] = np.nan
    else:
        cubes[1, 1, : SIDE * 3 // 4] = np.nan  # three quarters of the plane
    return cubes, np.array([59003.0, 59001.0, 59002.0])


def _as_frames(cubes: np.ndarray, mjd: np.ndarray, skip_all_bad: bool) -> EpochChunk:
    """The same epochs, one row per (epoch, band); an all-bad plane is a missing band: no row."""
    rows = [(e, b) for e in range(cubes.shape[0]) for b in range(cubes.shape[1])
            if not (skip_all_bad and np.isnan(cubes[e, b]).all())]
    stamps = np.stack([cubes[e, b] for e, b in rows])
    return _epochs("FRAMES", stamps, mjd[[e for e, _ in rows]], np.array([b for _, b in rows], dtype=np.int32))


@pytest.mark.parametrize("plane_at_fault", ["all", "most"])
def test_cubes_and_frames_of_the_same_object_give_the_same_status(plane_at_fault):
    cubes, mjd = _one_object(plane_at_fault)
    from_cubes = to_frames(_epochs("CUBES", cubes, mjd, None))
    from_frames = to_frames(_as_frames(cubes, mjd, skip_all_bad=True))
    status = format_status(from_cubes.statuses[0])
    assert status == format_status(from_frames.statuses[0])
    if plane_at_fault == "all":  # a missing band: dropped, not counted
        assert status == "ok;epochs_sorted_by_time;bad_pixels=4"
    else:
        assert status == f"ok;epochs_sorted_by_time;bad_pixels={4 + SIDE * SIDE * 3 // 4};mostly_bad_frames_dropped=1"
    np.testing.assert_array_equal(from_cubes.mjd, from_frames.mjd)
    np.testing.assert_array_equal(from_cubes.band, from_frames.band)
    np.testing.assert_array_equal(from_cubes.frames, from_frames.frames)


def test_an_all_bad_row_of_the_frames_layout_is_a_bad_frame():
    cubes, mjd = _one_object("all")
    status = format_status(to_frames(_as_frames(cubes, mjd, skip_all_bad=False)).statuses[0])
    assert status == f"ok;epochs_sorted_by_time;bad_pixels={4 + SIDE * SIDE};mostly_bad_frames_dropped=1"
