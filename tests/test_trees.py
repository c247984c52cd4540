"""The boosted-tree head: trees as tensor gathers against scikit-learn, its features, the mixture, the run."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402

from train.model import build_model, get_preset  # noqa: E402
from train.model.convention import LightCurveSummary  # noqa: E402
from train.model.stamp_photometry import PhotometryFeatures  # noqa: E402
from train.model.trees import (  # noqa: E402
    SCENE_ANNULUS,
    SCENE_APERTURES,
    SCENE_MOMENT_RADIUS,
    TREE_WEIGHTS,
    HeadFeatures,
    LightCurveFeatures,
    SceneFeatures,
    TreeEnsemble,
    TreeMixture,
    _float32_at_most,
    head_features,
    tree_state,
)

pytestmark = pytest.mark.torch


def _fitted(n_classes: int, seed: int, *, nan_share: float = 0.05, levels: int = 7, iterations: int = 30):
    """A fitted classifier on float32 features taking few distinct values (so that many equal a threshold's
    neighbours), with NaN, and one all-NaN feature left out as :func:`fit_boosting` leaves it out."""
    rng = np.random.default_rng(seed)
    features = (rng.integers(0, levels, size=(600, 6)) * np.float32(0.1) + np.float32(1e-3)).astype(np.float32)
    labels = (features[:, 0] + features[:, 1] > features[:, 2] + 0.4).astype(int)
    if n_classes > 2:
        labels = labels + (n_classes - 2) * (features[:, 3] > 0.3)
    features[rng.random(features.shape) < nan_share] = np.nan
    used = np.ones(features.shape[1], bool)
    used[4] = False
    model = HistGradientBoostingClassifier(max_iter=iterations, early_stopping=False, random_state=0,
                                           max_leaf_nodes=15, min_samples_leaf=5)
    model.fit(features[:400][:, used].astype(np.float64), labels[:400])
    return model, features, used


@pytest.mark.parametrize("n_classes", [2, 3, 4])
def test_tree_ensemble_predicts_as_scikit_learn_at_every_iteration_count(n_classes):
    model, features, used = _fitted(n_classes, seed=n_classes)
    staged = list(model.staged_predict_proba(features[:, used].astype(np.float64)))
    for iterations in (1, 7, len(staged)):
        trees = TreeEnsemble(tree_state(model, iterations, used, n_classes))
        ours = trees(torch.from_numpy(features)).numpy()
        expected = np.zeros((features.shape[0], n_classes))
        expected[:, model.classes_] = staged[iterations - 1]
        np.testing.assert_allclose(ours, expected, atol=2e-6)
        assert (ours.argmax(1) == expected.argmax(1)).all()


def test_classes_the_fit_never_saw_get_probability_zero():
    model, features, used = _fitted(2, seed=1)
    state = tree_state(model, 5, used, n_classes=4)
    state["score_class"] = torch.tensor([1, 3])  # the fit's classes were task classes 1 and 3
    probabilities = TreeEnsemble(state)(torch.from_numpy(features)).numpy()
    assert (probabilities[:, [0, 2]] == 0).all()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(threshold=st.floats(-1e30, 1e30, allow_nan=False), x=st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_a_float32_decides_the_rounded_threshold_as_the_float64_one(threshold, x):
    rounded = _float32_at_most(np.array([threshold]))[0]
    assert rounded.dtype == np.float32 and float(rounded) <= threshold
    assert (np.float64(np.float32(x)) <= threshold) == (np.float32(x) <= rounded)
    neighbour = np.float32(np.float32(threshold))  # the nearest float32, on either side
    assert (np.float64(neighbour) <= threshold) == (neighbour <= rounded)


def _inputs(batch: int, frames: int, seed: int, bands: int = 6, side: int = 32):
    rng = np.random.default_rng(seed)
    stamps = torch.from_numpy(rng.normal(size=(batch, frames, side, side)).astype(np.float32))
    band_ids = torch.from_numpy(rng.integers(1, bands + 1, size=(batch, frames)))
    times = torch.from_numpy(np.sort(rng.uniform(60000, 60300, size=(batch, frames)), axis=1).astype(np.float32))
    return stamps, band_ids, times


def test_features_are_those_the_light_curve_branch_projects_at_its_initial_apertures():
    config = dataclasses.replace(get_preset("broker"), lightcurve_summary=8)
    branch = LightCurveSummary(config)
    captured = []
    branch.project.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    stamps, band_ids, times = _inputs(3, 20, seed=0, bands=config.n_band_ids - 1)
    band_ids[1, 12:] = 0  # padding
    stamps[1, 12:] = 0.0
    branch(stamps, band_ids, times)
    features = LightCurveFeatures(config.stamp_size, config.n_band_ids)
    torch.testing.assert_close(features(stamps, band_ids, times), captured[0])
    assert features.width == captured[0].shape[1]


def test_features_ignore_what_padding_frames_hold_and_read_channel_zero():
    features = LightCurveFeatures(32, 7)
    stamps, band_ids, times = _inputs(2, 16, seed=1)
    band_ids[:, 10:] = 0
    noisy = stamps.clone()
    noisy[:, 10:] = 100.0
    expected = features(stamps, band_ids, times)
    torch.testing.assert_close(features(noisy, band_ids, times), expected)
    torch.testing.assert_close(features(noisy[:, :10], band_ids[:, :10], times[:, :10]), expected)
    channels = torch.stack([noisy, torch.randn_like(noisy)], dim=2)  # (B, M, C, H, W): channel 0 is the stamp
    torch.testing.assert_close(features(channels, band_ids, times), expected)


def _faint_bands(batch: int, frames: int, seed: int, bands: int = 6):
    """Stamps as a faint band's look once normalised: a level far from 0 and noise thousands of times smaller,
    so that a flux against the band's mean frame is all cancellation; bands of 1, 2 and more frames."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(-1.0, 1.0, size=(batch, 1, 1, 1))
    stamps = (level + 2e-4 * rng.normal(size=(batch, frames, 32, 32))).astype(np.float32)
    band_ids = rng.integers(1, bands + 1, size=(batch, frames))
    band_ids[:, 0], band_ids[:, 1:3] = 1, 2  # band 1: one frame at least; band 2: two at least
    band_ids[:batch // 2, 3:] = rng.integers(3, bands + 1, size=(batch // 2, frames - 3))  # exactly one and two
    times = np.sort(rng.uniform(60000, 60300, size=(batch, frames)), axis=1).astype(np.float32)
    return torch.from_numpy(stamps), torch.from_numpy(band_ids), torch.from_numpy(times)


def test_features_that_are_zero_in_exact_arithmetic_are_exactly_zero():
    """A band's mean flux against its mean frame with one or two frames, and the weighted scatter of one frame,
    are 0 in exact arithmetic, and the mean flux of a faint band is 0 but for rounding: their rounding, which
    ONNX Runtime and PyTorch (and two batch sizes) leave differently, must not reach the trees, which would cut
    it."""
    stamps, band_ids, times = _faint_bands(32, 12, seed=9)
    lightcurve = LightCurveFeatures(32, 7)
    features = lightcurve(stamps, band_ids, times)
    bands, apertures = 6, lightcurve.aperture.shape[0]
    means = features[:, 2 * bands * apertures:3 * bands * apertures].reshape(-1, bands, apertures)
    counts = torch.stack([(band_ids == b).sum(dim=1) for b in range(1, bands + 1)], dim=1)
    assert (counts[:16, 0] == 1).all() and (counts[:16, 1] == 2).all()
    assert (means[counts <= 2] == 0).all() and (means == 0).all()  # faint: below MEAN_FLUX_STEP
    bright_inputs = _inputs(32, 12, seed=9)
    bright = lightcurve(*bright_inputs)[:, 2 * bands * apertures:3 * bands * apertures].reshape(-1, bands, apertures)
    bright_counts = torch.stack([(bright_inputs[1] == b).sum(dim=1) for b in range(1, bands + 1)], dim=1)
    assert (bright[bright_counts > 2] != 0).all()  # unit noise: bands of three frames or more are measured
    assert (bright[bright_counts <= 2] == 0).all()  # and the guard zeroes the means, not other columns
    photometry = PhotometryFeatures(32, 7)(stamps, band_ids, times)
    per_band = photometry[:, :bands * 13].reshape(-1, bands, 13)  # counts, detected share, max, min, mean, std, ...
    assert (per_band[..., 5][counts == 1] == 0).all()
    assert (per_band[..., 5][counts > 1] > 0).all()


def test_a_mixture_member_is_the_weighted_mean_of_both_probabilities():
    torch.manual_seed(0)
    network = build_model("compact").eval()
    model, _, used = _fitted(4, seed=4)
    features = LightCurveFeatures(32, network.config.n_band_ids)
    used = np.zeros(features.width, bool)
    used[:5] = True  # five of the light-curve features, as a fit on them would use
    trees = TreeEnsemble(tree_state(model, 10, used, 4))
    stamps, band_ids, times = _inputs(4, network.config.seq_len, seed=2, bands=network.config.n_band_ids - 1)
    member = TreeMixture(network, trees, features, weight=0.25).eval()
    with torch.no_grad():
        mixed = torch.softmax(member(stamps, band_ids, times), dim=-1)
        expected = 0.25 * trees(features(stamps, band_ids, times)) + 0.75 * torch.softmax(
            network(stamps, band_ids, times), dim=-1)
    torch.testing.assert_close(mixed, expected, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"weight must lie in \(0, 1\)"):
        TreeMixture(network, trees, features, weight=1.0)


@pytest.mark.slow
def test_a_run_with_a_tree_head_reuses_its_members_scores_the_mixture_and_exports_it(tmp_path, monkeypatch):
    from convention_rt.data import sample_catalog_path
    from convention_rt.session import ModelSession
    from train.checkpoint import Checkpoint
    from train.fit import FitConfig, fit, protocol

    base = dict(catalog=str(sample_catalog_path()), model="compact", folds=2, members=1, epochs=1, batch_size=8,
                threads=1)
    plain = fit(FitConfig(run_dir=str(tmp_path / "plain"), **base))
    trained = []
    monkeypatch.setattr(protocol, "train_member", lambda *args, **kwargs: trained.append(1))
    head = dict(tree_head=True, tree_scene=True, tree_photometry=True, tree_prefixes=1, tree_weight_chosen=True,
                tree_iterations=40)
    mixed = fit(FitConfig(run_dir=str(tmp_path / "trees"), reuse_from=str(tmp_path / "plain"),
                          export_out=str(tmp_path / "export"), records_dir=str(tmp_path / "records"), **head, **base))
    assert trained == []  # the members are the plain run's
    assert len(mixed["per_fold"]) == len(plain["per_fold"]) == 2
    for fold in range(2):
        assert (tmp_path / "trees" / "state" / f"fold{fold}_trees.pt").exists()
        record = json.loads((tmp_path / "records" / f"fold{fold}.boosting.json").read_text())
        config = get_preset("compact")
        expected = sum(part(config.stamp_size, config.n_band_ids).width
                       for part in (LightCurveFeatures, SceneFeatures, PhotometryFeatures))
        assert record["iterations"] >= 1 and record["features"] == expected
        assert record["scene"] is True and record["photometry"] is True and record["prefix_draws"] == 1 and record["grown"] == 40
        assert record["weight"] in TREE_WEIGHTS and len(record["weight_log_loss"]) == len(TREE_WEIGHTS)
        probabilities = [json.loads((tmp_path / run / f"fold{fold}.predictions.json").read_text())["probabilities"]
                         for run in ("plain", "trees")]
        assert probabilities[0] != probabilities[1]
    checkpoint = Checkpoint.load(tmp_path / "trees" / "ensemble.ckpt")
    assert checkpoint.trees is not None and bool(checkpoint.trees["scene"]) and bool(checkpoint.trees["photometry"])
    members = checkpoint.build_members()
    assert all(isinstance(m, TreeMixture) and m.features.scene is not None and m.features.photometry is not None
               for m in members)
    session = ModelSession(tmp_path / "export" / "model.onnx", device="cpu")
    chosen = json.loads((tmp_path / "records" / "fold0.boosting.json").read_text())["weight"]
    assert session.card.provenance["tree_head"]["weight"] == chosen
    assert all(m.weight == chosen for m in members)
    assert session.card.provenance["config"]["tree_head"] is True
    # what the run scored is what the exported graph computes: the fold-0 predictions again, from ONNX Runtime
    from train.data.dataset import load_labelled
    from train.fit import evaluation_subset, read_folds
    from convention_rt.transform import to_inputs

    data = load_labelled(base["catalog"], "4class")
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    held_out = np.array(sorted(index_of[i] for i in read_folds(tmp_path / "trees" / "folds.json")[0]))
    scored = evaluation_subset(data, held_out)
    inputs = to_inputs(data.chunk(scored), session.card)
    seq = inputs.sequences
    onnx_probabilities = session.run(seq.stamps, seq.band_ids, inputs.times).mean(axis=1)
    recorded = json.loads((tmp_path / "trees" / "fold0.predictions.json").read_text())["probabilities"]
    np.testing.assert_allclose(onnx_probabilities, np.array(recorded), atol=1e-4)
    # a fresh run with the same members fits the same trees
    again = fit(FitConfig(run_dir=str(tmp_path / "again"), reuse_from=str(tmp_path / "plain"), **head, **base))
    assert again["per_fold"] == mixed["per_fold"]


@pytest.mark.slow
def test_a_baseline_with_a_tree_head_reuses_its_members_and_mixes_them_at_the_chosen_weight(tmp_path, monkeypatch):
    """CNN + GRU with the tree head (the fair reference of the broker's mixture): its members are the plain
    run's, and each held-out probability is the chosen mixture of the trees and the plain run's."""
    from convention_rt.data import sample_catalog_path
    from train.fit import FitConfig, evaluation_subset, fit, prepare, protocol, read_folds
    from train.fit.tree_head import head_table
    from train.model.trees import head_features

    base = dict(catalog=str(sample_catalog_path()), model="cnn_gru", folds=2, members=1, epochs=1, batch_size=8,
                threads=1, precision="fp32")
    fit(FitConfig(run_dir=str(tmp_path / "plain"), **base))
    trained = []
    monkeypatch.setattr(protocol, "train_member", lambda *args, **kwargs: trained.append(1))
    head = dict(tree_head=True, tree_scene=True, tree_photometry=True, tree_prefixes=1, tree_weight_chosen=True,
                tree_iterations=20)
    config = FitConfig(run_dir=str(tmp_path / "trees"), reuse_from=str(tmp_path / "plain"), **head, **base)
    fit(config)
    assert trained == []
    prepared = prepare(config)
    data = prepared.data
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    for fold, objects in enumerate(read_folds(tmp_path / "trees" / "folds.json")):
        weight = json.loads((tmp_path / "trees" / "state" / f"fold{fold}_boosting.json").read_text())["weight"]
        assert weight in TREE_WEIGHTS
        state = torch.load(tmp_path / "trees" / "state" / f"fold{fold}_trees.pt", weights_only=True)
        features = head_features(state, prepared.model_config.stamp_size, prepared.model_config.n_band_ids)
        scored = evaluation_subset(data, np.array(sorted(index_of[i] for i in objects)))
        with torch.no_grad():
            trees = TreeEnsemble(state)(torch.from_numpy(
                head_table(data, scored, prepared.card, features).astype(np.float32))).numpy()
        plain, mixed = (np.array(json.loads((tmp_path / run / f"fold{fold}.predictions.json").read_text())
                                 ["probabilities"]) for run in ("plain", "trees"))
        np.testing.assert_allclose(mixed, weight * trees + (1 - weight) * plain, atol=1e-5)


def test_a_tree_head_exports_fold_zero_only_and_its_options_need_it():
    from train.fit import FitConfig

    with pytest.raises(ValueError, match="tree_head fits trees per fold"):
        FitConfig(catalog="c.fits", run_dir="r", tree_head=True, export_members="all")
    for option in ({"tree_scene": True}, {"tree_photometry": True}, {"tree_prefixes": 2}, {"tree_iterations": 100}):
        with pytest.raises(ValueError, match="they need tree_head"):
            FitConfig(catalog="c.fits", run_dir="r", **option)
    with pytest.raises(ValueError, match="tree_prefixes must be 0 or more"):
        FitConfig(catalog="c.fits", run_dir="r", tree_head=True, tree_prefixes=-1)
    with pytest.raises(ValueError, match="tree_iterations must be at least 1"):
        FitConfig(catalog="c.fits", run_dir="r", tree_head=True, tree_iterations=0)


def test_the_trees_export_to_onnx_and_run_in_onnx_runtime_as_in_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, features, used = _fitted(4, seed=5, iterations=20)
    trees = TreeEnsemble(tree_state(model, 20, used, 4)).eval()
    assert trees.paths.shape[1] > 1  # trees with splits
    path = tmp_path / "trees.onnx"
    example = torch.from_numpy(features[:8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own notices, as train.export ignores them
        torch.onnx.export(trees, (example,), str(path), dynamo=True, input_names=["features"],
                          output_names=["probabilities"], dynamic_shapes=({0: torch.export.Dim("n")},))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"features": features})[0]
    np.testing.assert_allclose(ours, trees(torch.from_numpy(features)).numpy(), atol=1e-6)


@pytest.mark.parametrize("scene,photometry", [(False, False), (True, False), (True, True)])
def test_onnx_runtime_computes_the_features_bit_for_bit_as_pytorch(tmp_path, scene, photometry):
    """Trees cut features at thresholds: a last-bit difference between the runtimes would change a branch."""
    ort = pytest.importorskip("onnxruntime")
    features = HeadFeatures(32, 7, scene=scene, photometry=photometry).eval()
    stamps, band_ids, times = _stamps_with_sources(48, 99, seed=6)
    band_ids[:8, 40:] = 0
    band_ids[8:12, 1:] = 0  # first alerts: one frame
    band_ids[12:16] = 3  # one band
    faint = _faint_bands(16, 99, seed=10)  # bands of one and two frames, all cancellation
    stamps, band_ids, times = (torch.cat([a, b]) for a, b in zip((stamps, band_ids, times), faint))
    path = tmp_path / "features.onnx"
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(features, (stamps[:2], band_ids[:2], times[:2]), str(path), dynamo=True,
                          input_names=["stamps", "band_ids", "times"], dynamic_shapes=({0: batch},) * 3)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"stamps": stamps.numpy(), "band_ids": band_ids.numpy(), "times": times.numpy()})[0]
    np.testing.assert_array_equal(ours, features(stamps, band_ids, times).numpy())


