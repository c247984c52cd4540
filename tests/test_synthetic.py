"""Tests of the synthetic benchmark: light curves, cadences, objects, the CLI and the shipped sample."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")  # the train extra: the renderer needs scipy

from astropy.io import fits  # noqa: E402

from convention_rt.catalog import Catalog  # noqa: E402
from convention_rt.validate import summarise  # noqa: E402
from convention_rt.data import sample_catalog_path  # noqa: E402
from convention_rt.errors import UsageError  # noqa: E402
from train.data.lightcurves import CLASSES, Agn, Flare, Supernova, flux_to_mag, mag_to_flux  # noqa: E402
from train.data.synthetic import PROFILES, draw_cadence, draw_object, generate, main  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "data.md"


# -- light curves -------------------------------------------------------------------
def test_supernova_peaks_at_its_peak_magnitude():
    sn = Supernova.draw(np.random.default_rng(0), "Ibc", t0=60000.0, z=0.1)
    t = np.linspace(59950.0, 60100.0, 3001)
    flux = sn.flux(t, np.full(t.shape, 4400.0 * 1.1))
    assert flux.max() == pytest.approx(mag_to_flux(sn.peak_mag(4400.0 * 1.1)), rel=1e-3)
    assert abs(t[flux.argmax()] - 60000.0) < 0.5


def test_sn_ia_has_a_red_secondary_maximum_and_falls_faster_in_blue():
    sn = Supernova.draw(np.random.default_rng(1), "Ia", t0=0.0, z=0.01)
    t = np.linspace(0.0, 60.0, 601)
    red = sn.flux(t, np.full(t.shape, 8000.0)) / sn.flux(np.zeros(1), np.full(1, 8000.0))
    blue = sn.flux(t, np.full(t.shape, 4400.0)) / sn.flux(np.zeros(1), np.full(1, 4400.0))
    rising_again = np.diff(red[(t > 10) & (t < 40)]) > 0
    assert rising_again.any()                       # the i-band bump
    assert not (np.diff(blue[t > 1]) > 0).any()     # monotonic decline in the blue
    assert blue[t == 20.0] < red[t == 20.0]


def test_agn_walk_is_reproducible_and_bluer_varies_more():
    agn = Agn.draw(np.random.default_rng(2), z=0.5)
    t = np.sort(np.random.default_rng(3).uniform(0.0, 3000.0, 400))
    blue = flux_to_mag(agn.flux(t, np.full(t.shape, 3700.0)))
    red = flux_to_mag(agn.flux(t, np.full(t.shape, 9000.0)))
    assert np.array_equal(blue, flux_to_mag(agn.flux(t, np.full(t.shape, 3700.0))))
    assert np.std(blue) > np.std(red) > 0


def test_flares_are_caught_by_some_epochs():
    mjd = np.arange(60000.0, 60040.0, 1.0)
    star = Flare.draw(np.random.default_rng(4), mjd=mjd, mag_range=(18.0, 19.0))
    flux = star.flux(mjd, np.full(mjd.shape, 4800.0))
    quiescent = np.median(flux)
    assert np.count_nonzero(flux > 1.05 * quiescent) >= 1
    hot = star.flux(mjd, np.full(mjd.shape, 3600.0)) / star.flux(mjd, np.full(mjd.shape, 9000.0))
    assert hot.max() > 2 * np.median(hot)          # flares are blue


# -- cadences and objects -------------------------------------------------------------------
def test_cadence_profiles():
    rng = np.random.default_rng(5)
    mjd, band = draw_cadence(PROFILES["sdss_s82"], 23, rng)
    assert mjd.shape == (20,) and np.all(np.diff(mjd) >= 0)
    visits = mjd.reshape(4, 5)
    assert [PROFILES["sdss_s82"].bands[b] for b in band[:5]] == ["r", "i", "u", "z", "g"]
    np.testing.assert_allclose(np.diff(visits, axis=1), 71.7 / 86400.0, rtol=1e-6)
    assert np.all(np.diff(np.floor(visits[:, 0])) >= 1.0)            # one visit a night
    profile = PROFILES["sdss_s82"]
    assert np.all(np.mod(mjd - profile.start_mjd, 365.25) < profile.season + 1.0)  # within the seasons

    mjd, band = draw_cadence(PROFILES["lsst"], 300, rng)
    assert mjd.shape == (300,) and len(np.unique(mjd)) == 300 and set(band) == set(range(6))
    mjd, band = draw_cadence(PROFILES["ztf"], 300, rng)
    counts = Counter(PROFILES["ztf"].bands[b] for b in band)
    assert counts["g"] > 3 * counts["i"] and counts["r"] > 3 * counts["i"] > 0


@pytest.mark.parametrize("label", CLASSES)
def test_hosts_only_for_extragalactic_classes(label):
    rng = np.random.default_rng(6)
    for _ in range(5):
        obj = draw_object(label, PROFILES["lsst"], 30, rng)
        assert obj.label == label and obj.typing in ("spec", "phot")
        assert obj.mjd.shape == obj.flux.shape == obj.flux_err.shape == obj.fwhm.shape == (30,)
        assert np.all(obj.flux_err > 0) and np.all(np.isfinite(obj.flux))
        if label == "Variable":
            assert obj.host is None and obj.z == 0.0
        else:
            assert obj.host is not None and obj.z > 0
            centred = bool(np.all(obj.host.offset == 0))
            assert centred == (label == "AGN")


def test_draw_object_rejects_unknown_class():
    with pytest.raises(UsageError, match="label"):
        draw_object("QSO", PROFILES["lsst"], 10, np.random.default_rng(0))


# -- written catalogs ---------------------------------------------------------------------
def _write(directory: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> bytes:
    directory.mkdir()
    monkeypatch.chdir(directory)  # the header records the path as given
    generate("cat.fits", n_objects=8, profile="lsst", seed=seed, min_epochs=4, max_epochs=8)
    return (directory / "cat.fits").read_bytes()


def test_same_seed_same_bytes(tmp_path, monkeypatch):
    first = _write(tmp_path / "a", monkeypatch, seed=3)
    assert _write(tmp_path / "b", monkeypatch, seed=3) == first
    assert _write(tmp_path / "c", monkeypatch, seed=4) != first


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_written_catalog_reads_clean_and_balanced(tmp_path, profile):
    path = generate(tmp_path / "cat.fits", n_objects=10, profile=profile, seed=1, min_epochs=5, max_epochs=12)
    with Catalog(path) as catalog:
        summary = summarise(catalog)
        header = catalog.header
    assert summary.n_invalid == 0 and not summary.notes and summary.bad_pixels == 0
    assert summary.n_objects == 10 and set(summary.classes) == set(CLASSES)
    assert max(summary.classes.values()) - min(summary.classes.values()) <= 1
    assert set(summary.frames_per_band) <= set(PROFILES[profile].bands)
    assert header["SOURCE"] == "synthetic" and header["PROFILE"] == profile and header["SEED"] == 1
    assert header["PIXSCALE"] == PROFILES[profile].render.pixel_scale
    assert header["COMMAND"].startswith("python -m train.data.synthetic --out ")


def test_cli_in_process(tmp_path, capsys):
    out = tmp_path / "cli.fits"
    args = ["--out", str(out), "--n-objects", "4", "--profile", "ztf", "--seed", "9", "--min-epochs", "3",
            "--max-epochs", "5"]
    assert main(args) == 0 and out.is_file()
    assert "4 objects" in capsys.readouterr().out
    assert main(args) == 2                                 # exists already
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["--out", str(out), "--n-objects", "0"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out), "--n-objects", "4", "--profile", "hst"])
    assert exc.value.code == 2


# -- the shipped sample -------------------------------------------------------------------------
def test_shipped_sample_reads_clean():
    with Catalog(sample_catalog_path()) as catalog:
        summary = summarise(catalog)
    assert summary.n_invalid == 0 and not summary.notes
    assert summary.classes == Counter({label: 6 for label in CLASSES})
    assert set(summary.typing) == {"spec", "phot"}
    epochs = fits.getdata(sample_catalog_path(), "OBJECTS")["N_EPOCHS"]
    assert np.all((epochs >= 20) & (epochs <= 40))
    assert sample_catalog_path().stat().st_size < 3.2e6


def test_shipped_sample_is_what_the_documented_command_writes(tmp_path, monkeypatch):
    command = fits.getheader(sample_catalog_path())["COMMAND"]
    assert command in DOCS.read_text()
    options = dict(re.findall(r"--([\w-]+) (\S+)", command))
    (tmp_path / Path(options["out"]).parent).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    generate(options["out"], n_objects=int(options["n-objects"]), profile=options["profile"],
             seed=int(options["seed"]), min_epochs=int(options["min-epochs"]), max_epochs=int(options["max-epochs"]))
    with fits.open(sample_catalog_path()) as shipped, fits.open(tmp_path / options["out"]) as again:
        assert shipped[0].header == again[0].header
        for name in ("OBJECTS", "EPOCHS"):
            for column in shipped[name].columns.names:
                expected, actual = shipped[name].data[column], again[name].data[column]
                if expected.dtype.kind == "f":
                    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-4 * np.abs(expected).max())
                else:
                    assert np.array_equal(actual, expected)
