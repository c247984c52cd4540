"""A boosted-tree head: gradient-boosted trees on the in-graph light curve, mixed with a network.

Each ensemble member's probabilities become ``w p_trees + (1 - w) p_net`` (``w`` =
:data:`TREE_WEIGHT`): ``p_net`` is the network's softmax, ``p_trees`` that of
gradient-boosted trees (:func:`train.reference.boosting.fit_boosting`, fitted
once per fold on the fold's training objects) on the light-curve features of
:class:`LightCurveFeatures`, measured from the same stamps in the same graph.
The trees run as batched matrix products (:class:`TreeEnsemble`), so the whole
member exports to ONNX with the operators every ONNX Runtime build has, keeps
the dynamic batch and sequence axes, and matches scikit-learn's predictions (the
split thresholds are rounded down to float32, which decides every float32
feature exactly as scikit-learn's float64 comparison does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from train.model.convention import BandReference, initial_apertures, lightcurve_features

__all__ = ["TREE_WEIGHT", "LightCurveFeatures", "TreeEnsemble", "TreeMixture", "tree_state"]

#: Weight of the trees' probabilities in a member's mixture.
TREE_WEIGHT = 0.5


class LightCurveFeatures(nn.Module):
    """The light-curve features of :class:`~train.model.convention.LightCurveSummary`, at fixed apertures.

    The apertures are that module's initial discs (radius 1.5, 3 and 5 pixels)
    and annulus (6-10 pixels), each of unit sum; nothing here is learnt.  The
    features are computed in float64 and rounded to float32: trees cut features
    at thresholds, so the last bits of a float32 sum, which ONNX Runtime and
    PyTorch order differently, would send a feature near a threshold down
    different branches; in float64 they agree to far below a float32 step.

    Parameters
    ----------
    stamp_size : int
        Stamp side H = W.
    n_band_ids : int
        Band vocabulary size including padding id 0.
    """

    def __init__(self, stamp_size: int, n_band_ids: int) -> None:
        super().__init__()
        self.reference = BandReference(n_band_ids)
        self.register_buffer("aperture", initial_apertures(stamp_size).double(), persistent=False)

    @property
    def width(self) -> int:
        """Number of features K."""
        bands = self.reference.bands.numel()
        return bands * (3 * self.aperture.shape[0] + 1) + 3

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, M, H, W)`` or ``(B, M, C, H, W)`` float32 stamps (channel 0 is read), ``(B, M)`` int64
        band ids and float32 MJD -> ``(B, K)`` float32 features."""
        if stamps.ndim == 5:
            stamps = stamps[:, :, 0]
        stamps = (stamps * (band_ids != 0).to(stamps.dtype)[:, :, None, None]).double()
        return lightcurve_features(stamps, band_ids, times.double(), self.aperture, self.reference,
                                   dtype=torch.float64).float()


class TreeEnsemble(nn.Module):
    """Gradient-boosted trees as batched matrix products: ``(B, K)`` features -> ``(B, classes)`` probabilities.

    Every tree's I split nodes and L leaves are padded to the largest tree's.  A
    split sends an object left when its feature is at most the threshold, or is
    NaN and NaN goes left.  ``paths[t, i, l]`` is +1 when leaf l lies left of
    split i of tree t, -1 when right, 0 when i is not above l; an object reaches
    leaf l exactly when the sum over splits of ``paths * went_left`` equals the
    number of splits above l that it must pass leftwards (``lefts``).  So one
    gather of features, one comparison and one batched product evaluate all
    trees, whatever their depth, with a handful of graph operators.  The raw
    score of class k is ``baseline[k]`` plus the leaf values of the trees of
    class k; the probabilities are their softmax (a binary model's one score is
    class 1's against 0 for class 0).  Classes the fit never saw get probability 0.

    Parameters
    ----------
    state : dict of str to Tensor
        :func:`tree_state` of a fitted model.
    """

    def __init__(self, state: dict[str, Tensor]) -> None:
        super().__init__()
        for name in ("feature", "threshold", "missing_left", "paths", "lefts", "value", "tree_score", "baseline",
                     "score_class"):
            self.register_buffer(name, state[name].clone())
        self.n_classes = int(state["n_classes"])

    def forward(self, features: Tensor) -> Tensor:
        features = features.float()
        trees, splits = self.feature.shape
        x = torch.index_select(features, 1, self.feature.reshape(-1)).reshape(-1, trees, splits).transpose(0, 1)
        # x: (T, B, I), each split's feature
        went_left = ((x <= self.threshold.unsqueeze(1))
                     | (torch.isnan(x) & self.missing_left.unsqueeze(1))).float()  # NaN <= t is False
        reached = (torch.matmul(went_left, self.paths) == self.lefts.unsqueeze(1)).float()  # (T, B, L)
        leaves = (reached * self.value.unsqueeze(1)).sum(dim=2)  # (T, B): each tree's leaf value
        scores = self.baseline + torch.matmul(leaves.t(), self.tree_score)  # (B, scores)
        if scores.shape[1] == 1:  # binary: the score is class 1's log-odds
            scores = torch.cat([torch.zeros_like(scores), scores], dim=1)
        fitted = torch.softmax(scores, dim=1)
        out = torch.zeros(features.shape[0], self.n_classes, dtype=fitted.dtype, device=fitted.device)
        return out.index_copy(1, self.score_class, fitted)