def test_an_exported_ensemble_evaluates_its_shared_trees_once():
    from train.checkpoint import Checkpoint
    from train.export import EnsembleProbabilities

    config = dataclasses.replace(get_preset("compact"), seq_len=12)
    model, _, _ = _fitted(4, seed=7)
    used = np.zeros(LightCurveFeatures(32, config.n_band_ids).width, bool)
    used[:5] = True
    states = [build_model(config).state_dict() for _ in range(3)]
    checkpoint = Checkpoint(name="t", version="0", preset="compact", config=config, members=states,
                            bands=("u", "g", "r", "i", "z", "y"),
                            normalisation={b: (0.0, 1.0) for b in "ugrizy"}, trees=tree_state(model, 5, used, 4))
    ensemble = EnsembleProbabilities(checkpoint.build_members()).eval()
    assert ensemble.shared_trees
    stamps, band_ids, times = _inputs(2, 12, seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(ensemble, (stamps, band_ids, times), strict=False)
    assert sum("index_select" in str(node.target) for node in program.graph.nodes) == 1
    separate = [torch.softmax(m(stamps, band_ids, times), dim=-1) for m in checkpoint.build_members()]
    torch.testing.assert_close(ensemble(stamps, band_ids, times), torch.stack(separate, dim=1))


def _stamps_with_sources(batch: int, frames: int, seed: int, bands: int = 6, side: int = 32):
    """:func:`_inputs` with a Gaussian source of random flux, width and offset near each stamp's centre."""
    stamps, band_ids, times = _inputs(batch, frames, seed, bands, side)
    rng = np.random.default_rng(seed + 100)
    y, x = np.mgrid[:side, :side] - side // 2
    for b in range(batch):
        cy, cx = rng.uniform(-2, 2, size=2)
        width = rng.uniform(1.0, 3.0)
        source = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
        stamps[b] += torch.from_numpy((rng.uniform(0, 50) * source).astype(np.float32))
    return stamps, band_ids, times


def _numpy_scene(stamps: np.ndarray, band_ids: np.ndarray, n_bands: int) -> np.ndarray:
    """Reference of :class:`SceneFeatures` for one object, pixel by pixel: (M, H, W), (M,) -> (K,)."""
    side = stamps.shape[-1]
    y, x = np.mgrid[:side, :side] - side // 2
    radius = np.hypot(x, y)
    ring = (radius >= SCENE_ANNULUS[0]) & (radius < SCENE_ANNULUS[1])
    near = radius <= SCENE_MOMENT_RADIUS
    per_band, fluxes = [], []
    for band in range(1, n_bands + 1):
        frames = stamps[band_ids == band].astype(np.float64)
        row = [float(len(frames))] + [np.nan] * 10
        flux = np.full(len(SCENE_APERTURES), np.nan)
        if len(frames):
            image = frames.mean(axis=0)
            background = image[ring].mean()
            image = image - background
            flux = np.array([image[radius <= r].sum() for r in SCENE_APERTURES])
            row[1:7] = [background, *flux, flux[1] / flux[-1] if flux[-1] > 0 else np.nan]
            weights = np.clip(image[near], 0, None)
            if weights.sum() > 0:
                cx, cy = weights @ x[near] / weights.sum(), weights @ y[near] / weights.sum()
                ixx = weights @ (x[near] - cx) ** 2 / weights.sum()
                iyy = weights @ (y[near] - cy) ** 2 / weights.sum()
                ixy = weights @ ((x[near] - cx) * (y[near] - cy)) / weights.sum()
                trace = ixx + iyy
                row[7:] = [np.hypot(cx, cy), np.sqrt(trace / 2),
                           np.hypot(ixx - iyy, 2 * ixy) / trace if trace > 1e-9 else np.nan,
                           radius[near][np.argmax(image[near])]]
        per_band += row
        fluxes.append(flux)
    colours = []
    for b in range(n_bands - 1):
        for k in (1, len(SCENE_APERTURES) - 1):
            first, second = fluxes[b][k], fluxes[b + 1][k]
            colours.append(-2.5 * np.log10(first / second) if first > 0 and second > 0 else np.nan)
    return np.array(per_band + colours)


def test_scene_features_are_those_of_the_numpy_reference():
    stamps, band_ids, times = _stamps_with_sources(6, 20, seed=9)
    band_ids[0, 1:] = 0  # a first alert
    band_ids[1] = torch.where(band_ids[1] == 2, 0, band_ids[1])  # a band never seen
    band_ids[2, :] = 4
    stamps[3] = 5.0  # flat: nothing above the background, so no moments, concentration or colours
    stamps = stamps * (band_ids != 0)[:, :, None, None]
    scene = SceneFeatures(32, 7)
    ours = scene(stamps.double(), band_ids).numpy()
    assert ours.shape == (6, scene.width) == (6, 6 * 11 + 2 * 5)
    for b in range(6):
        np.testing.assert_allclose(ours[b], _numpy_scene(stamps[b].numpy(), band_ids[b].numpy(), 6), rtol=1e-9,
                                   atol=1e-9, equal_nan=True)
    seen = int(band_ids[0, 0]) - 1
    assert np.isfinite(ours[0, seen * 11:(seen + 1) * 11]).all()  # one frame: the scene of its band is measured
    flat = ours[3, :66].reshape(6, 11)
    assert np.isnan(flat[:, 6:]).all() and np.isnan(ours[3, 66:]).all() and (np.abs(flat[:, 2:6]) < 1e-9).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), turns=st.integers(0, 3), flip=st.booleans())
