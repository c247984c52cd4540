"""Tests of train.data.render: PSF, noise level, host galaxies, neighbours, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import least_squares

from train.data.render import (
    RenderConfig,
    draw_host,
    draw_neighbours,
    draw_seeing,
    galactic_latitude,
    noise_flux_error,
    psf_flux,
    render,
)

LSST_WAVELENGTH = np.array([3671.0, 4827.0, 6223.0, 7546.0, 8691.0, 9712.0])


def _moffat_fwhm(stamp: np.ndarray, beta: float) -> float:
    """FWHM (pixels) of a Moffat of known beta fitted to a stamp by least squares."""
    y, x = np.mgrid[: stamp.shape[0], : stamp.shape[1]]
    scale = 2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0)

    def residual(p: np.ndarray) -> np.ndarray:
        amplitude, x0, y0, fwhm = p
        return (amplitude * (1.0 + ((x - x0) ** 2 + (y - y0) ** 2) / (fwhm / scale) ** 2) ** -beta - stamp).ravel()

    start = [stamp.max(), stamp.shape[1] / 2, stamp.shape[0] / 2, 4.0]
    return float(least_squares(residual, start).x[3])


def test_psf_is_the_pixel_integrated_moffat():
    config = RenderConfig(jitter=0.0)
    out = render(np.ones(1), np.ones(1), np.zeros(1, int), np.array([0.8]), config=config,
                 rng=np.random.default_rng(0))
    alpha = 0.8 / config.pixel_scale / (2.0 * math.sqrt(2.0 ** (1.0 / config.moffat_beta) - 1.0))
    fine = 11
    centres = (np.arange(32 * fine) + 0.5) / fine - 0.5 - 16
    r2 = centres[None, :] ** 2 + centres[:, None] ** 2
    beta = config.moffat_beta
    direct = (beta - 1) / (math.pi * alpha**2) * (1 + r2 / alpha**2) ** -beta
    direct = direct.reshape(32, fine, 32, fine).mean(axis=(1, 3))
    assert np.unravel_index(out.psf[0].argmax(), (32, 32)) == (16, 16)
    assert np.max(np.abs(out.psf[0] - direct)) < 1e-3 * direct.max()


def test_fwhm_on_rendered_stamps_matches_drawn_seeing():
    config = RenderConfig()
    fwhm = np.linspace(0.5, 1.6, 12)
    out = render(np.full(12, 2e5), np.full(12, 20.0), np.zeros(12, int), fwhm, config=config,
                 rng=np.random.default_rng(1))
    measured = np.array([_moffat_fwhm(s.astype(np.float64), config.moffat_beta) for s in out.stamps])
    ratio = measured * config.pixel_scale / fwhm
    assert np.all(np.abs(ratio - 1.0) < 0.05), ratio


@pytest.mark.parametrize("pixel_scale, gain", [(0.2, 0.015), (0.396, 0.3), (1.01, 0.5)])
def test_measured_flux_error_matches_target(pixel_scale, gain):
    rng = np.random.default_rng(2)
    config = RenderConfig(pixel_scale=pixel_scale, gain=gain, star_density=30.0)
    count = 400
    flux = np.exp(rng.uniform(0.0, np.log(5e4), count))  # faint to photon-noise dominated
    flux_err = np.sqrt(rng.uniform(2.0, 20.0, count) ** 2 + gain * flux)
    band = rng.integers(0, 6, count)
    fwhm = rng.uniform(0.6, 2.5, count)
    host = draw_host(rng, z=0.1, wavelength=LSST_WAVELENGTH, centred=False)
    neighbours = draw_neighbours(rng, config, LSST_WAVELENGTH, latitude=10.0)
    out = render(flux, flux_err, band, fwhm, config=config, rng=rng, host=host, neighbours=neighbours)

    model = flux[:, None, None] * out.psf + out.background
    ratio = noise_flux_error(out.stamps - model, out.psf, model) / flux_err
    assert abs(np.median(ratio) - 1.0) < 0.15
    assert abs(np.sqrt(np.mean(ratio**2)) - 1.0) < 0.05
    pulls = (psf_flux(out.stamps, out.psf, out.background) - flux) / flux_err
    assert abs(np.std(pulls) - 1.0) < 0.1
    assert abs(np.mean(pulls)) < 0.15


def test_noise_keeps_a_sky_share_and_caps_photon_noise():
    config = RenderConfig(min_sky_fraction=0.2)
    # A flux error below the photon noise of the source: photon share capped, sky keeps 20%.
    out = render(np.array([1e6]), np.array([10.0]), np.zeros(1, int), np.array([0.8]), config=config,
                 rng=np.random.default_rng(3))
    p2 = np.sum(out.psf**2)
    sky_variance = out.sky_level[0] * config.gain
    assert sky_variance == pytest.approx(0.2 * p2 * 10.0**2, rel=1e-9)
    assert np.sum(out.psf**2 * out.variance) / p2**2 == pytest.approx(100.0, rel=1e-9)


def test_sky_level_stays_in_when_not_subtracted():
    kwargs = dict(flux=np.zeros(50), flux_err=np.full(50, 5.0), band=np.zeros(50, int), fwhm=np.full(50, 0.8))
    on = render(**kwargs, config=RenderConfig(), rng=np.random.default_rng(4))
    off = render(**kwargs, config=RenderConfig(subtract_sky=False), rng=np.random.default_rng(4))
    np.testing.assert_allclose(off.stamps - on.stamps, np.broadcast_to(on.sky_level[:, None, None], on.stamps.shape),
                               rtol=1e-4, atol=1e-3)
    assert np.all(on.sky_level > 0)


def test_render_is_reproducible():
    args = (np.full(5, 100.0), np.full(5, 3.0), np.arange(5), np.full(5, 0.7))
    host = draw_host(np.random.default_rng(0), z=0.3, wavelength=LSST_WAVELENGTH, centred=True)
    first = render(*args, config=RenderConfig(), rng=np.random.default_rng(5), host=host)
    again = render(*args, config=RenderConfig(), rng=np.random.default_rng(5), host=host)
    other = render(*args, config=RenderConfig(), rng=np.random.default_rng(6), host=host)
    assert first.stamps.tobytes() == again.stamps.tobytes()
    assert first.stamps.tobytes() != other.stamps.tobytes()


def test_host_position_brightness_and_size_follow_the_redshift():
    rng = np.random.default_rng(7)
    agn = [draw_host(rng, z=0.5, wavelength=LSST_WAVELENGTH, centred=True) for _ in range(50)]
    assert all(np.all(h.offset == 0) for h in agn)
    near = [draw_host(rng, z=0.05, wavelength=LSST_WAVELENGTH, centred=False) for _ in range(200)]
    far = [draw_host(rng, z=0.8, wavelength=LSST_WAVELENGTH, centred=False) for _ in range(200)]
    assert all(np.hypot(*h.offset) > 0 for h in near)
    assert np.median([h.r_eff for h in near]) > 5 * np.median([h.r_eff for h in far])
    assert np.median([h.flux[2] for h in near]) > 100 * np.median([h.flux[2] for h in far])
    # Offsets scale with the host size (median of an exponential disk: about 1.2 scale lengths).
    assert 0.3 < np.median([np.hypot(*h.offset) / h.r_eff for h in near]) < 1.5


def test_host_adds_light_only_where_drawn():
    config = RenderConfig(jitter=0.0)
    args = (np.zeros(1), np.ones(1), np.array([2]), np.array([0.8]))
    host = draw_host(np.random.default_rng(8), z=0.1, wavelength=LSST_WAVELENGTH, centred=False)
    with_host = render(*args, config=config, rng=np.random.default_rng(9), host=host)
    without = render(*args, config=config, rng=np.random.default_rng(9))
    assert np.all(without.background == 0)
    light = with_host.background[0]
    assert light.sum() > 0.3 * host.flux[2]
    peak = np.array(np.unravel_index(light.argmax(), light.shape))[::-1] - 16
    assert np.hypot(*(peak - host.offset / config.pixel_scale)) < 2.0


def test_neighbours_respect_keepout_and_crowd_towards_the_plane():
    config = RenderConfig(pixel_scale=1.0, star_density=2.0)
    rng = np.random.default_rng(10)
    pole = [draw_neighbours(rng, config, LSST_WAVELENGTH, latitude=90.0) for _ in range(100)]
    plane = [draw_neighbours(rng, config, LSST_WAVELENGTH, latitude=3.0) for _ in range(100)]
    for stars in pole + plane:
        assert np.all(np.hypot(stars.position[:, 0], stars.position[:, 1]) >= config.star_keepout)
        assert stars.flux.shape == (stars.position.shape[0], 6)
    assert sum(s.position.shape[0] for s in plane) > 5 * sum(s.position.shape[0] for s in pole)


def test_galactic_latitude_of_known_positions():
    # North Galactic pole and the Galactic centre.
    np.testing.assert_allclose(galactic_latitude([192.85948, 266.405], [27.12825, -28.936]), [90.0, 0.0], atol=0.05)


def test_seeing_is_shared_within_a_night_and_wider_in_blue():
    mjd = np.array([60000.10, 60000.12, 60001.1, 60002.1])
    same_band = draw_seeing(mjd, np.full(4, 6200.0), 0.8, np.random.default_rng(11), visit_scatter=0.0)
    assert same_band[0] == same_band[1] and same_band[1] != same_band[2]
    blue_red = draw_seeing(mjd[:2], np.array([3600.0, 9700.0]), 0.8, np.random.default_rng(12), visit_scatter=0.0)
    assert blue_red[0] / blue_red[1] == pytest.approx((3600.0 / 9700.0) ** -0.2)


@pytest.mark.parametrize("flux_err, fwhm", [(0.0, 0.8), (-1.0, 0.8), (1.0, 0.0), (np.nan, 0.8)])
def test_render_rejects_non_positive_errors_and_seeing(flux_err, fwhm):
    with pytest.raises(ValueError, match="positive"):
        render(np.ones(1), np.array([flux_err]), np.zeros(1, int), np.array([fwhm]), config=RenderConfig(),
               rng=np.random.default_rng(0))


def test_config_checks():
    with pytest.raises(ValueError, match="moffat_beta"):
        RenderConfig(moffat_beta=1.0)
    assert RenderConfig(stamp_size=32, margin=16).grid_size == 64
    assert all(len(key) <= 8 for key in RenderConfig().header())
