"""The trees alone as a model (``train.fit --model trees``): its configuration, checkpoint, run and export."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402

from train.model.trees import HeadFeatures, TreeEnsemble, TreesAlone, TreesConfig, tree_state  # noqa: E402

pytestmark = pytest.mark.torch

BANDS = ("u", "g", "r", "i", "z", "y")
TREE_HEAD = dict(tree_head=True, tree_scene=True, tree_photometry=True, tree_prefixes=1, tree_iterations=20)


def _trees_state(config: TreesConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Trees fitted on random features of the width :class:`HeadFeatures` (light curve only) gives."""
    width = HeadFeatures(config.stamp_size, config.n_band_ids).width
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(400, width))
    labels = (features[:, 0] > 0).astype(int) + 2 * (features[:, 1] > 0.5)
    model = HistGradientBoostingClassifier(max_iter=10, early_stopping=False, random_state=0).fit(features, labels)
    return {**tree_state(model, 10, np.ones(width, bool), len(config.classes)),
            "scene": torch.tensor(False), "photometry": torch.tensor(False)}


def _inputs(batch: int, frames: int, seed: int, config: TreesConfig):
    rng = np.random.default_rng(seed)
    stamps = torch.from_numpy(rng.normal(size=(batch, frames, config.stamp_size, config.stamp_size))
                              .astype(np.float32))
    band_ids = torch.from_numpy(rng.integers(1, len(BANDS) + 1, size=(batch, frames)))
    times = torch.from_numpy(np.cumsum(rng.uniform(1, 3, size=(batch, frames)), axis=1).astype(np.float32))
    return stamps, band_ids, times


def test_the_trees_model_trains_no_network_and_needs_its_tree_head():
    from train.fit import FitConfig

    FitConfig(catalog="c.fits", run_dir="r", model="trees", members=0, tree_head=True)
    for wrong in ({"members": 3, "tree_head": True}, {"members": 0},
                  {"members": 0, "tree_head": True, "tree_weight_chosen": True}):
        with pytest.raises(ValueError, match="model 'trees' is the tree head alone"):
            FitConfig(catalog="c.fits", run_dir="r", model="trees", **wrong)
    with pytest.raises(ValueError, match="members must be at least 1"):
        FitConfig(catalog="c.fits", run_dir="r", model="compact", members=0)
    config = FitConfig(catalog="c.fits", run_dir="r", model="trees", members=0, tree_head=True, window="event")
    assert config.model_config(("A", "B"), 7) == TreesConfig(classes=("A", "B"), n_band_ids=10, window="event")


def test_a_trees_checkpoint_round_trips_and_its_one_member_gives_the_trees_probabilities(tmp_path):
    from train.checkpoint import Checkpoint

    config = TreesConfig(seq_len=12, window="event")
    state = _trees_state(config)
    checkpoint = Checkpoint(name="t", version="0", preset="trees", config=config, members=[], bands=BANDS,
                            normalisation={b: (0.0, 1.0) for b in BANDS}, trees=state)
    checkpoint.save(tmp_path / "t.ckpt")
    loaded = Checkpoint.load(tmp_path / "t.ckpt")
    assert loaded.config == config and loaded.trees_alone and loaded.model_digest() == checkpoint.model_digest()
    card = loaded.card()
    assert (card.preset, card.members, card.stem_window, card.window) == ("trees", 1, 1, "event")
    (member,) = loaded.build_members()
    assert isinstance(member, TreesAlone)
    stamps, band_ids, times = _inputs(5, 12, seed=1, config=config)
    with torch.no_grad():
        expected = TreeEnsemble(state)(HeadFeatures(config.stamp_size, config.n_band_ids)(stamps, band_ids, times))
        torch.testing.assert_close(torch.softmax(member(stamps, band_ids, times), dim=-1), expected)
    with pytest.raises(ValueError, match="holds its trees and no network members"):
        Checkpoint(name="t", version="0", preset="trees", config=config, members=[{}], bands=BANDS,
                   normalisation={}, trees=state)
    with pytest.raises(ValueError, match="holds its trees and no network members"):
        Checkpoint(name="t", version="0", preset="trees", config=config, members=[], bands=BANDS, normalisation={})
    with pytest.raises(ValueError, match="preset 'compact' does not go with a TreesConfig"):
        Checkpoint(name="t", version="0", preset="compact", config=config, members=[], bands=BANDS,
                   normalisation={}, trees=state)