def test_scene_features_do_not_depend_on_the_scene_s_orientation(seed, turns, flip):
    """Turned by quarter turns or mirrored about the object, a scene has the same features (the stamp
    centre, pixel (16, 16), is a pixel centre of a 32-pixel stamp, not its middle: the turn is about it)."""
    stamps, band_ids, _ = _stamps_with_sources(2, 6, seed=seed)
    stamps = stamps.double()
    centred = stamps[..., 1:, 1:]  # 31 x 31 around pixel (15, 15) = the old (16, 16)
    moved = torch.rot90(centred, turns, dims=(-2, -1))
    if flip:
        moved = moved.flip(-1)
    other = stamps.clone()
    other[..., 1:, 1:] = moved
    other[..., 0, :] = stamps[..., 0, :]  # the first row and column lie beyond every radius used
    other[..., :, 0] = stamps[..., :, 0]
    scene = SceneFeatures(32, 7)
    ours, theirs = scene(stamps, band_ids), scene(other, band_ids)
    same_peak = torch.ones_like(ours, dtype=torch.bool)
    same_peak[:, [k * 11 + 10 for k in range(6)]] = False  # the brightest pixel may tie with its mirror
    torch.testing.assert_close(ours[same_peak], theirs[same_peak], rtol=1e-9, atol=1e-9, equal_nan=True)


