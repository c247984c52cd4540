"""In-graph photometry features of the tree head against the catalog reference's NumPy features."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from train.model.stamp_photometry import PHOTOMETRY_ANNULUS, PhotometryFeatures, photometry_weights  # noqa: E402
from train.model.trees import HeadFeatures, LightCurveFeatures, SceneFeatures, head_features  # noqa: E402
from train.reference.lightcurve_features import lightcurve_features  # noqa: E402

pytestmark = pytest.mark.torch

SIDE, BANDS = 32, 6


def _objects(seed: int, counts: list[int], frames: int, bands: int = BANDS):
    """Stamps of a Gaussian source whose flux rises and fades, on a sky offset and noise; frames past each
    object's count are padding (zero band id, garbage pixels)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:SIDE, :SIDE] - SIDE // 2
    psf = np.exp(-(x**2 + y**2) / (2 * rng.uniform(1.0, 2.0) ** 2))
    stamps = rng.normal(0.0, 5.0, size=(len(counts), frames, SIDE, SIDE)).astype(np.float32)  # padding: garbage
    band_ids = np.zeros((len(counts), frames), np.int64)
    times = np.zeros((len(counts), frames), np.float32)
    for b, n in enumerate(counts):
        band_ids[b, :n] = rng.integers(1, bands + 1, n)
        times[b, :n] = np.sort(60000.0 + rng.uniform(0.0, 300.0, n))
        peak = rng.uniform(60000.0, 60300.0)
        flux = rng.normal(0.0, 20.0, n) + rng.uniform(0.0, 200.0) * np.exp(-(((times[b, :n] - peak) / 25.0) ** 2))
        noise = rng.uniform(0.5, 3.0)
        stamps[b, :n] = (flux[:, None, None] * psf + rng.normal(rng.uniform(-2, 2), noise, (n, SIDE, SIDE)))
    return torch.from_numpy(stamps), torch.from_numpy(band_ids), torch.from_numpy(times)


def _numpy_features(stamps: np.ndarray, band_ids: np.ndarray, times: np.ndarray, bands: int = BANDS) -> np.ndarray:
    """Reference of :class:`PhotometryFeatures` for one object's real frames: (M, H, W), (M,), (M,) -> (K,)."""
    disc, ring = (w.numpy().astype(bool) for w in photometry_weights(stamps.shape[-1]))
    pixels = stamps.reshape(len(stamps), -1).astype(np.float64)
    background = pixels[:, ring].mean(axis=1)
    flux = pixels[:, disc].sum(axis=1) - background * disc.sum()
    scatter = pixels[:, ring].std(axis=1, ddof=1)
    error = scatter * np.sqrt(disc.sum() + disc.sum() ** 2 / ring.sum())
    band = band_ids - 1
    median = np.array([np.median(flux[band == k]) if (band == k).any() else 0.0 for k in range(bands)])
    mjd = times.astype(np.float64)
    return np.concatenate([lightcurve_features(mjd, band, flux, error, bands),
                           lightcurve_features(mjd, band, flux - median[band], error, bands)])


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), counts=st.lists(st.integers(1, 30), min_size=1, max_size=4),
       bands=st.integers(1, 6))
def test_features_are_those_of_the_reference_on_the_same_photometry(seed, counts, bands):
    stamps, band_ids, times = _objects(seed, counts, max(counts), bands)
    ours = PhotometryFeatures(SIDE, bands + 1)(stamps, band_ids, times).numpy()
    for b, n in enumerate(counts):
        theirs = _numpy_features(stamps[b, :n].numpy(), band_ids[b, :n].numpy(), times[b, :n].numpy(), bands)
        np.testing.assert_allclose(ours[b], theirs.astype(np.float32), rtol=2e-6, atol=1e-9, equal_nan=True)


def test_features_ignore_padding_and_read_channel_zero():
    features = PhotometryFeatures(SIDE, BANDS + 1)
    stamps, band_ids, times = _objects(3, [12, 20, 1], 20)
    expected = features(stamps, band_ids, times)
    noisy = stamps.clone()
    noisy[0, 12:] = 1e4
    torch.testing.assert_close(features(noisy, band_ids, times), expected, equal_nan=True)
    longer = torch.cat([stamps, torch.zeros_like(stamps[:, :5])], dim=1)
    more_bands = torch.cat([band_ids, torch.zeros_like(band_ids[:, :5])], dim=1)
    later = torch.cat([times, torch.zeros_like(times[:, :5])], dim=1)
    torch.testing.assert_close(features(longer, more_bands, later), expected, equal_nan=True)
    channels = torch.stack([stamps, torch.randn_like(stamps)], dim=2)
    torch.testing.assert_close(features(channels, band_ids, times), expected, equal_nan=True)