@pytest.mark.slow
def test_a_trees_run_trains_no_network_and_its_export_computes_what_it_scored_on_any_length(tmp_path, monkeypatch):
    """The run fits one tree head per fold and nothing else; the exported graph, cut to each object's own
    frames by the runtime, gives the held-out predictions the run recorded."""
    from convention_rt.data import sample_catalog_path
    from convention_rt.session import ModelSession
    from convention_rt.transform import to_inputs
    from train.data.dataset import load_labelled
    from train.fit import FitConfig, evaluation_subset, fit, protocol, read_folds

    def no_network(*args, **kwargs):
        raise AssertionError("the trees model trains no network")

    monkeypatch.setattr(protocol, "train_member", no_network)
    config = FitConfig(catalog=str(sample_catalog_path()), run_dir=str(tmp_path / "run"), model="trees", members=0,
                       folds=2, threads=1, window="event", early=True, export_out=str(tmp_path / "export"),
                       records_dir=str(tmp_path / "records"), name="convention-trees", **TREE_HEAD)
    metrics = fit(config)
    assert len(metrics["per_fold"]) == 2
    assert sorted(p.name for p in (tmp_path / "run" / "state").iterdir()) == [
        "fold0_boosting.json", "fold0_trees.pt", "fold1_boosting.json", "fold1_trees.pt"]
    assert json.loads((tmp_path / "run" / "early.json").read_text())["per_fold"]
    state = torch.load(tmp_path / "run" / "state" / "fold0_trees.pt", weights_only=True)
    assert bool(state["rounding_guard"])  # fitted on the guarded features, which the export then computes
    session = ModelSession(tmp_path / "export" / "model.onnx", device="cpu")
    card = session.card
    assert session.variable_length and (card.preset, card.members, card.window) == ("trees", 1, "event")
    assert card.provenance["tree_head"]["photometry"] is True and "weight" not in card.provenance["tree_head"]
    data = load_labelled(config.catalog, "4class")
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    held_out = np.array(sorted(index_of[i] for i in read_folds(tmp_path / "run" / "folds.json")[0]))
    scored = evaluation_subset(data, held_out)
    inputs = to_inputs(data.chunk(scored), card)
    seq = inputs.sequences
    assert len(set((seq.band_ids != 0).sum(axis=1).tolist())) > 1  # objects of several lengths, cut apart
    onnx_probabilities = session.run(seq.stamps, seq.band_ids, inputs.times)[:, 0]
    recorded = json.loads((tmp_path / "run" / "fold0.predictions.json").read_text())["probabilities"]
    np.testing.assert_allclose(onnx_probabilities, np.array(recorded), atol=1e-5)
    # the evaluations of a finished run (train.early, train.calibration) see the trees as the fold's member,
    # and a fold whose trees are gone as unfinished
    from train.fit.export_step import export_is_current
    from train.runs import finished_folds, open_run

    run_config, prepared = open_run(tmp_path / "run", config.catalog)
    folds = list(finished_folds(tmp_path / "run", run_config, prepared))
    assert [f.index for f in folds] == [0, 1]
    assert all(len(f.members) == 1 and isinstance(f.members[0], TreesAlone) for f in folds)
    assert export_is_current(tmp_path / "run", tmp_path / "export", metrics["per_fold"][:1], config)
    (tmp_path / "run" / "state" / "fold1_trees.pt").unlink()
    assert [f.index for f in finished_folds(tmp_path / "run", run_config, prepared)] == [0]
    assert not export_is_current(tmp_path / "run", tmp_path / "export", metrics["per_fold"][:1], config)