def test_scene_features_refuse_stamps_smaller_than_their_annulus():
    with pytest.raises(ValueError, match="at least 30 pixels, got 16"):
        SceneFeatures(16, 7)


def test_head_features_follow_the_trees_state():
    state = {"scene": torch.tensor(True)}
    assert head_features(state, 32, 7).width == 6 * 13 + 3 + 76  # six bands
    assert head_features({}, 32, 7).width == 6 * 13 + 3  # trees fitted before the scene features existed
    # trees fitted before the rounding guard read the features without it, as they were fitted on them
    assert not head_features({"photometry": torch.tensor(True)}, 32, 7).photometry.rounding_guard
    guarded = head_features({"photometry": torch.tensor(True), "rounding_guard": torch.tensor(True)}, 32, 7)
    assert guarded.lightcurve.rounding_guard and guarded.photometry.rounding_guard
    faint = _faint_bands(4, 12, seed=11)
    assert not torch.equal(LightCurveFeatures(32, 7, rounding_guard=False)(*faint), LightCurveFeatures(32, 7)(*faint))
    stamps, band_ids, times = _stamps_with_sources(3, 10, seed=10)
    both = HeadFeatures(32, 7, scene=True)(stamps, band_ids, times)
    torch.testing.assert_close(both[:, :81], LightCurveFeatures(32, 7)(stamps, band_ids, times))
    masked = (stamps * (band_ids != 0)[:, :, None, None]).double()
    torch.testing.assert_close(both[:, 81:], SceneFeatures(32, 7)(masked, band_ids).float(), equal_nan=True)


def test_the_chosen_weight_favours_whichever_part_predicts_better():
    from train.fit.tree_head import best_weight

    rng = np.random.default_rng(11)
    truth = rng.integers(0, 4, size=400)
    good = np.full((400, 4), 0.05)
    good[np.arange(400), truth] = 0.85
    poor = rng.dirichlet(np.ones(4), size=400)
    assert best_weight(poor, good, truth)[0] == max(TREE_WEIGHTS)
    assert best_weight(good, poor, truth)[0] == min(TREE_WEIGHTS)
    losses = best_weight(good, good, truth)[1]
    assert len(losses) == len(TREE_WEIGHTS) and np.allclose(losses, -np.log(0.85))
