"""The centred pixel grid every aperture is built on."""

import numpy as np
import pytest

from train.model.stamp_geometry import centred_offsets, centred_radius


@pytest.mark.parametrize("side", [1, 2, 7, 32, 33])
def test_offsets_and_radius_against_numpy(side: int) -> None:
    rows, columns = np.mgrid[:side, :side] - side // 2
    got_rows, got_columns = centred_offsets(side)
    assert np.array_equal(got_rows.numpy(), rows) and np.array_equal(got_columns.numpy(), columns)
    radius = centred_radius(side).numpy()
    assert radius.dtype == np.float64 and radius.shape == (side, side)
    assert radius[side // 2, side // 2] == 0.0
    np.testing.assert_allclose(radius, np.hypot(rows, columns), rtol=1e-15)
    # perfect squares are exact, so discs of integer radius have no rounding at their edge
    assert np.all(radius[(rows ** 2 + columns ** 2) == 9] == 3.0)
