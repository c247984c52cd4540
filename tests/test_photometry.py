"""Units, zero points and the comparison of a data's photometric contract with a model's domain."""

from __future__ import annotations

import math

import numpy as np
import pytest

from convention_rt.photometry import (
    FLUXCAL_ZERO_POINT,
    NJY_ZERO_POINT,
    Photometry,
    compare,
    counts_to_fluxcal,
    flux_scale,
    fluxcal_to_njy,
    njy_to_fluxcal,
)

LSST = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="FLUXCAL", sky_subtracted=True, stamp_kind="science")


# -- conversions, against values computed by hand --------------------------------------------------
# A source of AB magnitude 20 is 10**(0.4 * 7.5) = 1000 FLUXCAL, 10**(0.4 * 11.4) = 36307.805477 nJy,
# and 10**(0.4 * (25 - 20)) = 100 counts at zero point 25.
def test_the_zero_points_are_those_of_the_units():
    assert FLUXCAL_ZERO_POINT == 27.5 and NJY_ZERO_POINT == 31.4
    # 1 nJy = 1e-9 Jy; AB zero flux 10**(-48.6 / 2.5) erg/s/cm2/Hz = 10**(-48.6 / 2.5 + 23) Jy
    assert math.isclose(-2.5 * math.log10(1e-9 / 10 ** (-48.6 / 2.5 + 23)), 31.4, abs_tol=1e-12)


def test_njy_and_fluxcal_of_a_magnitude_20_source():
    assert njy_to_fluxcal(36307.805477010135) == pytest.approx(1000.0, rel=1e-12)
    assert fluxcal_to_njy(1000.0) == pytest.approx(36307.805477010135, rel=1e-12)
    assert njy_to_fluxcal(36.307805477010135) == pytest.approx(1.0, rel=1e-12)  # the factor of ~36
    stamp = np.random.default_rng(0).normal(100.0, 30.0, (4, 32, 32))
    np.testing.assert_allclose(fluxcal_to_njy(njy_to_fluxcal(stamp)), stamp, rtol=1e-12)
    assert njy_to_fluxcal(-3630.7805477010135) == pytest.approx(-100.0, rel=1e-12)  # negative fluxes too


def test_counts_and_a_zero_point_to_fluxcal():
    assert counts_to_fluxcal(100.0, 25.0) == pytest.approx(1000.0, rel=1e-12)
    assert counts_to_fluxcal(100.0, 26.0) == pytest.approx(398.1071705534972, rel=1e-12)
    assert counts_to_fluxcal(7.0, 27.5) == pytest.approx(7.0, rel=1e-15)  # zero point 27.5: FLUXCAL already
    stamps = np.ones((3, 2, 2))  # one zero point per epoch
    out = counts_to_fluxcal(stamps, [25.0, 27.5, 30.0])
    assert out.shape == (3, 2, 2)
    np.testing.assert_allclose(out[:, 0, 0], [10.0, 1.0, 0.1], rtol=1e-12)


def test_flux_scale_goes_from_one_zero_point_to_another():
    assert flux_scale(31.4, 27.5) == pytest.approx(10 ** -1.56, rel=1e-12)
    assert flux_scale(27.5, 31.4) == pytest.approx(10 ** 1.56, rel=1e-12)
    np.testing.assert_allclose(flux_scale([22.5, 27.5], 27.5), [100.0, 1.0], rtol=1e-12)


# -- the contract of one side ----------------------------------------------------------------------
def test_units_with_a_zero_point_of_their_own_fill_it_in_and_refuse_another():
    assert Photometry(flux_unit="nJy").zero_point == 31.4
    assert Photometry(flux_unit="fluxcal").flux_unit == "FLUXCAL" and LSST.zero_point == 27.5
    with pytest.raises(ValueError, match="FLUXCAL has the zero point 27.5, got 30"):
        Photometry(flux_unit="FLUXCAL", zero_point=30.0)
    with pytest.raises(ValueError, match="no zero point per epoch"):
        Photometry(flux_unit="nJy", zero_point_per_epoch=True)
    with pytest.raises(ValueError, match="not both"):
        Photometry(flux_unit="DN", zero_point=26.0, zero_point_per_epoch=True)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("pixel_scale", -0.2, "pixel_scale must be a positive number"),
    ("pixel_scale", "0.2", "pixel_scale must be a positive number"),
    ("flux_unit", "Jy", "flux_unit must be one of FLUXCAL, nJy, DN"),
    ("zero_point", math.nan, "zero_point must be a finite"),
    ("sky_subtracted", "yes", "sky_subtracted must be True or False"),
    ("stamp_kind", "calexp", "stamp_kind must be one of science, difference, template"),
    ("profile", " ", "profile must be a survey name"),
])
def test_invalid_values_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        Photometry(**{field: value})


