"""Chunks to model inputs: band mapping, unknown bands, relative times."""

from __future__ import annotations

import numpy as np
import pytest

from convention_rt.catalog import Catalog
from convention_rt.errors import CatalogError
from convention_rt.transform import relative_times, to_inputs
from helpers import tiny_card, write_small_catalog


def test_bands_unknown_to_the_model_are_dropped_and_counted(tmp_path):
    path = write_small_catalog(tmp_path / "c.fits", n_objects=3, epochs=5)  # bands g, r, i
    card = tiny_card()  # knows g and r only
    with Catalog(path) as catalog:
        (chunk,) = list(catalog.iter_chunks())
    inputs = to_inputs(chunk, card)
    seq = inputs.sequences
    assert seq.stamps.shape == (3, 6, 32, 32)
    assert set(np.unique(seq.band_ids)) <= {0, 1, 2}
    np.testing.assert_array_equal(seq.n_frames, [4, 4, 4])  # 5 epochs, one in i
    assert all("bands_unknown_to_model=1(i)" in inputs.status(i) for i in range(3))
    assert inputs.bands_used == ["g,r"] * 3
    # normalised with the card's statistics: stamps were drawn around 50 +- 5
    g = seq.stamps[seq.band_ids == 1]
    assert abs(g.mean()) < 0.1 and abs(g.std() - 1.0) < 0.1


def test_object_with_only_unknown_bands_is_flagged(tmp_path):
    path = write_small_catalog(tmp_path / "c.fits", n_objects=2, epochs=3)
    card = tiny_card(bands=("u", "z"), normalisation={"u": tiny_card().normalisation["g"],
                                                      "z": tiny_card().normalisation["r"]})
    with Catalog(path) as catalog:
        (chunk,) = list(catalog.iter_chunks())
    inputs = to_inputs(chunk, card)
    assert inputs.invalid == ["no_frames_in_model_bands"] * 2
    assert not inputs.valid.any() and not inputs.sequences.mask.any()


def test_catalog_stamp_size_must_fit_the_model(tmp_path):
    path = write_small_catalog(tmp_path / "c.fits", n_objects=1, epochs=2, stamp_shape=(48, 48))
    with pytest.raises(CatalogError, match="stamps are 48x48, the model needs 32x32"):
        Catalog(path, stamp_size=tiny_card().stamp_size)


def test_relative_times_start_at_zero_and_are_zero_on_padding():
    mjd = np.array([[59000.5, 59001.0, 0.0], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [False, False, False]])
    np.testing.assert_array_equal(relative_times(mjd, mask), [[0.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
