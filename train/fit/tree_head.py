"""A fold's boosted-tree head (``train.fit --tree-head``): fitted once, kept in the run's state.

The trees (:mod:`train.model.trees`) read the light-curve features of each
object's inference window (the card's window, as the exported model will),
are fitted on the fold's training objects but its validation split and stopped
on that split (:func:`train.reference.boosting.fit_boosting`), like the boosting
reference rows.  Their arrays go to ``state/fold<k>_trees.pt`` and what the fit
chose to ``state/fold<k>_boosting.json``, which the records folder receives
with the fold's other records.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from convention_rt.model_card import ModelCard
from train.data.dataset import LabelledObjects
from train.files import write_atomically
from train.fit.batches import model_inputs
from train.fit.config import FitConfig
from train.fit.folds import inner_split
from train.model import BaselineConfig, ModelConfig
from train.model.trees import LightCurveFeatures, TreeEnsemble, TreeMixture, tree_state
from train.reference.boosting import BoostingConfig, fit_boosting

__all__ = ["fold_trees", "lightcurve_table", "with_trees"]

log = logging.getLogger("train")


def lightcurve_table(data: LabelledObjects, indices: NDArray[np.int64], card: ModelCard,
                     features: LightCurveFeatures, batch_size: int = 256) -> NDArray[np.float64]:
    """Light-curve features of the objects ``indices``, on the card's inference window.

    Returns
    -------
    ndarray, shape (len(indices), K), float64
    """
    table = np.zeros((indices.size, features.width))
    with torch.no_grad():
        for start in range(0, indices.size, batch_size):
            stamps, band_ids, times = model_inputs(data, indices[start:start + batch_size], card)
            table[start:start + batch_size] = features(stamps, band_ids, times).numpy()
    return table


def fold_trees(config: FitConfig, run_dir: Path, fold: int, data: LabelledObjects, train_idx: NDArray[np.int64],
               card: ModelCard, model_config: ModelConfig | BaselineConfig, *,
               write: bool = True) -> dict[str, torch.Tensor]:
    """The fold's tree arrays (:func:`train.model.trees.tree_state`): read from the run, or fitted and saved.

    Parameters
    ----------
    config : FitConfig
    run_dir : Path
    fold : int
    data : LabelledObjects
    train_idx : ndarray of int
        The fold's training objects (its validation split among them).
    card : ModelCard
        Supplies the inference window.
    model_config : ModelConfig or BaselineConfig
        Supplies the stamp size and band vocabulary.
    write : bool
        Save what was fitted (the main process of a group).
    """
    path = run_dir / "state" / f"fold{fold}_trees.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    started = time.perf_counter()
    fit_idx, val_idx = inner_split(data, train_idx, config, fold)
    features = LightCurveFeatures(model_config.stamp_size, model_config.n_band_ids)
    rows = np.concatenate([fit_idx, val_idx])
    table = lightcurve_table(data, rows, card, features, config.eval_batch_size)
    feature_seconds = time.perf_counter() - started
    boosted = fit_boosting(table, data.labels[rows], np.arange(fit_idx.size), np.arange(fit_idx.size, rows.size),
                           len(data.classes), BoostingConfig(seed=config.seed))
    state = tree_state(boosted.model, boosted.iterations, boosted.used, len(data.classes))
    trees, splits, leaves = state["paths"].shape
    log.info("fold %d: tree head of %d iterations (validation macro-F1 %.4f), %d trees of at most %d leaves, %.0f s",
             fold, boosted.iterations, max(boosted.validation_macro_f1), trees, leaves, time.perf_counter() - started)
    if write:
        record = {**boosted.record(), "feature_seconds": feature_seconds, "features": features.width,
                  "trees": trees, "max_leaves": leaves,
                  "fit_objects": int(fit_idx.size), "validation_objects": int(val_idx.size)}
        write_atomically(path.with_name(f"fold{fold}_boosting.json"),
                         lambda target: target.write_text(json.dumps(record) + "\n"))
        write_atomically(path, lambda target: torch.save(state, target))  # last: its presence means finished
    return state


def with_trees(models: list[nn.Module], state: dict[str, torch.Tensor],
               model_config: ModelConfig | BaselineConfig) -> list[nn.Module]:
    """Each member as a :class:`~train.model.trees.TreeMixture` with the fold's trees."""
    trees = TreeEnsemble(state)
    features = LightCurveFeatures(model_config.stamp_size, model_config.n_band_ids)
    return [TreeMixture(model, trees, features).eval() for model in models]