def tree_state(model: Any, iterations: int, used: np.ndarray, n_classes: int) -> dict[str, Tensor]:
    """The arrays of :class:`TreeEnsemble` for a fitted ``HistGradientBoostingClassifier``.

    Parameters
    ----------
    model : HistGradientBoostingClassifier
        Fitted without categorical features.
    iterations : int
        Boosting iterations kept (the first ones), >= 1.
    used : ndarray, shape (K,), bool
        The features the model was fitted on, of the K given to :class:`TreeEnsemble`.
    n_classes : int
        Classes of the task; ``model.classes_`` are indices among them.

    Returns
    -------
    dict of str to Tensor
        For T trees of at most I splits and L leaves: ``feature`` (T, I) int64,
        ``threshold`` (T, I) float32, ``missing_left`` (T, I) bool, ``paths``
        (T, I, L) float32, ``lefts`` (T, L) float32 (-1 for padding leaves, never
        reached), ``value`` (T, L) float32, ``tree_score`` (T, scores) float32
        one-hot, ``baseline`` (scores,) float32, ``score_class`` (scores,) int64,
        ``n_classes`` (see :class:`TreeEnsemble`).
    """
    columns = np.flatnonzero(used)
    trees = [(score, predictor.nodes) for per_iteration in model._predictors[:iterations]
             for score, predictor in enumerate(per_iteration)]
    if any(nodes["is_categorical"].any() for _, nodes in trees):
        raise ValueError("categorical splits are not supported")
    splits = max(1, max(int((~nodes["is_leaf"].astype(bool)).sum()) for _, nodes in trees))
    leaves = max(int(nodes["is_leaf"].astype(bool).sum()) for _, nodes in trees)
    scores = len(model._baseline_prediction.reshape(-1))
    feature = np.zeros((len(trees), splits), np.int64)
    threshold = np.full((len(trees), splits), np.inf, np.float32)  # padding splits: above no leaf
    missing = np.zeros((len(trees), splits), bool)
    paths = np.zeros((len(trees), splits, leaves), np.float32)
    lefts = np.full((len(trees), leaves), -1.0, np.float32)
    value = np.zeros((len(trees), leaves), np.float32)
    tree_score = np.zeros((len(trees), scores), np.float32)
    for t, (score, nodes) in enumerate(trees):
        tree_score[t, score] = 1.0
        leaf = nodes["is_leaf"].astype(bool)
        split_of = np.cumsum(~leaf) - 1  # node -> its split column
        leaf_of = np.cumsum(leaf) - 1  # node -> its leaf column
        inner = ~leaf
        feature[t, split_of[inner]] = columns[nodes["feature_idx"][inner]]
        threshold[t, split_of[inner]] = _float32_at_most(nodes["num_threshold"][inner])
        missing[t, split_of[inner]] = nodes["missing_go_to_left"][inner].astype(bool)
        stack = [(0, [])]  # (node, [(split column, +1 left / -1 right)] above it)
        while stack:
            node, above = stack.pop()
            if leaf[node]:
                column = leaf_of[node]
                value[t, column] = nodes["value"][node]
                lefts[t, column] = sum(1 for _, side in above if side > 0)
                for split, side in above:
                    paths[t, split, column] = side
            else:
                split = split_of[node]
                stack.append((int(nodes["left"][node]), above + [(split, 1.0)]))
                stack.append((int(nodes["right"][node]), above + [(split, -1.0)]))
    return {
        "feature": torch.from_numpy(feature), "threshold": torch.from_numpy(threshold),
        "missing_left": torch.from_numpy(missing), "paths": torch.from_numpy(paths),
        "lefts": torch.from_numpy(lefts), "value": torch.from_numpy(value),
        "tree_score": torch.from_numpy(tree_score),
        "baseline": torch.from_numpy(np.asarray(model._baseline_prediction, dtype=np.float32).reshape(-1)),
        "score_class": torch.from_numpy(np.asarray(model.classes_, dtype=np.int64)),
        "n_classes": torch.tensor(n_classes, dtype=torch.int64),
    }


def _float32_at_most(thresholds: np.ndarray) -> np.ndarray:
    """The largest float32 at most each float64 threshold: ``x <= t`` then holds for a float32 x exactly when
    ``x <= result`` does."""
    rounded = thresholds.astype(np.float32)
    above = rounded.astype(np.float64) > thresholds
    rounded[above] = np.nextafter(rounded[above], np.float32(-np.inf))
    return rounded


class TreeMixture(nn.Module):
    """A member whose probabilities mix a network's with those of the trees: ``(B, classes)`` log-probabilities.

    The output is ``log(w p_trees + (1 - w) p_net)``, so its softmax is the mixture
    and, like logits, it may be divided by a temperature.

    Parameters
    ----------
    network : nn.Module
        Takes ``(stamps, band_ids, times)``, returns ``(B, classes)`` logits.
    trees : TreeEnsemble
    features : LightCurveFeatures
        What the trees read.
    weight : float
        w, in (0, 1).
    """

    def __init__(self, network: nn.Module, trees: TreeEnsemble, features: LightCurveFeatures,
                 weight: float = TREE_WEIGHT) -> None:
        super().__init__()
        if not 0.0 < weight < 1.0:
            raise ValueError(f"the trees' weight must lie in (0, 1), got {weight}")
        self.network = network
        self.trees = trees
        self.features = features
        self.weight = float(weight)

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        return self.mix(self.network(stamps, band_ids, times), self.tree_probabilities(stamps, band_ids, times))

    def tree_probabilities(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, classes)`` float32 probabilities of the trees alone."""
        return self.trees(self.features(stamps, band_ids, times))

    def mix(self, logits: Tensor, tree_probabilities: Tensor) -> Tensor:
        """The member's output from the network's ``(B, classes)`` logits and the trees' probabilities
        (members sharing trees compute them once)."""
        network = torch.softmax(logits.float(), dim=-1)
        mixture = self.weight * tree_probabilities + (1.0 - self.weight) * network
        return torch.log(mixture.clamp_min(1e-30))