def test_header_keywords_round_trip():
    ztf = Photometry(profile="ZTF", pixel_scale=1.01, flux_unit="DN", zero_point_per_epoch=True,
                     sky_subtracted=False, stamp_kind="Science")
    assert ztf.profile == "ztf" and ztf.stamp_kind == "science"
    header = {key: value for key, (value, _) in ztf.header().items()}
    assert header == {"PROFILE": "ztf", "PIXSCALE": 1.01, "FLUXUNIT": "DN", "SKYSUB": False, "CUTOUT": "science"}
    assert Photometry.from_header(header, zero_point_column=True) == ztf
    one = Photometry(profile="ztf", pixel_scale=1.01, flux_unit="DN", zero_point=26.2, sky_subtracted=False,
                     stamp_kind="science")
    assert one.header()["MAGZP"][0] == 26.2
    assert Photometry.from_header({k: v for k, (v, _) in one.header().items()}) == one
    for photometry in (LSST, Photometry(flux_unit="nJy")):
        assert Photometry.from_header({k: v for k, (v, _) in photometry.header().items()}) == photometry


def test_a_header_without_keywords_declares_nothing():
    nothing = Photometry.from_header({"SOURCE": "somewhere"})
    assert nothing == Photometry() and not nothing.complete and not nothing.convertible
    assert nothing.undeclared() == ["PROFILE", "PIXSCALE", "FLUXUNIT", "SKYSUB", "CUTOUT"]
    assert Photometry(flux_unit="DN").undeclared() == ["PROFILE", "PIXSCALE", "MAGZP", "SKYSUB", "CUTOUT"]


@pytest.mark.parametrize(("header", "message"), [
    ({"PIXSCALE": "fine"}, "^PIXSCALE: must be a number"),
    ({"SKYSUB": "yes"}, "^SKYSUB: must be T or F"),
    ({"FLUXUNIT": "mag"}, "^FLUXUNIT: flux_unit must be one of"),
    ({"FLUXUNIT": "nJy", "MAGZP": 30.0}, "^MAGZP: nJy has the zero point 31.4, got 30$"),
    ({"FLUXUNIT": "DN", "MAGZP": 26.0}, None),
])
def test_bad_header_values_name_their_keyword(header, message):
    if message is None:
        assert Photometry.from_header(header).zero_point == 26.0
        with pytest.raises(ValueError, match="^MAGZP: given both as a keyword and as the EPOCHS column"):
            Photometry.from_header(header, zero_point_column=True)
        return
    with pytest.raises(ValueError, match=message):
        Photometry.from_header(header)


# -- data against a model's domain -------------------------------------------------------------------
def test_rubin_science_stamps_are_in_the_domain_of_an_lsst_model_once_converted():
    rubin = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="nJy", sky_subtracted=True, stamp_kind="science")
    check = compare(rubin, LSST)
    assert check.in_domain and check.reason == "" and check.differs == check.unknown == ()
    assert check.scale == pytest.approx(1 / 36.307805477010135, rel=1e-12)
    assert compare(LSST, LSST).scale == 1.0


def test_what_cannot_be_converted_is_named():
    ztf = Photometry(profile="ztf", pixel_scale=1.01, flux_unit="DN", zero_point_per_epoch=True,
                     sky_subtracted=False, stamp_kind="science")
    check = compare(ztf, LSST)
    assert check.differs == ("survey", "pixel_scale", "sky") and check.reason == "out_of_domain:survey,pixel_scale,sky"
    assert check.scale is None  # per epoch
    np.testing.assert_allclose(check.epoch_scale([25.0, 27.5, np.nan]), [10.0, 1.0, np.nan], rtol=1e-12)
    assert "pixel_scale 1.01\"/px (model: 0.2\"/px)" in check.summary()
    difference = compare(Photometry(profile="lsst", pixel_scale=0.2, flux_unit="nJy", sky_subtracted=True,
                                    stamp_kind="difference"), LSST)
    assert difference.reason == "out_of_domain:stamp_kind"


def test_counts_without_a_zero_point_cannot_be_converted():
    counts = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="DN", sky_subtracted=True, stamp_kind="science")
    check = compare(counts, LSST)
    assert check.reason == "out_of_domain:flux_unit" and check.scale is None


def test_pixel_scales_within_two_percent_are_the_same():
    near = Photometry(profile="lsst", pixel_scale=0.203, flux_unit="FLUXCAL", sky_subtracted=True,
                      stamp_kind="science")
    assert compare(near, LSST).in_domain
    far = Photometry(profile="lsst", pixel_scale=0.21, flux_unit="FLUXCAL", sky_subtracted=True,
                     stamp_kind="science")
    assert compare(far, LSST).reason == "out_of_domain:pixel_scale"


def test_what_is_not_declared_is_unknown_and_a_difference_comes_first():
    assert compare(Photometry(), LSST).reason == "domain_unknown:survey,pixel_scale,flux_unit,sky,stamp_kind"
    partial = Photometry(profile="ztf", pixel_scale=0.2, flux_unit="FLUXCAL", sky_subtracted=True)
    check = compare(partial, LSST)
    assert check.reason == "out_of_domain:survey" and check.note == "domain_unknown=stamp_kind"
    assert "stamp_kind not declared (CUTOUT; model: science)" in check.summary()


def test_a_model_domain_must_be_complete():
    with pytest.raises(ValueError, match="must declare every field"):
        compare(LSST, Photometry(profile="lsst"))


def test_module_examples():
    import doctest

    import convention_rt.photometry

    failures, tried = doctest.testmod(convention_rt.photometry, verbose=False)
    assert tried >= 2 and failures == 0
