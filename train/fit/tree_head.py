"""A fold's boosted-tree head (``train.fit --tree-head``): fitted once, kept in the run's state.

The trees (:mod:`train.model.trees`) read the light-curve features of each
object's inference window (the card's window, as the exported model will), and
with ``tree_scene`` those of its static scene, with ``tree_photometry`` the
catalog reference's features of each stamp's aperture photometry.  They are fitted on the fold's
training objects but its validation split, with ``tree_prefixes`` random
prefixes of each of those objects besides its whole series, and stopped on that
split, whole series and prefixes alike (:func:`train.reference.boosting.fit_boosting`),
like the boosting reference rows; with ``tree_weight_chosen`` the split also
chooses their weight in the mixture (:func:`choose_weight`).  Their arrays go to ``state/fold<k>_trees.pt`` and what the fit
chose to ``state/fold<k>_boosting.json``, which the records folder receives
with the fold's other records.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from convention_rt.model_card import ModelCard
from convention_rt.transform import to_inputs
from train.data.dataset import LabelledObjects
from train.early import random_prefixes
from train.files import write_atomically
from train.fit.config import FitConfig
from train.fit.folds import inner_split
from train.model import BaselineConfig, ModelConfig
from train.model.trees import (TREE_WEIGHT, TREE_WEIGHTS, TREES, HeadFeatures, TreeEnsemble, TreesConfig,
                               head_features, tree_state)
from train.reference.boosting import BoostingConfig, fit_boosting

__all__ = ["best_weight", "choose_weight", "fold_trees", "head_table"]

log = logging.getLogger("train")


def head_table(data: LabelledObjects, indices: NDArray[np.int64], card: ModelCard, features: HeadFeatures,
               batch_size: int = 256, *, rng: np.random.Generator | None = None) -> NDArray[np.float64]:
    """The tree head's features of the objects ``indices``, on the card's inference window.

    Parameters
    ----------
    data : LabelledObjects
    indices : ndarray, shape (n,), int64
    card : ModelCard
        The inference window and normalisation.
    features : HeadFeatures
    batch_size : int
    rng : numpy.random.Generator, optional
        Cut each object first to a random prefix of its frames (:func:`train.early.random_prefixes`).

    Returns
    -------
    ndarray, shape (n, K), float64
    """
    table = np.zeros((indices.size, features.width))
    with torch.no_grad():
        for start, tensors in _batches(data, indices, card, batch_size, rng):
            table[start:start + tensors[0].shape[0]] = features(*tensors).numpy()
    return table


def _batches(data: LabelledObjects, indices: NDArray[np.int64], card: ModelCard, batch_size: int,
             rng: np.random.Generator | None) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
    """``(start, (stamps, band_ids, times))`` of the objects ``indices`` in batches, each object first cut
    to a random prefix when ``rng`` is given."""
    for start in range(0, indices.size, batch_size):
        chunk = data.chunk(indices[start:start + batch_size])
        if rng is not None:
            chunk = random_prefixes(chunk, rng, 1.0)
        inputs = to_inputs(chunk, card)
        seq = inputs.sequences
        yield start, (torch.from_numpy(seq.stamps), torch.from_numpy(seq.band_ids), torch.from_numpy(inputs.times))


def choose_weight(networks: list[nn.Module], state: dict[str, torch.Tensor], data: LabelledObjects,
                  val_idx: NDArray[np.int64], card: ModelCard, model_config: ModelConfig | BaselineConfig | TreesConfig,
                  prefix_draws: int, seed: int, batch_size: int = 256) -> tuple[float, list[float]]:
    """The trees' weight in the mixture, among :data:`TREE_WEIGHTS`, by log-loss on the validation objects.

    The objects are scored whole and, ``prefix_draws`` times, cut to a random prefix,
    so the weight serves first alerts as well as whole series.

    Parameters
    ----------
    networks : list of nn.Module
        The fold's members (their softmax is averaged, as the ensemble's).
    state : dict of str to Tensor
        The fold's trees (:func:`train.model.trees.tree_state`).
    data : LabelledObjects
    val_idx : ndarray, shape (n,), int64
        The fold's validation objects.
    card : ModelCard
    model_config : ModelConfig, BaselineConfig or TreesConfig
    prefix_draws : int
    seed : int
        Of the prefix draws.
    batch_size : int

    Returns
    -------
    weight : float
    losses : list of float
        Mean log-loss of each weight of :data:`TREE_WEIGHTS`.
    """
    trees = TreeEnsemble(state)
    features = head_features(state, model_config.stamp_size, model_config.n_band_ids)
    rng = np.random.default_rng(seed)
    network_parts, tree_parts = [], []
    with torch.no_grad():
        for draw in range(1 + prefix_draws):
            for _, tensors in _batches(data, val_idx, card, batch_size, rng if draw else None):
                network_parts.append(np.mean([torch.softmax(m.eval()(*tensors).float(), -1).numpy()
                                              for m in networks], axis=0))
                tree_parts.append(trees(features(*tensors)).numpy())
    return best_weight(np.concatenate(network_parts), np.concatenate(tree_parts),
                       np.tile(data.labels[val_idx], 1 + prefix_draws))


def best_weight(network: NDArray[np.floating], trees: NDArray[np.floating],
                truth: NDArray[np.int64]) -> tuple[float, list[float]]:
    """The weight of :data:`TREE_WEIGHTS` whose mixture ``w trees + (1 - w) network`` has the smallest log-loss.

    Parameters
    ----------
    network, trees : ndarray, shape (n, classes), float
        Probabilities.
    truth : ndarray, shape (n,), int64
        Class indices.

    Returns
    -------
    weight : float
    losses : list of float
        Mean log-loss of each weight.
    """
    rows = np.arange(truth.size)
    losses = [float(-np.mean(np.log(np.clip(w * trees[rows, truth] + (1 - w) * network[rows, truth], 1e-30, None))))
              for w in TREE_WEIGHTS]
    return TREE_WEIGHTS[int(np.argmin(losses))], losses


def fold_trees(config: FitConfig, run_dir: Path, fold: int, data: LabelledObjects, train_idx: NDArray[np.int64],
               card: ModelCard, model_config: ModelConfig | BaselineConfig | TreesConfig, *,
               networks: list[nn.Module] | None = None, write: bool = True) -> dict[str, torch.Tensor]:
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
    model_config : ModelConfig, BaselineConfig or TreesConfig
        Supplies the stamp size and band vocabulary.
    networks : list of nn.Module, optional
        The fold's members, which ``tree_weight_chosen`` needs (:func:`choose_weight`).
    write : bool
        Save what was fitted (the main process of a group).
    """
    path = run_dir / "state" / f"fold{fold}_trees.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    started = time.perf_counter()
    fit_idx, val_idx = inner_split(data, train_idx, config, fold)
    features = HeadFeatures(model_config.stamp_size, model_config.n_band_ids, scene=config.tree_scene,
                            photometry=config.tree_photometry)
    rng = np.random.default_rng([config.seed, fold])
    # the whole series, then each prefix draw, of the fitting and then of the validation objects
    fit_rows = [head_table(data, fit_idx, card, features, config.eval_batch_size)]
    val_rows = [head_table(data, val_idx, card, features, config.eval_batch_size)]
    for _ in range(config.tree_prefixes):
        fit_rows.append(head_table(data, fit_idx, card, features, config.eval_batch_size, rng=rng))
        val_rows.append(head_table(data, val_idx, card, features, config.eval_batch_size, rng=rng))
    table = np.concatenate(fit_rows + val_rows)
    labels = np.concatenate([data.labels[fit_idx]] * len(fit_rows) + [data.labels[val_idx]] * len(val_rows))
    fitted = fit_idx.size * len(fit_rows)
    feature_seconds = time.perf_counter() - started
    boosted = fit_boosting(table, labels, np.arange(fitted), np.arange(fitted, table.shape[0]),
                           len(data.classes), BoostingConfig(seed=config.seed, max_iter=config.tree_iterations))
    state = {**tree_state(boosted.model, boosted.iterations, boosted.used, len(data.classes)),
             "scene": torch.tensor(config.tree_scene), "photometry": torch.tensor(config.tree_photometry),
             "rounding_guard": torch.tensor(features.lightcurve.rounding_guard)}
    weight, losses = TREE_WEIGHT, None
    if config.tree_weight_chosen:
        if networks is None:
            raise ValueError("tree_weight_chosen needs the fold's networks")
        weight, losses = choose_weight(networks, state, data, val_idx, card, model_config, config.tree_prefixes,
                                       seed=config.seed + 1000 * (fold + 1), batch_size=config.eval_batch_size)
    state["weight"] = torch.tensor(weight, dtype=torch.float64)
    trees, splits, leaves = state["paths"].shape
    mixed = "" if config.model == TREES else f", weight {weight:.1f}"  # the trees model mixes nothing
    log.info("fold %d: tree head of %d iterations (validation macro-F1 %.4f), %d trees of at most %d leaves%s, "
             "%.0f s", fold, boosted.iterations, max(boosted.validation_macro_f1), trees, leaves, mixed,
             time.perf_counter() - started)
    if write:
        record = {**boosted.record(), "feature_seconds": feature_seconds, "features": features.width,
                  "scene": config.tree_scene, "photometry": config.tree_photometry,
                  "prefix_draws": config.tree_prefixes, "weight": weight,
                  **({"weight_log_loss": dict(zip(map(str, TREE_WEIGHTS), losses))} if losses is not None else {}),
                  "trees": trees, "max_leaves": leaves,
                  "fit_objects": int(fit_idx.size), "validation_objects": int(val_idx.size)}
        write_atomically(path.with_name(f"fold{fold}_boosting.json"),
                         lambda target: target.write_text(json.dumps(record) + "\n"))
        write_atomically(path, lambda target: torch.save(state, target))  # last: its presence means finished
    return state
