"""A boosted-tree head: gradient-boosted trees on the in-graph light curve, mixed with a network.

Each ensemble member's probabilities become ``w p_trees + (1 - w) p_net`` (``w`` =
:data:`TREE_WEIGHT`): ``p_net`` is the network's softmax, ``p_trees`` that of
gradient-boosted trees (:func:`train.reference.boosting.fit_boosting`, fitted
once per fold on the fold's training objects) on the light-curve features of
:class:`LightCurveFeatures`, measured from the same stamps in the same graph.
The trees run as tensor gathers (:class:`TreeEnsemble`), so the whole member
exports to ONNX with the operators every ONNX Runtime build has, keeps the
dynamic batch and sequence axes, and matches scikit-learn's predictions (the
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
    """Gradient-boosted trees evaluated with tensor gathers: ``(B, K)`` features -> ``(B, classes)`` probabilities.

    All trees' nodes are stored in flat arrays; a leaf is its own left and right
    child, so ``depth`` steps of "go left when the feature is at most the
    threshold, or is NaN and NaN goes left" bring every tree to its leaf.  The
    raw score of class k is ``baseline[k]`` plus the leaf values of the trees of
    class k; the probabilities are their softmax (a binary model's one score is
    class 1's against 0 for class 0).  Classes the fit never saw get probability 0.

    Parameters
    ----------
    state : dict of str to Tensor
        :func:`tree_state` of a fitted model.
    """

    def __init__(self, state: dict[str, Tensor]) -> None:
        super().__init__()
        for name in ("feature", "threshold", "left", "right", "missing_left", "value", "roots", "tree_score",
                     "baseline", "score_class"):
            self.register_buffer(name, state[name].clone())
        self.n_classes = int(state["n_classes"])
        self.depth = int(state["depth"])

    def forward(self, features: Tensor) -> Tensor:
        features = features.float()
        node = self.roots.unsqueeze(0).expand(features.shape[0], -1)  # (B, T)
        for _ in range(self.depth):
            x = torch.gather(features, 1, self.feature[node])
            left = (x <= self.threshold[node]) | (torch.isnan(x) & self.missing_left[node])  # NaN <= t is False
            node = torch.where(left, self.left[node], self.right[node])
        leaves = self.value[node]  # (B, T)
        scores = self.baseline.unsqueeze(0).expand(features.shape[0], -1)
        scores = scores.index_add(1, self.tree_score, leaves)  # (B, scores)
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
        Flat node arrays and per-tree, per-score indices (see :class:`TreeEnsemble`).
    """
    columns = np.flatnonzero(used)
    feature, threshold, left, right, missing, value, roots, tree_score = [], [], [], [], [], [], [], []
    depth, offset = 0, 0
    for per_iteration in model._predictors[:iterations]:
        for score, predictor in enumerate(per_iteration):
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits are not supported")
            leaf = nodes["is_leaf"].astype(bool)
            own = np.arange(offset, offset + nodes.size)
            feature.append(np.where(leaf, 0, columns[np.where(leaf, 0, nodes["feature_idx"])]))
            threshold.append(_float32_at_most(nodes["num_threshold"]))
            left.append(np.where(leaf, own, offset + nodes["left"].astype(np.int64)))
            right.append(np.where(leaf, own, offset + nodes["right"].astype(np.int64)))
            missing.append(nodes["missing_go_to_left"].astype(bool))
            value.append(np.where(leaf, nodes["value"], 0.0).astype(np.float32))
            roots.append(offset)
            tree_score.append(score)
            depth = max(depth, int(nodes["depth"].max()))
            offset += nodes.size
    return {
        "feature": torch.from_numpy(np.concatenate(feature).astype(np.int64)),
        "threshold": torch.from_numpy(np.concatenate(threshold)),
        "left": torch.from_numpy(np.concatenate(left).astype(np.int64)),
        "right": torch.from_numpy(np.concatenate(right).astype(np.int64)),
        "missing_left": torch.from_numpy(np.concatenate(missing)),
        "value": torch.from_numpy(np.concatenate(value)),
        "roots": torch.tensor(roots, dtype=torch.int64),
        "tree_score": torch.tensor(tree_score, dtype=torch.int64),
        "baseline": torch.from_numpy(np.asarray(model._baseline_prediction, dtype=np.float32).reshape(-1)),
        "score_class": torch.from_numpy(np.asarray(model.classes_, dtype=np.int64)),
        "n_classes": torch.tensor(n_classes, dtype=torch.int64),
        "depth": torch.tensor(depth, dtype=torch.int64),
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
