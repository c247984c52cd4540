"""Tests of the light-curve branch (``lightcurve_summary=L``): aperture fluxes of difference stamps, summarised."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import (  # noqa: E402
    assert_cost_is_the_flop_counters,
    assert_export_matches_pytorch,
    assert_logits_follow_real_frames_only,
    randomise_norms,
    tiny_config,
    with_padding,
)
from train.model import ConvEntion, example_inputs, get_preset, measure  # noqa: E402
from train.model.convention import LightCurveSummary  # noqa: E402

pytestmark = pytest.mark.torch


def features_by_loop(summary: LightCurveSummary, stamps: np.ndarray, band_ids: np.ndarray,
                     times: np.ndarray) -> np.ndarray:
    """NumPy reference of the features that enter the Linear layer, one object and one band at a time."""
    apertures = summary.aperture.detach().numpy().astype(np.float64)
    n_bands = summary.reference.bands.numel()
    rows = []
    for row in range(stamps.shape[0]):
        real = np.flatnonzero(band_ids[row] != 0)
        flux = np.zeros((stamps.shape[1], apertures.shape[0]))
        for m in real:
            same = [j for j in real if band_ids[row, j] == band_ids[row, m]]
            difference = stamps[row, m] - stamps[row, same].mean(axis=0)
            flux[m] = np.arcsinh([(difference * plane).sum() for plane in apertures])
        days = np.zeros(stamps.shape[1])
        if real.size:
            days[real] = times[row, real] - times[row, real].min()
        brightest = days[real[np.argmax(flux[real, 0])]] if real.size else 0.0
        high, low, mean, lag = [], [], [], []
        for band in range(1, n_bands + 1):
            frames = [m for m in real if band_ids[row, m] == band]
            if frames:
                high.append(flux[frames].max(axis=0))
                low.append(flux[frames].min(axis=0))
                mean.append(flux[frames].mean(axis=0))
                lag.append((days[frames[int(np.argmax(flux[frames, 0]))]] - brightest) / 100.0)
            else:
                high.append(np.zeros(apertures.shape[0]))
                low.append(np.zeros(apertures.shape[0]))
                mean.append(np.zeros(apertures.shape[0]))
                lag.append(0.0)
        last = days.max() if real.size else 0.0
        overall = [brightest / 100.0, (last - brightest) / 100.0, math.log1p(real.size) / 5.0]
        rows.append(np.concatenate([np.ravel(high), np.ravel(low), np.ravel(mean), lag, overall]))
    return np.array(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_features_equal_a_loop_over_objects_bands_and_frames(seed: int) -> None:
    torch.manual_seed(seed)
    config = tiny_config(lightcurve_summary=5)
    summary = LightCurveSummary(config).eval()
    with torch.no_grad():
        summary.aperture.add_(0.01 * torch.randn_like(summary.aperture))  # any learnt apertures
    stamps, band_ids, times = example_inputs(config, 3, seed=seed)
    band_ids = with_padding(band_ids, [1, 7, config.seq_len])
    stamps = stamps * (band_ids != 0)[:, :, None, None]
    expected = features_by_loop(summary, stamps.double().numpy(), band_ids.numpy(), times.double().numpy())
    with torch.no_grad():
        logits = summary(stamps, band_ids, times)
        reference = torch.tanh(summary.project(torch.from_numpy(expected).float()))
    torch.testing.assert_close(logits, reference, atol=2e-5, rtol=2e-5)


def test_apertures_start_as_unit_sum_discs_and_an_annulus_around_the_centre() -> None:
    config = tiny_config(lightcurve_summary=2, stamp_size=32)
    aperture = LightCurveSummary(config).aperture.detach()
    torch.testing.assert_close(aperture.sum(dim=(1, 2)), torch.ones(4))
    assert aperture[0, 16, 16] > 0 and aperture[3, 16, 16] == 0 and aperture[3, 16, 24] > 0
    assert (aperture[2] > 0).sum() > (aperture[1] > 0).sum() > (aperture[0] > 0).sum()


def test_a_transient_at_the_centre_moves_the_peak_features_of_its_band_only() -> None:
    config = tiny_config(lightcurve_summary=3)
    summary = LightCurveSummary(config).eval()
    stamps = torch.zeros(1, config.seq_len, config.stamp_size, config.stamp_size)
    band_ids = torch.tensor([[1, 2] * (config.seq_len // 2)])
    times = torch.arange(config.seq_len, dtype=torch.float32)[None] + 60000.0
    flare = stamps.clone()
    flare[0, 4, config.stamp_size // 2, config.stamp_size // 2] = 50.0  # frame 4 is band 1
    captured = {}
    summary.project.register_forward_hook(lambda module, inputs, output: captured.setdefault("x", []).append(inputs[0]))
    with torch.no_grad():
        summary(stamps, band_ids, times)
        summary(flare, band_ids, times)
    quiet, bright = captured["x"]
    bands, apertures = config.n_band_ids - 1, LightCurveSummary.apertures
    high = (bright - quiet)[0, :bands * apertures].view(bands, apertures)
    assert high[0, 0] > 0 and torch.all(high[1:] == 0)
    assert bright[0, -3] == pytest.approx(4 / 100.0)  # days from the first frame to the brightest


@pytest.mark.parametrize("make", [lambda: tiny_config(lightcurve_summary=4, scene_summary=3, difference_channel=True),
                                  lambda: tiny_config(lightcurve_summary=4),
                                  lambda: replace(get_preset("broker"), scene_summary=32, lightcurve_summary=32)])
def test_cut_sequences_the_loop_and_the_exported_copy_give_the_same_logits(make) -> None:
    torch.manual_seed(0)
    assert_logits_follow_real_frames_only(randomise_norms(ConvEntion(make())))


def test_gradients_are_finite_with_absent_bands_and_padding() -> None:
    torch.manual_seed(0)
    config = tiny_config(lightcurve_summary=4)
    model = ConvEntion(config)
    stamps, band_ids, times = example_inputs(config, 2, seed=5)
    band_ids = with_padding(torch.ones_like(band_ids), [2, config.seq_len])  # one band only
    model(stamps, band_ids, times).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_broker_with_both_branches_fits_three_members_in_a_quarter_gmac() -> None:
    model = ConvEntion(replace(get_preset("broker"), scene_summary=32, lightcurve_summary=32))
    assert 3 * assert_cost_is_the_flop_counters(model) <= 250_000_000
    assert "lightcurve" in {s.name for s in measure(model).stages}


@pytest.mark.parametrize("changes", [{"lightcurve_summary": -1},
                                     {"lightcurve_summary": 4, "band_input": "stacked", "band_embedding": False}])
def test_bad_lightcurve_settings_are_refused(changes: dict) -> None:
    with pytest.raises(ValueError, match="lightcurve_summary"):
        replace(tiny_config(), **changes)


@pytest.mark.slow
def test_exported_graph_reproduces_pytorch_at_every_length(tmp_path) -> None:
    config = tiny_config(lightcurve_summary=4, scene_summary=3, recency_summary=3, difference_channel=True,
                         norm_affine="channel")
    assert_export_matches_pytorch(config, tmp_path / "lightcurve", [2, config.stem_window + 1, 4 * config.stem_window],
                                  seed=7)
