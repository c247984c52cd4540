"""Tests of train.data.render: PSF, noise level, host galaxies, neighbours, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")  # the train extra: the renderer needs scipy

from scipy.optimize import least_squares  # noqa: E402

from train.data.lightcurves import REFERENCE_WAVELENGTH, flux_to_mag  # noqa: E402
from train.data.render import (  # noqa: E402
    RenderConfig,
    ScenePrior,
    draw_field_galaxies,
    draw_host,
    draw_neighbours,
    draw_scene,
    draw_seeing,
    draw_shared_host,
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


# -- the class-blind scene (the hard benchmark variant) ------------------------------------
def test_shared_host_is_the_same_galaxy_for_an_agn_and_a_transient():
    prior = ScenePrior()
    for seed in range(50):
        agn = draw_shared_host(np.random.default_rng(seed), prior, z=0.4, wavelength=LSST_WAVELENGTH, transient=False)
        sn = draw_shared_host(np.random.default_rng(seed), prior, z=0.4, wavelength=LSST_WAVELENGTH, transient=True)
        # one prior: brightness, size and shape do not depend on the class, only the position in the host does
        assert np.array_equal(agn.flux, sn.flux) and agn.r_eff == sn.r_eff and agn.sersic_n == sn.sersic_n
        assert (agn.axis_ratio, agn.angle) == (sn.axis_ratio, sn.angle)


def test_faint_hosts_are_dwarfs_of_the_same_prior():
    bright = ScenePrior(faint_host_fraction=0.0)
    faint = ScenePrior(faint_host_fraction=1.0)
    for seed in range(20):
        kwargs = dict(z=0.2, wavelength=LSST_WAVELENGTH, transient=True)
        giant = draw_shared_host(np.random.default_rng(seed), bright, **kwargs)
        dwarf = draw_shared_host(np.random.default_rng(seed), faint, **kwargs)
        # same standard-normal draw: 3.5 mag fainter and, with R ~ L ** 0.25, 10 ** -0.35 times the size
        np.testing.assert_allclose(dwarf.flux / giant.flux, 10.0 ** (-0.4 * 3.5), rtol=1e-12)
        assert dwarf.r_eff / giant.r_eff == pytest.approx(10.0 ** -0.35, rel=1e-12)
    rng = np.random.default_rng(1)
    mags = [flux_to_mag(draw_shared_host(rng, ScenePrior(), z=0.2, wavelength=[REFERENCE_WAVELENGTH],
                                         transient=True).flux[0]) for _ in range(3000)]
    # at z = 0.2 (distance modulus 40.0) giants are ~19.8 mag, dwarfs ~23.3: the dwarf share is 0.2
    assert abs(np.mean(np.array(mags) > 21.8) - 0.2) < 0.03


def test_nuclear_offsets_are_shared_by_agn_and_a_share_of_transients():
    prior = ScenePrior(nuclear_offset=0.0, nuclear_fraction=0.3)
    rng = np.random.default_rng(2)
    kwargs = dict(z=0.3, wavelength=LSST_WAVELENGTH)
    agn = [draw_shared_host(rng, prior, transient=False, **kwargs) for _ in range(200)]
    assert all(np.all(h.offset == 0) for h in agn)
    transients = [draw_shared_host(rng, prior, transient=True, **kwargs) for _ in range(3000)]
    assert abs(np.mean([np.all(h.offset == 0) for h in transients]) - 0.3) < 0.03
    jittered = [draw_shared_host(rng, ScenePrior(nuclear_offset=0.1), transient=False, **kwargs) for _ in range(2000)]
    assert np.std([h.offset for h in jittered]) == pytest.approx(0.1, rel=0.05)


def test_field_galaxies_follow_the_counts_and_sit_anywhere():
    config = RenderConfig()
    prior = ScenePrior()
    rng = np.random.default_rng(3)
    drawn = [draw_field_galaxies(rng, prior, config, [REFERENCE_WAVELENGTH]) for _ in range(2000)]
    half = (config.grid_size / 2 - 4) * config.pixel_scale
    low, high = prior.galaxy_mag_range
    ref, slope = prior.galaxy_reference_mag, prior.galaxy_count_slope
    area = (2 * half / 60) ** 2
    expected = prior.galaxy_density * (10 ** (slope * (high - ref)) - 10 ** (slope * (low - ref))) * area
    assert np.mean([len(g) for g in drawn]) == pytest.approx(expected, rel=0.05)
    galaxies = [galaxy for field in drawn for galaxy in field]
    mags = flux_to_mag(np.array([g.flux[0] for g in galaxies]))     # the counts are in this band
    assert np.all((mags >= low - 1e-9) & (mags <= high + 1e-9))
    share = (1 - 10 ** (slope * (low - 24.0))) / (10 ** (slope * (high - 24.0)) - 10 ** (slope * (low - 24.0)))
    assert np.mean(mags < 24.0) == pytest.approx(share, abs=0.02)
    distance = np.hypot(*np.array([g.offset for g in galaxies]).T)
    assert np.all(np.abs(np.array([g.offset for g in galaxies])) <= half)
    assert np.any(distance < 0.5)                                     # no keep-out: an object can lie on one
    sizes = np.array([g.r_eff for g in galaxies])
    assert np.median(sizes[mags < 22]) > 2 * np.median(sizes[mags > 25])  # fainter: farther and smaller


def test_scene_has_a_host_only_for_extragalactic_objects():
    config, prior = RenderConfig(), ScenePrior(galaxy_density=40.0)
    host, galaxies = draw_scene(np.random.default_rng(4), prior, config, LSST_WAVELENGTH, z=None, transient=False)
    assert host is None and len(galaxies) > 0
    host, _ = draw_scene(np.random.default_rng(4), prior, config, LSST_WAVELENGTH, z=0.3, transient=True)
    assert host is not None and host.flux.shape == (6,)


def test_field_galaxies_add_their_light_like_hosts():
    config = RenderConfig(jitter=0.0)
    args = (np.full(3, 50.0), np.ones(3), np.array([1, 2, 3]), np.array([0.7, 0.8, 0.9]))
    galaxies = draw_field_galaxies(np.random.default_rng(5), ScenePrior(galaxy_density=60.0), config, LSST_WAVELENGTH)
    assert len(galaxies) >= 2
    together = render(*args, config=config, rng=np.random.default_rng(6), galaxies=galaxies)
    alone = [render(*args, config=config, rng=np.random.default_rng(6), host=galaxy) for galaxy in galaxies]
    np.testing.assert_allclose(together.background, sum(r.background for r in alone), rtol=1e-9, atol=1e-9)
    none = render(*args, config=config, rng=np.random.default_rng(6))
    assert render(*args, config=config, rng=np.random.default_rng(6), galaxies=()).stamps.tobytes() == \
        none.stamps.tobytes()


def test_scene_prior_checks():
    with pytest.raises(ValueError, match="nuclear_fraction"):
        ScenePrior(nuclear_fraction=1.5)
    with pytest.raises(ValueError, match="galaxy_mag_range"):
        ScenePrior(galaxy_mag_range=(26.0, 20.0))
    with pytest.raises(ValueError, match="galaxy_count_slope"):
        ScenePrior(galaxy_count_slope=0.0)
    assert all(len(key) <= 8 for key in ScenePrior().header())
