"""Tests of convention_rt.ingest.cutouts: decoding FITS cut-outs, centre crop and padding."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.nddata import CCDData, VarianceUncertainty
from hypothesis import given, settings
from hypothesis import strategies as st

from convention_rt.errors import BadInputError
from convention_rt.ingest.cutouts import STAMP_SIZE, CutoutError, decode_image, fit_stamp, gunzip

ZTF_STAMP = Path(__file__).parent / "data" / "ztf" / "candid472263571115115000_pid472263571115_targ_sci.fits.gz"
MASK_PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "SUSPECT": 7, "NO_DATA": 8}


def fits_bytes(image: np.ndarray, *, compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    fits.PrimaryHDU(image).writeto(buffer)
    raw = buffer.getvalue()
    return gzip.compress(raw) if compress else raw


def exposure_bytes(image: np.ndarray, mask: np.ndarray, variance: np.ndarray) -> bytes:
    """An LSST Exposure-style cut-out: empty primary, then IMAGE, MASK (MP_* bits), VARIANCE."""
    mask_hdu = fits.ImageHDU(mask.astype(np.int32), name="MASK")
    for plane, bit in MASK_PLANES.items():
        key = f"MP_{plane}"
        mask_hdu.header[key if len(key) <= 8 else f"HIERARCH {key}"] = bit
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="IMAGE"), mask_hdu,
                         fits.ImageHDU(variance, name="VARIANCE")])
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def test_real_ztf_stamp_decodes_to_native_float32() -> None:
    raw = ZTF_STAMP.read_bytes()
    with pytest.warns(VerifyWarning, match="SIMPLE card"):  # the file's header quirk, silenced by decode_image
        with fits.open(io.BytesIO(gzip.decompress(raw))) as hdul:
            expected = hdul[0].data.copy()
    assert expected.dtype == np.dtype(">f4")

    image, masked = decode_image(raw)

    assert image.dtype == np.float32 and image.dtype.isnative
    assert image.shape == (63, 63) and masked == 0
    np.testing.assert_array_equal(image, expected)


def test_centre_crop_of_a_full_cutout() -> None:
    image = np.arange(63 * 63, dtype=np.float32).reshape(63, 63)
    stamp, padded = fit_stamp(image, nominal=63)
    assert stamp.shape == (STAMP_SIZE, STAMP_SIZE) and stamp.flags.c_contiguous and not padded
    np.testing.assert_array_equal(stamp, image[15:47, 15:47])
    assert stamp[16, 16] == image[31, 31]  # the source pixel stays at the stamp centre


@pytest.mark.parametrize(("side", "top"), [("low", 13), ("high", 0), ("centre", 6)])
def test_edge_cutout_is_padded_on_the_missing_side(side: str, top: int) -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(50.0, 2.0, (50, 63)).astype(np.float32)
    full = np.full((63, 63), np.median(image), dtype=np.float32)
    full[top:top + 50] = image

    stamp, padded = fit_stamp(image, nominal=63, pad_side=(side, "centre"))

    assert padded
    np.testing.assert_array_equal(stamp, full[15:47, 15:47])


def test_padding_uses_the_median_of_finite_pixels_and_keeps_nan() -> None:
    image = np.full((30, 30), 7.0, dtype=np.float32)
    image[:10] = 1.0
    image[5, 5] = np.nan
    image[20, 20] = np.inf
    stamp, padded = fit_stamp(image)
    assert padded
    assert stamp[0, 0] == 7.0 and stamp[31, 31] == 7.0
    assert np.isnan(stamp[6, 6]) and np.isinf(stamp[21, 21])
    np.testing.assert_array_equal(stamp[1:31, 1:31], image)


def test_all_nan_cutout_is_padded_with_nan() -> None:
    stamp, padded = fit_stamp(np.full((20, 40), np.nan, dtype=np.float32))
    assert padded and stamp.shape == (32, 32) and np.isnan(stamp).all()


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 80), width=st.integers(1, 80), nominal=st.sampled_from([None, 63]),
       side=st.sampled_from(["low", "high", "centre"]))
def test_fit_stamp_shape_and_crop(height: int, width: int, nominal: int | None, side: str) -> None:
    image = np.arange(height * width, dtype=np.float32).reshape(height, width)
    stamp, padded = fit_stamp(image, nominal=nominal, pad_side=(side, side))
    full = max(STAMP_SIZE, nominal or 0)
    assert stamp.shape == (STAMP_SIZE, STAMP_SIZE) and stamp.dtype == np.float32
    assert padded == (height < full or width < full)
    if not padded:
        top, left = (height - STAMP_SIZE) // 2, (width - STAMP_SIZE) // 2
        np.testing.assert_array_equal(stamp, image[top:top + STAMP_SIZE, left:left + STAMP_SIZE])
    # Every other pixel is the padding value (the median); image pixels keep their order.
    kept = stamp[stamp != np.float32(np.median(image))]
    assert np.isin(kept, image).all() and np.all(np.diff(kept) > 0)


def test_big_endian_and_integer_images_become_native_float32() -> None:
    image = np.arange(12, dtype=">i2").reshape(3, 4)
    decoded, _ = decode_image(fits_bytes(image, compress=True))
    assert decoded.dtype == np.float32 and decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, image.astype(np.float32))


def test_nan_pixels_stay_nan() -> None:
    image = np.ones((63, 63), dtype=">f4")
    image[30:40, 30:40] = np.nan
    decoded, masked = decode_image(fits_bytes(image, compress=True))
    assert np.isnan(decoded).sum() == 100 and masked == 0


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty cut-out"),
    ("not bytes", "must be bytes"),
    (gzip.compress(fits_bytes(np.ones((63, 63), np.float32)))[:200], "truncated gzip stream"),
    (b"\x1f\x8b" + bytes(range(200)), "gzip"),
    (bytes(range(256)) * 8, "not a readable FITS image"),
    (fits_bytes(np.ones((63, 63), np.float32))[:4000], "not a readable FITS image"),
    (fits_bytes(np.ones(10, np.float32)), "image must be 2-D"),
    (fits_bytes(np.ones((2, 5, 5), np.float32)), "image must be 2-D"),
])
def test_unusable_cutouts_raise(data: bytes, message: str) -> None:
    with pytest.raises(CutoutError, match=message) as info:
        decode_image(data)
    assert isinstance(info.value, BadInputError)


def test_gunzip_refuses_oversized_streams() -> None:
    with pytest.raises(CutoutError, match="more than 100 bytes"):
        gunzip(gzip.compress(bytes(1000)), limit=100)


def test_ccddata_cutout_uses_the_image_and_masks_bad_pixels() -> None:
    rng = np.random.default_rng(5)
    data = rng.normal(100.0, 3.0, (30, 30)).astype(np.float32)
    mask = np.zeros((30, 30), dtype=bool)
    mask[2, 3] = mask[10, 20] = True
    buffer = io.BytesIO()
    CCDData(data, unit="nJy", uncertainty=VarianceUncertainty(np.full((30, 30), 9.0, np.float32)),
            mask=mask).write(buffer, format="fits")

    image, masked = decode_image(buffer.getvalue())

    assert masked == 2
    assert np.isnan(image[mask]).all()
    np.testing.assert_array_equal(image[~mask], data[~mask])


def test_exposure_cutout_masks_only_the_bad_planes() -> None:
    image = np.arange(900, dtype=np.float32).reshape(30, 30)
    mask = np.zeros((30, 30), dtype=np.int32)
    bad = {(0, 0): "BAD", (1, 1): "SAT", (2, 2): "CR", (3, 3): "EDGE", (4, 4): "NO_DATA", (5, 5): "SUSPECT"}
    good = {(6, 6): "DETECTED", (7, 7): "INTRP"}
    for (row, col), plane in {**bad, **good}.items():
        mask[row, col] = 1 << MASK_PLANES[plane]
    mask[8, 8] = (1 << MASK_PLANES["DETECTED"]) | (1 << MASK_PLANES["CR"])

    decoded, masked = decode_image(exposure_bytes(image, mask, np.ones((30, 30), np.float32)))

    assert masked == len(bad) + 1
    for row, col in [*bad, (8, 8)]:
        assert np.isnan(decoded[row, col])
    for row, col in good:
        assert decoded[row, col] == image[row, col]
    assert np.isfinite(decoded).sum() == 900 - masked


def test_mask_of_another_shape_is_an_error() -> None:
    data = exposure_bytes(np.ones((30, 30), np.float32), np.zeros((29, 30), np.int32), np.ones((30, 30), np.float32))
    with pytest.raises(CutoutError, match="MASK plane has shape"):
        decode_image(data)


def test_padding_level_ignores_sentinel_pixels_like_nan() -> None:
    image = np.full((20, 20), 7.0, dtype=np.float32)
    image[:12] = 3e38  # sentinels, most of the image: bad pixels, not sky
    image[4, :3] = np.nan
    stamp, padded = fit_stamp(image, 32)
    assert padded
    assert stamp[0, 0] == 7.0 and stamp[-1, -1] == 7.0
