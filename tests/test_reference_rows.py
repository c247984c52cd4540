"""Reference rows of the results table: scene and light-curve features, boosting, the flux LSTM, the rows."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from train.data.dataset import LabelledObjects  # noqa: E402
from train.data.plasticc import BANDS, LIGHTCURVES, METADATA, WHEEL_FILE, PlasticcData  # noqa: E402
from train.reference.boosting import BoostingConfig, fit_boosting  # noqa: E402
from train.reference.difference_flux import DifferenceFluxes, difference_fluxes  # noqa: E402
from train.reference.lightcurve_features import lightcurve_feature_names, lightcurve_features  # noqa: E402
from train.reference.scene import (  # noqa: E402
    APERTURES,
    MOMENT_RADIUS,
    coadd,
    object_scene_features,
    scene_feature_names,
    scene_features,
)

SIZE = 32
CENTRE = SIZE // 2


def gaussian(x0: float, y0: float, sigma_x: float, sigma_y: float | None = None, flux: float = 1000.0) -> np.ndarray:
    """A (SIZE, SIZE) Gaussian of total ``flux`` centred at pixel (x0, y0) = (column, row)."""
    sigma_y = sigma_x if sigma_y is None else sigma_y
    y, x = np.mgrid[:SIZE, :SIZE]
    image = np.exp(-0.5 * (((x - x0) / sigma_x) ** 2 + ((y - y0) / sigma_y) ** 2))
    return flux * image / image.sum()


def scene(image: np.ndarray, band: str = "r", bands: tuple[str, ...] = ("g", "r")) -> dict[str, float]:
    """Scene features of one frame in ``band``, by name."""
    names = scene_feature_names(bands)
    values = object_scene_features(image[None].astype(np.float32), np.array([bands.index(band)]), len(bands))
    return dict(zip(names, values))


# -- scene features ---------------------------------------------------------------------
def test_an_offset_point_source_gives_its_offset_from_the_centre():
    got = scene(gaussian(CENTRE + 2.0, CENTRE + 1.0, 1.0) + 5.0)
    assert got["r_centroid_offset"] == pytest.approx(np.sqrt(5.0), abs=0.01)
    assert got["r_peak_offset"] == pytest.approx(np.sqrt(5.0))  # brightest pixel at (+2, +1)
    assert got["r_background"] == pytest.approx(5.0)
    assert got["r_flux_r9"] == pytest.approx(1000.0, rel=1e-3)  # the whole source, background removed
    assert got["r_frames"] == 1 and got["g_frames"] == 0 and np.isnan(got["g_flux_r3"])
    centred = scene(gaussian(CENTRE, CENTRE, 1.0) + 5.0)
    assert centred["r_centroid_offset"] == pytest.approx(0.0, abs=1e-9) and centred["r_peak_offset"] == 0.0
    # the offset source puts less of its light in the central apertures
    assert got["r_concentration"] < centred["r_concentration"]
    # within 1.5 pixels: the 3 x 3 pixels around the centre
    profile = np.exp(-0.5 * (np.arange(SIZE) - CENTRE) ** 2)
    assert centred["r_flux_r1.5"] == pytest.approx(1000.0 * (profile[CENTRE - 1:CENTRE + 2].sum() / profile.sum()) ** 2)


def test_size_and_ellipticity_follow_the_second_moments():
    round_source = scene(gaussian(CENTRE, CENTRE, 1.5))
    assert round_source["r_size"] == pytest.approx(1.5, abs=0.03)
    assert round_source["r_ellipticity"] == pytest.approx(0.0, abs=1e-9)
    elongated = scene(gaussian(CENTRE, CENTRE, 1.6, 0.8))
    assert elongated["r_ellipticity"] == pytest.approx((1.6**2 - 0.8**2) / (1.6**2 + 0.8**2), abs=0.02)
    # a wide source is measured within MOMENT_RADIUS: the moments of a Gaussian truncated there
    wide = scene(gaussian(CENTRE, CENTRE, 2.5))
    u = MOMENT_RADIUS**2 / (2 * 2.5**2)
    assert wide["r_size"] == pytest.approx(2.5 * np.sqrt(1 - u * np.exp(-u) / (1 - np.exp(-u))), abs=0.02)
    assert wide["r_concentration"] < round_source["r_concentration"]


def test_the_coadd_is_the_median_and_throws_a_short_transient_away():
    host = gaussian(CENTRE + 3.0, CENTRE, 2.0, flux=500.0)
    frames = np.repeat(host[None], 7, axis=0).astype(np.float32)
    frames[2] += gaussian(CENTRE, CENTRE, 1.0, flux=5000.0).astype(np.float32)  # a transient on 2 of 7 frames
    frames[3] += gaussian(CENTRE, CENTRE, 1.0, flux=3000.0).astype(np.float32)
    band = np.array([1, 1, 1, 1, 1, 1, 0])
    coadds, counts = coadd(frames, band, 3)
    assert counts.tolist() == [1, 6, 0]
    np.testing.assert_allclose(coadds[1], host, atol=1e-4)
    assert np.isnan(coadds[2]).all()
    # shuffling the frames (their times) changes nothing
    order = np.random.default_rng(0).permutation(7)
    np.testing.assert_array_equal(object_scene_features(frames[order], band[order], 3),
                                  object_scene_features(frames, band, 3))


def test_scene_features_do_not_depend_on_the_direction_of_an_offset():
    def frames(turn: int, mirror: bool) -> np.ndarray:
        """A host offset from the object and a neighbour star, turned by 90 degrees ``turn`` times about it."""
        sources = [(2.4, -1.0, 1.8, 1.1, 1000.0), (-4.0, 3.0, 1.0, 1.0, 300.0)]
        image = np.zeros((SIZE, SIZE))
        for dx, dy, sigma_x, sigma_y, flux in sources:
            dx = -dx if mirror else dx
            for _ in range(turn):
                dx, dy, sigma_x, sigma_y = -dy, dx, sigma_y, sigma_x
            image += gaussian(CENTRE + dx, CENTRE + dy, sigma_x, sigma_y, flux)
        return np.stack([image, 0.5 * image]).astype(np.float32)

    band = np.array([0, 1])
    reference = object_scene_features(frames(0, False), band, 2)
    for turn, mirror in ((1, False), (2, False), (3, False), (0, True), (1, True)):
        np.testing.assert_allclose(object_scene_features(frames(turn, mirror), band, 2), reference, rtol=1e-5,
                                   atol=1e-6)


def test_colours_compare_neighbouring_bands():
    frames = np.stack([gaussian(CENTRE, CENTRE, 1.0, flux=100.0), gaussian(CENTRE, CENTRE, 1.0, flux=100 * 10**0.4),
                       -gaussian(CENTRE, CENTRE, 1.0, flux=50.0)]).astype(np.float32)
    values = dict(zip(scene_feature_names(("g", "r", "i")), object_scene_features(frames, np.array([0, 1, 2]), 3)))
    assert values[f"g-r_colour_r{APERTURES[1]:g}"] == pytest.approx(1.0, abs=1e-4)
    assert values[f"g-r_colour_r{APERTURES[-1]:g}"] == pytest.approx(1.0, abs=1e-4)
    assert np.isnan(values[f"r-i_colour_r{APERTURES[1]:g}"])  # no positive flux in i: no colour


def test_bad_pixels_are_left_out_without_warnings():
    frames = np.repeat((gaussian(CENTRE, CENTRE, 1.0) + 2.0)[None], 3, axis=0).astype(np.float32)
    frames[:, 0, 0] = np.nan  # bad in every frame (a corner, in the background annulus's reach)
    frames[1, CENTRE, CENTRE] = np.nan  # bad in one frame
    coadds, _ = coadd(frames, np.zeros(3, dtype=np.int32), 1)
    assert np.isnan(coadds[0, 0, 0]) and np.isfinite(coadds[0, CENTRE, CENTRE])
    values = scene_features(coadds, np.array([3]))
    assert np.isfinite(values).all()


def test_scene_features_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="at least 30 pixels"):
        scene_features(np.zeros((1, 16, 16)), np.array([1]))
    with pytest.raises(ValueError, match="band indices must be in 0..1"):
        coadd(np.zeros((2, SIZE, SIZE), np.float32), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="must agree"):
        coadd(np.zeros((2, SIZE, SIZE), np.float32), np.array([0]), 2)


# -- light-curve features -----------------------------------------------------------------
def hand_made_curve() -> tuple[np.ndarray, ...]:
    """A supernova-like curve in r (band 2) with two g (band 1) points near its peak at day 50."""
    times = np.array([0, 10, 20, 30, 40, 45, 50, 55, 60, 70, 80, 90], dtype=float)
    flux = np.array([0, 0, 10, 30, 40, 80, 100, 90, 70, 40, 20, 0], dtype=float)
    mjd = np.r_[times, 48.0, 52.0]
    band = np.r_[np.full(12, 2), 1, 1]
    return mjd, band, np.r_[flux, 50.0, 70.0], np.r_[np.full(12, 2.0), 2.0, 4.0]


def features(mjd, band, flux, flux_err, n_bands: int = 6) -> dict[str, float]:
    return dict(zip(lightcurve_feature_names(BANDS[:n_bands]), lightcurve_features(mjd, band, flux, flux_err, n_bands)))


def test_light_curve_features_of_a_hand_made_curve():
    got = features(*hand_made_curve())
    assert got["rise_time"] == 10.0  # last point below half the peak before it: day 40
    assert got["decline_time"] == 20.0  # first one after it: day 70
    assert got["time_above_half"] == 15.0  # days 45-60
    assert got["r_points"] == 12 and got["g_points"] == 2 and got["u_points"] == 0 and np.isnan(got["u_max_flux"])
    assert got["r_max_flux"] == 100.0 and got["r_min_flux"] == 0.0 and got["r_max_significance"] == 50.0
    assert got["r_detected_fraction"] == 9 / 12  # |flux / flux_err| >= 5
    assert got["detections"] == 11 and got["detected_span"] == 60.0  # r from day 20 to 80, and the g points
    g_peak = (50 / 4 + 70 / 16) / (1 / 4 + 1 / 16)  # weighted mean within 7 days of the peak
    r_peak = (80 + 100 + 90) / 3
    assert got["g_peak_flux"] == pytest.approx(g_peak) and got["r_peak_flux"] == pytest.approx(r_peak)
    assert got["g-r_peak_colour"] == pytest.approx(-2.5 * np.log10(g_peak / r_peak))
    assert got["r_peak_flux_ratio"] == 1.0 and got["g_peak_flux_ratio"] == pytest.approx(g_peak / r_peak)
    assert np.isnan(got["u-g_peak_colour"])
    assert got["r_median_error"] == 2.0 and got["r_amplitude_significance"] == 50.0
    assert got["negative_fraction"] == 0.0 and got["r_skewness"] > 0


def test_constant_and_varying_curves_differ_in_their_variability_features():
    mjd = np.arange(20.0)
    band = np.zeros(20, dtype=int)
    flat = features(mjd, band, np.full(20, 10.0), np.ones(20), n_bands=1)
    assert flat["u_reduced_chi2"] == 0.0 and flat["u_weighted_std"] == 0.0 and np.isnan(flat["u_skewness"])
    swinging = 30.0 * np.sin(mjd)  # a variable star about its template: negative half the time
    varying = features(mjd, band, swinging, np.ones(20), n_bands=1)
    assert varying["u_reduced_chi2"] == pytest.approx(np.sum((swinging - swinging.mean()) ** 2) / 19)
    assert varying["negative_fraction"] == pytest.approx(np.mean(swinging < -3))
    faded = features(mjd, band, -np.abs(swinging) - 1, np.ones(20), n_bands=1)  # never above the template
    assert np.isnan(faded["rise_time"]) and np.isnan(faded["decline_time"]) and np.isnan(faded["time_above_half"])


def test_light_curve_features_refuse_bad_input():
    mjd, band, flux, flux_err = hand_made_curve()
    with pytest.raises(ValueError, match="one length"):
        lightcurve_features(mjd[:-1], band, flux, flux_err, 6)
    with pytest.raises(ValueError, match="non-empty"):
        lightcurve_features(mjd[:0], band[:0], flux[:0], flux_err[:0], 6)
    with pytest.raises(ValueError, match="flux_err must be positive"):
        lightcurve_features(mjd, band, flux, np.where(band == 1, 0.0, flux_err), 6)
    with pytest.raises(ValueError, match="band indices in 0..1"):
        lightcurve_features(mjd, band, flux, flux_err, 2)


# -- matching the catalog's epochs to the PLAsTiCC light curves ------------------------------
def plasticc_data() -> PlasticcData:
    """Two objects (ids 7 and 30), sorted as read_wheel sorts them."""
    object_id = np.array([7, 7, 7, 7, 30, 30, 30])
    mjd = np.array([60000.0, 60000.0, 60001.5, 60003.25, 60000.0, 60002.0, 60004.0])
    passband = np.array([1, 2, 2, 1, 0, 5, 0])
    meta = {"object_id": np.array([7, 30]), "hostgal_photoz": np.array([0.3, 0.0]),
            "hostgal_photoz_err": np.array([0.05, 0.0])}
    return PlasticcData(meta=meta, object_id=object_id, mjd=mjd, passband=passband,
                        flux=np.arange(7, dtype=float) * 10.0, flux_err=np.arange(7, dtype=float) + 1.0,
                        offsets=np.array([0, 4, 7]))


def catalog_objects(ids, epochs: list[list[tuple[float, str]]], bands=("u", "g", "r", "i", "z", "y")) -> LabelledObjects:
    mjd = np.array([t for object_epochs in epochs for t, _ in object_epochs])
    band = np.array([bands.index(b) for object_epochs in epochs for _, b in object_epochs], dtype=np.int32)
    offsets = np.r_[0, np.cumsum([len(e) for e in epochs])]
    return LabelledObjects(object_ids=np.asarray(ids), labels=np.zeros(len(ids), dtype=np.int64),
                           typing=np.array(["spec"] * len(ids)), frames=np.zeros((0, SIZE, SIZE), np.float32),
                           band=band, mjd=mjd, offsets=offsets, classes=("AGN", "SNIa"), bands=bands)


def test_windowed_rows_describe_only_the_frames_an_image_model_reads():
    from train.reference.rows import WINDOW_FRAMES, ReferenceRow, _window_of, lightcurve_feature_table

    rng = np.random.default_rng(0)
    n = WINDOW_FRAMES + 60
    frames = rng.normal(100.0, 1.0, size=(n, SIZE, SIZE)).astype(np.float32)
    band = np.tile(np.arange(2, dtype=np.int32), n)[:n]
    frames[10:20] += gaussian(CENTRE, CENTRE, 1.5, flux=400.0).astype(np.float32)  # an early brightening
    latest, event = (_window_of(w)(frames, band).astype(np.int64) for w in ("latest", "event"))
    np.testing.assert_array_equal(latest, np.arange(n - WINDOW_FRAMES, n))
    np.testing.assert_array_equal(event, np.arange(10, 10 + WINDOW_FRAMES))
    short = _window_of("event")(frames[:5], band[:5]).astype(np.int64)
    np.testing.assert_array_equal(short[:5], np.arange(5))
    assert (short[5:] == -1).all()

    mjd = np.arange(n, dtype=np.float64)
    flux, flux_err = rng.normal(0.0, 1.0, size=n), np.ones(n)
    flux[10:20] += 50.0
    objects = LabelledObjects(
        object_ids=np.array([1]), labels=np.array([0]), typing=np.array(["spec"]),
        frames=np.zeros((0, SIZE, SIZE), np.float32), band=band, mjd=mjd, offsets=np.array([0, n]),
        classes=("AGN", "SNIa"), bands=BANDS)
    fluxes = DifferenceFluxes(flux=flux, flux_err=flux_err, passband=band.astype(np.int64),
                              hostgal_photoz=np.zeros(1), hostgal_photoz_err=np.zeros(1))
    for selection in (latest, event):
        got, _ = lightcurve_feature_table(objects, fluxes, selection=selection[None])
        chosen = selection[selection >= 0]
        want = lightcurve_features(mjd[chosen], fluxes.passband[chosen], flux[chosen], flux_err[chosen], len(BANDS))
        np.testing.assert_array_equal(got[0], want)
    names = lightcurve_feature_names(BANDS)
    by_window = {w: dict(zip(names, lightcurve_feature_table(objects, fluxes, selection=s[None])[0][0]))
                 for w, s in (("latest", latest), ("event", event))}
    assert by_window["event"]["max_significance"] > 40 > by_window["latest"]["max_significance"]

    assert ReferenceRow("lightcurve_boosting", window="event").window == "event"
    for bad in (dict(trainer="scene_boosting", window="latest"), dict(trainer="lightcurve_boosting", window="all")):
        with pytest.raises(ValueError, match="window must be one of latest, event"):
            ReferenceRow(**bad)


def test_each_catalog_epoch_gets_the_flux_of_its_light_curve_point():
    # object 7's epoch at 60000.0 exists in g and r: the band decides; the catalog kept 3 of its 4 epochs
    objects = catalog_objects([30, 7], [[(60000.0, "u"), (60004.0, "u")],
                                        [(60000.0, "r"), (60000.0, "g"), (60003.25, "g")]])
    got = difference_fluxes(objects, plasticc_data())
    assert got.flux.tolist() == [40.0, 60.0, 10.0, 0.0, 30.0]
    assert got.flux_err.tolist() == [5.0, 7.0, 2.0, 1.0, 4.0]
    assert got.passband.tolist() == [0, 0, 2, 1, 1]
    assert got.hostgal_photoz.tolist() == [0.0, 0.3] and got.hostgal_photoz_err.tolist() == [0.0, 0.05]


def test_epochs_without_a_light_curve_point_are_named():
    data = plasticc_data()
    with pytest.raises(ValueError, match=r"cat\.fits: object 7: the epoch at MJD 60001.50000 in band g has no point"):
        difference_fluxes(catalog_objects([7], [[(60001.5, "g")]]), data, source="cat.fits")
    with pytest.raises(ValueError, match=r"object 12 is not in the PLAsTiCC metadata"):
        difference_fluxes(catalog_objects([12], [[(60000.0, "u")]]), data)
    with pytest.raises(ValueError, match="bands V are not PLAsTiCC's"):
        difference_fluxes(catalog_objects([7], [[(60000.0, "V")]], bands=("V",)), data)


# -- boosting -------------------------------------------------------------------------------
def test_boosting_stops_on_the_validation_objects_and_keeps_every_class_column():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 3], 80)  # class 2 absent from the data
    features = rng.normal(size=(labels.size, 3)) + labels[:, None] * 1.5
    features[::7, 1] = np.nan  # missing values are allowed
    order = rng.permutation(labels.size)
    train_idx, val_idx = order[:180], order[180:]
    boosted = fit_boosting(features, labels, train_idx, val_idx, 4, BoostingConfig(max_iter=30))
    assert len(boosted.validation_macro_f1) == 30
    assert boosted.validation_macro_f1[boosted.iterations - 1] == max(boosted.validation_macro_f1)
    assert boosted.validation_macro_f1.index(max(boosted.validation_macro_f1)) == boosted.iterations - 1
    probabilities = boosted.predict_proba(features[val_idx])
    assert probabilities.shape == (60, 4) and np.all(probabilities[:, 2] == 0.0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert np.mean(probabilities.argmax(axis=1) == labels[val_idx]) > 0.8
    # the iterations used are the chosen ones, not all that were grown
    staged = list(boosted.model.staged_predict_proba(features[val_idx]))
    np.testing.assert_allclose(probabilities[:, [0, 1, 3]], staged[boosted.iterations - 1])
    assert boosted.used.all()
    # a feature missing for every training object (a band never observed) is left out, not refused
    features[train_idx, 2] = np.nan
    sparse = fit_boosting(features, labels, train_idx, val_idx, 4, BoostingConfig(max_iter=5))
    assert sparse.used.tolist() == [True, True, False] and sparse.record()["unused_features"] == 1
    assert sparse.predict_proba(features[val_idx]).shape == (60, 4)
    with pytest.raises(ValueError, match="finite or NaN"):
        fit_boosting(np.where(features > 4, np.inf, features), labels, train_idx, val_idx, 4)
    with pytest.raises(ValueError, match="max_iter >= 1"):
        BoostingConfig(max_iter=0)


# -- the LSTM on difference fluxes ------------------------------------------------------------
def flux_objects() -> tuple[LabelledObjects, DifferenceFluxes]:
    """Two objects: three epochs in bands g, r, g and one in u."""
    objects = catalog_objects([1, 2], [[(60000.0, "g"), (60002.5, "r"), (60010.0, "g")], [(60100.0, "u")]])
    fluxes = DifferenceFluxes(flux=np.array([10.0, -4.0, 30.0, 5.0]), flux_err=np.array([2.0, 2.0, 4.0, 1.0]),
                              passband=np.array([1, 2, 1, 0]), hostgal_photoz=np.zeros(2),
                              hostgal_photoz_err=np.zeros(2))
    return objects, fluxes


@pytest.mark.torch
def test_flux_inputs_are_scaled_padded_and_dropped_per_epoch():
    pytest.importorskip("torch")
    from train.reference.flux_lstm import flux_inputs, flux_scale

    objects, fluxes = flux_objects()
    scale = flux_scale(objects, fluxes, np.array([0]), 6)
    assert scale.tolist() == [2.0, 3.0, 2.0, 2.0, 2.0, 2.0]  # g: median of 2 and 4; bands not seen: of 2, 2, 4
    values, band_ids, times = flux_inputs(objects, fluxes, np.array([0, 1]), scale)
    assert values.shape == (2, 3, 2) and band_ids.tolist() == [[2, 3, 2], [1, 0, 0]]
    np.testing.assert_allclose(values[0, :, 0].numpy(), np.arcsinh([10 / 3, -4 / 2, 30 / 3]), rtol=1e-6)
    np.testing.assert_allclose(values[0, :, 1].numpy(), np.arcsinh([2 / 3, 2 / 2, 4 / 3]), rtol=1e-6)
    assert times[0].tolist() == [0.0, 2.5, 10.0] and values[1, 1:].abs().sum() == 0
    dropped = flux_inputs(objects, fluxes, np.array([0, 1] * 20), scale, rng=np.random.default_rng(0),
                          frame_drop=0.9)[1]
    assert ((dropped != 0).sum(dim=1) >= 1).all() and (dropped != 0).sum() < 40 * 2


@pytest.mark.torch
def test_the_flux_lstm_reads_out_the_last_epoch_wherever_the_padding_is():
    torch = pytest.importorskip("torch")
    from train.reference.flux_lstm import DifferenceFluxLSTM, FluxLSTMConfig

    torch.manual_seed(0)
    model = DifferenceFluxLSTM(FluxLSTMConfig.like_lc_lstm(("AGN", "SNIa", "SNOther", "Variable"), 6, 0.3)).eval()
    assert model.config.hidden_size == 68 and model.config.rnn_layers == 2  # the lc_lstm baseline's sizes
    values = torch.randn(1, 5, 2)
    band_ids = torch.tensor([[1, 3, 2, 6, 4]])
    times = torch.tensor([[0.0, 1.0, 3.0, 7.0, 20.0]])
    alone = model(values, band_ids, times)
    padded = model(torch.cat([values[:, :2], torch.randn(1, 3, 2), values[:, 2:]], dim=1),
                   torch.cat([band_ids[:, :2], torch.zeros(1, 3, dtype=torch.long), band_ids[:, 2:]], dim=1),
                   torch.cat([times[:, :2], torch.full((1, 3), 99.0), times[:, 2:]], dim=1))
    torch.testing.assert_close(padded, alone)
    assert not torch.allclose(model(values[:, :4], band_ids[:, :4], times[:, :4]), alone)  # the last epoch counts
    with pytest.raises(ValueError, match=r"values \(B, M, 2\)"):
        model(values[..., :1], band_ids, times)


# -- the rows, end to end -----------------------------------------------------------------------
META_COLUMNS = ("object_id,ra,decl,ddf_bool,hostgal_specz,hostgal_photoz,hostgal_photoz_err,distmod,mwebv,target,"
                "true_target,true_submodel,true_z,true_distmod,true_lensdmu,true_vpec,true_rv,true_av,true_peakmjd,"
                "libid_cadence,tflux_u,tflux_g,tflux_r,tflux_i,tflux_z,tflux_y").split(",")
#: Six objects per class: SNIa, SNOther, AGN, Variable.
TARGETS = (90,) * 6 + (42, 62) * 3 + (88,) * 6 + (92, 65) * 3


def write_fake_wheel(directory: Path) -> Path:
    """A wheel-shaped zip of PLAsTiCC-format csv files for a few objects of each class."""
    rng = np.random.default_rng(5)
    meta_lines, lc_lines = [",".join(META_COLUMNS)], ["object_id,mjd,passband,flux,flux_err,detected_bool"]
    for index, target in enumerate(TARGETS):
        object_id = 500 + 3 * index
        galactic = target in (92, 65)
        z = 0.0 if galactic else 0.05 + 0.02 * (index % 6)
        tflux = 900.0 if galactic else 120.0 if target == 88 else 0.0
        row = dict.fromkeys(META_COLUMNS, "0")
        row.update(object_id=str(object_id), ra=f"{20.0 + index}", decl=f"{-20.0 - index}", target=str(target),
                   hostgal_specz=f"{z}", hostgal_photoz=f"{z}", hostgal_photoz_err=f"{0.02 if z else 0.0}")
        row.update({f"tflux_{b}": f"{tflux}" for b in "ugrizy"})
        meta_lines.append(",".join(row[c] for c in META_COLUMNS))
        mjd = np.sort(60000.0 + rng.uniform(0.0, 150.0, 30))
        band = rng.integers(0, 6, mjd.size)
        truth = 400.0 * np.exp(-0.5 * ((mjd - 60060.0) / 12.0) ** 2)
        if galactic:
            truth = 300.0 * np.sin(2 * np.pi * mjd / 0.7)
        elif target == 88:
            truth = 60.0 * np.sin(mjd / 20.0)
        err = rng.uniform(3.0, 6.0, mjd.size)
        lc_lines += [f"{object_id},{t:.4f},{b},{f:.4f},{e:.4f},0" for t, b, f, e in
                     zip(mjd, band, truth + rng.normal(0.0, err), err)]
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / WHEEL_FILE, "w") as archive:
        archive.writestr(METADATA, "\n".join(meta_lines) + "\n")
        archive.writestr(LIGHTCURVES, "\n".join(lc_lines) + "\n")
    return directory


@pytest.fixture(scope="module")
def tiny_plasticc(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """(catalog, wheel cache, reference run with a 2-fold folds.json) of a 24-object PLAsTiCC build."""
    from sklearn.model_selection import StratifiedKFold

    from train.data.plasticc import build
    from train.reference.objects import read_objects

    directory = tmp_path_factory.mktemp("plasticc")
    cache = write_fake_wheel(directory / "cache")
    catalog = directory / "plasticc.fits"
    build(catalog, cache=cache, seed=3)
    objects, _ = read_objects(catalog)
    ids = [str(i) for i in objects.object_ids]
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    folds = [[ids[k] for k in test] for _, test in splitter.split(np.zeros(len(ids)), objects.labels)]
    reference = directory / "reference"
    reference.mkdir()
    (reference / "folds.json").write_text(json.dumps({"seed": 0, "held_out": folds}))
    return str(catalog), cache, reference


TINY = {"folds": 2, "fold_limit": 2, "members": 1, "epochs": 2, "patience": 6, "batch_size": 8,
        "learning_rate": 1e-3, "dropout": 0.3, "precision": "fp32", "seed": 0}


@pytest.mark.torch
@pytest.mark.slow
def test_reference_rows_train_on_the_table_folds_and_join_its_claims(tiny_plasticc, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from train import results

    catalog, cache, reference = tiny_plasticc
    monkeypatch.setattr(results, "TABLE_PROTOCOL", TINY)
    names = ("scene-boosting", "lightcurve-boosting", "lightcurve-boosting-photoz", "lc_lstm-difference-flux")
    plan = tuple(results._entry(name) for name in names)
    monkeypatch.setattr(results, "PLAN", plan)
    root, runs = tmp_path / "table", tmp_path / "runs"
    run = ["--root", str(root), "run", "--runs", str(runs), "--catalog", catalog, "--folds",
           str(reference / "folds.json"), "--plasticc-cache", str(cache), "--only"]
    for name in names:
        assert results.main([*run, name]) == 0
    folds = json.loads((reference / "folds.json").read_text())["held_out"]
    for name in names:
        assert (runs / name / "folds.json").read_text() == (reference / "folds.json").read_text()
        run_dir = root / name  # the records: the table reads nothing else
        assert not list(run_dir.rglob("*.pt")) and not (run_dir / "folds.json").exists()
        for fold in range(2):
            predictions = json.loads((run_dir / f"fold{fold}.predictions.json").read_text())
            # scored: the held-out fold's spec objects, as in every row
            typing = {str(i): t for i, t in zip(*_ids_and_typing(catalog))}
            assert set(predictions["object_id"]) == {i for i in folds[fold] if typing[i] == "spec"}
            assert predictions["classes"] == ["AGN", "SNIa", "SNOther", "Variable"]
            np.testing.assert_allclose(np.sum(predictions["probabilities"], axis=1), 1.0, atol=1e-5)
            scored = json.loads((run_dir / f"fold{fold}.json").read_text())
            assert scored["n"] == len(predictions["object_id"])
    boosting = json.loads((root / "lightcurve-boosting-photoz" / "fold0.boosting.json").read_text())
    assert boosting["features"][-2:] == ["hostgal_photoz", "hostgal_photoz_err"]
    assert "hostgal_photoz" not in json.loads(
        (root / "lightcurve-boosting" / "fold0.boosting.json").read_text())["features"]
    assert (runs / "lightcurve-boosting" / "state" / "fold0_boosting.json").read_bytes() == (
        root / "lightcurve-boosting" / "fold0.boosting.json").read_bytes()
    lstm = json.loads((root / "lc_lstm-difference-flux" / "fold0.member0.json").read_text())
    assert [e["stage"] for e in lstm["history"]] == ["pretrain_phot"] * 2 + ["finetune_spec"] * 2
    assert len(lstm["flux_scale"]) == 6

    collected = {entry.name: results.collect(entry, root) for entry in plan}
    assert all(got["folds"] == 2 for got in collected.values())
    assert len(collected["scene-boosting"]["boosting"]) == 2 and not collected["scene-boosting"]["epochs"]
    assert collected["lc_lstm-difference-flux"]["epochs"] == [4, 4]
    table = results.render_table(collected)
    assert "| Reference: gradient boosting on the static scene (median coadds, no time) | 2/2 |" in table
    assert "| 2 | – | – (gradient boosting: " in table and "iterations used) |" in table
    # the rows pair with each other (and with the image rows) in the claims
    verdict = results.verdict({"held_out": collected["lightcurve-boosting-photoz"]["held_out"]},
                              {"held_out": collected["scene-boosting"]["held_out"]})
    assert verdict.split(" on 2 folds: ")[0] in ("holds", "reversed", "not shown")

    # finished rows train nothing when run again, and their records are left as they are
    stamps = {path: path.stat().st_mtime_ns for folder in (root, runs) for path in folder.rglob("fold*.json")}
    assert results.main([*run, *names]) == 0
    assert {path: path.stat().st_mtime_ns for folder in (root, runs) for path in folder.rglob("fold*.json")} == stamps
    # records lost from the records folder are copied again from the run directory
    (root / "scene-boosting" / "fold1.boosting.json").unlink()
    assert results.main([*run, "scene-boosting"]) == 0
    assert (root / "scene-boosting" / "fold1.boosting.json").is_file()


def _ids_and_typing(catalog: str) -> tuple[list[str], list[str]]:
    from convention_rt.catalog import Catalog

    ids, typing = [], []
    with Catalog(catalog) as opened:
        for chunk in opened.iter_chunks():
            ids += [str(i) for i in chunk.object_ids]
            typing += [str(t) for t in chunk.typing]
    return ids, typing


@pytest.mark.torch
@pytest.mark.slow
def test_reference_rows_refuse_catalogs_and_runs_they_cannot_use(tiny_plasticc, tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from convention_rt.data import sample_catalog_path
    from train import results

    catalog, cache, reference = tiny_plasticc
    monkeypatch.setattr(results, "TABLE_PROTOCOL", TINY)
    root, runs = tmp_path / "table", tmp_path / "runs"

    def run(catalog: str, folds: Path, *more: str) -> int:
        return results.main(["--root", str(root), "run", "--runs", str(runs), "--catalog", catalog, "--folds",
                             str(folds), *more])

    # the sample catalog is synthetic: no PLAsTiCC light curves behind it (and other objects than the folds)
    other = tmp_path / "other-reference"
    other.mkdir()
    ids = _ids_and_typing(str(sample_catalog_path()))[0]
    (other / "folds.json").write_text(json.dumps({"held_out": [ids[::2], ids[1::2]]}))
    assert run(str(sample_catalog_path()), other / "folds.json", "--only", "lightcurve-boosting",
               "--plasticc-cache", str(cache)) == 1
    assert run(str(sample_catalog_path()), reference / "folds.json", "--only", "scene-boosting") == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert "sample_catalog.fits: not a PLAsTiCC catalog" in lines[0]
    assert "folds.json: its folds do not cover the labelled objects of" in lines[1]
    for name in ("lightcurve-boosting", "scene-boosting"):  # nothing left
        assert not (root / name).exists() and not (runs / name).exists()

    # a run directory of another configuration is refused, not resumed
    assert run(catalog, reference / "folds.json", "--only", "scene-boosting") == 0
    saved = json.loads((runs / "scene-boosting" / "config.json").read_text())
    (runs / "scene-boosting" / "config.json").write_text(json.dumps({**saved, "seed": 1}))
    (runs / "scene-boosting" / "fold1.json").unlink()
    assert run(catalog, reference / "folds.json", "--only", "scene-boosting") == 1
    assert "holds a run with another configuration" in capsys.readouterr().err


def test_a_tree_head_row_on_the_event_window_says_so_in_its_configuration():
    from train.reference.rows import ReferenceRow, _row_config

    protocol = {**TINY, "model": "broker"}
    row = ReferenceRow("tree_head")
    assert "inference_window" not in _row_config(row, "c.fits", protocol, 1)
    assert "inference_window" not in _row_config(row, "c.fits", {**protocol, "window": "latest"}, 1)
    assert _row_config(row, "c.fits", {**protocol, "window": "event"}, 1)["inference_window"] == "event"


@pytest.mark.torch
@pytest.mark.slow
def test_the_tree_head_row_has_the_trees_of_train_fit_alone_and_mixed_with_a_recorded_row(tmp_path, monkeypatch):
    """On the sample catalog: the row fits the very trees ``train.fit --tree-head`` fits, and mixed with a
    row's records it scores what that row with a tree head scores."""
    import torch

    from convention_rt.data import sample_catalog_path
    from train import results
    from train.fit import FitConfig, fit
    from train.early import FRAMES_SEEN
    from train.reference.rows import ReferenceRow

    catalog = str(sample_catalog_path())
    protocol = {**TINY, "fold_limit": 2, "epochs": 1}
    monkeypatch.setattr(results, "TABLE_PROTOCOL", protocol)
    root, runs = tmp_path / "table", tmp_path / "runs"
    base = dict(catalog=catalog, model="compact", folds=2, members=1, epochs=1, batch_size=8, threads=1,
                precision="fp32", learning_rate=1e-3, dropout=0.3, patience=6, seed=0)
    plain = runs / "net"
    fit(FitConfig(run_dir=str(plain), records_dir=str(root / "net"), **base))
    fit(FitConfig(run_dir=str(tmp_path / "with-trees"), tree_head=True, reuse_from=str(plain), **base))
    alone = results.Entry("trees", "trees", {"model": "compact"}, reference=ReferenceRow("tree_head"))
    mixed = results.Entry("net-trees", "net + trees", {"model": "compact"},
                          reference=ReferenceRow("tree_head", network="net"))
    monkeypatch.setattr(results, "PLAN", (alone, mixed))
    run = ["--root", str(root), "run", "--runs", str(runs), "--catalog", catalog, "--folds",
           str(plain / "folds.json"), "--only"]  # the table's split is the run's
    monkeypatch.setattr(results, "check_catalog", lambda *args: None)  # the sample catalog is no benchmark
    assert results.main([*run, "trees", "net-trees"]) == 0
    for fold in range(2):
        fitted = torch.load(tmp_path / "with-trees" / "state" / f"fold{fold}_trees.pt", weights_only=True)
        for row in ("trees", "net-trees"):
            state = torch.load(runs / row / "state" / f"fold{fold}_trees.pt", weights_only=True)
            assert state.keys() == fitted.keys() and all(torch.equal(state[k], fitted[k]) for k in state)
        expected = json.loads((tmp_path / "with-trees" / f"fold{fold}.predictions.json").read_text())
        got = json.loads((root / "net-trees" / f"fold{fold}.predictions.json").read_text())
        assert got["object_id"] == expected["object_id"]
        np.testing.assert_allclose(got["probabilities"], expected["probabilities"], atol=1e-5)
        trees = np.array(json.loads((root / "trees" / f"fold{fold}.predictions.json").read_text())["probabilities"])
        net = np.array(json.loads((root / "net" / f"fold{fold}.predictions.json").read_text())["probabilities"])
        np.testing.assert_allclose(0.5 * trees + 0.5 * net, got["probabilities"], atol=1e-5)
        # the trees alone read what an image row reads, so they have its early curve; a mixed row has none
        curve = json.loads((root / "trees" / f"fold{fold}.early.json").read_text())
        assert curve["frames_seen"] == list(FRAMES_SEEN) and len(curve["macro_f1"]) == len(FRAMES_SEEN)
        assert not (root / "net-trees" / f"fold{fold}.early.json").exists()
    # a mixed row without the other row's records is refused in one line
    broken = results.Entry("lost-trees", "lost", {"model": "compact"},
                           reference=ReferenceRow("tree_head", network="missing"))
    monkeypatch.setattr(results, "PLAN", (broken,))
    assert results.main([*run, "lost-trees"]) != 0
    assert not (root / "lost-trees" / "fold0.json").exists()