def test_the_flux_ignores_the_sky_level_and_its_error_is_the_scatter_of_the_flux():
    """On stamps of pure noise the fluxes scatter as much as their errors say; a sky offset changes nothing."""
    rng = np.random.default_rng(4)
    noise = rng.normal(0.0, 2.5, size=(1, 4000, SIDE, SIDE)).astype(np.float32)
    features = PhotometryFeatures(SIDE, 2)
    flux, error = features.photometry(torch.from_numpy(noise))
    shifted, shifted_error = features.photometry(torch.from_numpy(noise + np.float32(40.0)))
    torch.testing.assert_close(shifted, flux, rtol=0, atol=1e-3)
    torch.testing.assert_close(shifted_error, error, rtol=1e-4, atol=0)
    assert abs(float(flux.mean())) < 0.1 * float(flux.std())
    assert float(flux.std()) / float(error.median()) == pytest.approx(1.0, abs=0.05)


def test_a_source_on_a_difference_stamp_keeps_its_sign():
    """A difference stamp holds the object's change against the template: fainter is negative flux."""
    y, x = np.mgrid[:SIDE, :SIDE] - SIDE // 2
    psf = np.exp(-(x**2 + y**2) / (2 * 1.2**2))
    stamps = torch.from_numpy(np.stack([a * psf for a in (-30.0, 0.0, 30.0)]).astype(np.float32)[None])
    flux, _ = PhotometryFeatures(SIDE, 2).photometry(stamps)
    assert flux[0, 0] < 0 and abs(float(flux[0, 1])) < 1e-9 and flux[0, 2] == pytest.approx(-flux[0, 0])
    assert float(flux[0, 2]) == pytest.approx(30.0 * psf[np.hypot(x, y) <= 3].sum(), rel=1e-5)


def test_photometry_refuses_stamps_smaller_than_its_annulus():
    with pytest.raises(ValueError, match=f"at least {2 * PHOTOMETRY_ANNULUS[1] + 1:g} pixels, got 16"):
        PhotometryFeatures(16, 7)


def test_head_features_append_the_photometry_after_the_scene():
    stamps, band_ids, times = _objects(5, [10, 4], 10)
    state = {"scene": torch.tensor(True), "photometry": torch.tensor(True)}
    head = head_features(state, SIDE, BANDS + 1)
    light, scene, photometry = (LightCurveFeatures(SIDE, 7).width, SceneFeatures(SIDE, 7).width,
                                PhotometryFeatures(SIDE, 7).width)
    assert head.width == light + scene + photometry == 81 + 76 + 2 * (6 * 13 + 10 + 5)
    out = head(stamps, band_ids, times)
    torch.testing.assert_close(out[:, :light + scene], HeadFeatures(SIDE, 7, scene=True)(stamps, band_ids, times),
                               equal_nan=True)
    torch.testing.assert_close(out[:, light + scene:], PhotometryFeatures(SIDE, 7)(stamps, band_ids, times),
                               equal_nan=True)
    assert head_features({"scene": torch.tensor(True)}, SIDE, 7).photometry is None  # states before the option


def test_onnx_runtime_computes_the_photometry_features_bit_for_bit_as_pytorch(tmp_path):
    """Trees cut features at thresholds: a last-bit difference between the runtimes would change a branch."""
    ort = pytest.importorskip("onnxruntime")
    features = PhotometryFeatures(SIDE, BANDS + 1).eval()
    stamps, band_ids, times = _objects(6, [99] * 8 + [40] * 8 + [1] * 4 + [2] * 4, 99)
    band_ids[20:24] = torch.where(band_ids[20:24] != 0, 3, 0)  # one band
    path = tmp_path / "photometry.onnx"
    batch, frames = torch.export.Dim("batch"), torch.export.Dim("frames", max=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(features, (stamps[:2], band_ids[:2], times[:2]), str(path), dynamo=True,
                          input_names=["stamps", "band_ids", "times"],
                          dynamic_shapes=({0: batch, 1: frames},) * 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for length in (99, 40):
        feed = {"stamps": stamps[:, :length].numpy(), "band_ids": band_ids[:, :length].numpy(),
                "times": times[:, :length].numpy()}
        ours = session.run(None, feed)[0]
        np.testing.assert_array_equal(ours, features(stamps[:, :length], band_ids[:, :length],
                                                     times[:, :length]).numpy())
