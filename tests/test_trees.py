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
from train.model.trees import (  # noqa: E402
    LightCurveFeatures,
    TreeEnsemble,
    TreeMixture,
    _float32_at_most,
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
    mixed = fit(FitConfig(run_dir=str(tmp_path / "trees"), tree_head=True, reuse_from=str(tmp_path / "plain"),
                          export_out=str(tmp_path / "export"), records_dir=str(tmp_path / "records"), **base))
    assert trained == []  # the members are the plain run's
    assert len(mixed["per_fold"]) == len(plain["per_fold"]) == 2
    for fold in range(2):
        assert (tmp_path / "trees" / "state" / f"fold{fold}_trees.pt").exists()
        record = json.loads((tmp_path / "records" / f"fold{fold}.boosting.json").read_text())
        assert record["iterations"] >= 1 and record["features"] == 120
        probabilities = [json.loads((tmp_path / run / f"fold{fold}.predictions.json").read_text())["probabilities"]
                         for run in ("plain", "trees")]
        assert probabilities[0] != probabilities[1]
    checkpoint = Checkpoint.load(tmp_path / "trees" / "ensemble.ckpt")
    assert checkpoint.trees is not None
    members = checkpoint.build_members()
    assert all(isinstance(m, TreeMixture) for m in members)
    session = ModelSession(tmp_path / "export" / "model.onnx", device="cpu")
    assert session.card.provenance["tree_head"]["weight"] == 0.5
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
    again = fit(FitConfig(run_dir=str(tmp_path / "again"), tree_head=True, reuse_from=str(tmp_path / "plain"), **base))
    assert again["per_fold"] == mixed["per_fold"]


def test_a_tree_head_exports_fold_zero_only():
    from train.fit import FitConfig

    with pytest.raises(ValueError, match="tree_head fits trees per fold"):
        FitConfig(catalog="c.fits", run_dir="r", tree_head=True, export_members="all")


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


def test_onnx_runtime_computes_the_features_bit_for_bit_as_pytorch(tmp_path):
    """Trees cut features at thresholds: a last-bit difference between the runtimes would change a branch."""
    ort = pytest.importorskip("onnxruntime")
    features = LightCurveFeatures(32, 7).eval()
    stamps, band_ids, times = _inputs(48, 99, seed=6)
    band_ids[:8, 40:] = 0
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
