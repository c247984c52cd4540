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

The trees also stand alone as a model (``train.fit --model trees``): :class:`TreesConfig`
describes its inputs and :class:`TreesAlone` is its one member per fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from train.model.config import INFERENCE_WINDOWS, SDSS_CLASSES
from train.model.convention import MEAN_FLUX_STEP, BandReference, initial_apertures, lightcurve_features
from train.model.stamp_geometry import centred_offsets, centred_radius
from train.model.stamp_photometry import PhotometryFeatures

__all__ = ["MEAN_FLUX_STEP", "SCENE_ANNULUS", "SCENE_APERTURES", "SCENE_MOMENT_RADIUS", "TREES", "TREE_WEIGHT", "TREE_WEIGHTS",
           "HeadFeatures", "LightCurveFeatures", "SceneFeatures", "TreeEnsemble", "TreeMixture", "TreesAlone",
           "TreesConfig", "head_features", "tree_state", "tree_weight", "with_trees"]

#: Model name of the trees alone (``train.fit --model trees``).
TREES = "trees"

#: Weight of the trees' probabilities in a member's mixture, unless the fit chose another.
TREE_WEIGHT = 0.5
#: Weights among which a fit may choose on its validation split (``train.fit --tree-weight-chosen``).
TREE_WEIGHTS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class LightCurveFeatures(nn.Module):
    """The light-curve features of :class:`~train.model.convention.LightCurveSummary`, at fixed apertures.

    The apertures are that module's initial discs (radius 1.5, 3 and 5 pixels)
    and annulus (6-10 pixels), each of unit sum; nothing here is learnt.  The
    features are computed in float64 and rounded to float32: trees cut features
    at thresholds, so the last bits of a float32 sum, which ONNX Runtime and
    PyTorch order differently, would send a feature near a threshold down
    different branches; in float64 they agree to far below a float32 step.
    A band's mean asinh flux against its mean frame is nearly 0 whenever those
    fluxes are small (their sum is 0), so rounding is most of it, and the runtimes
    (or two batch sizes) round apart, which trees would cut.  It is exactly 0 for a
    band of one or two frames (its fluxes are then 0, or +d and -d), and rounded
    to a multiple of :data:`MEAN_FLUX_STEP` otherwise (``rounding_guard``).

    Parameters
    ----------
    stamp_size : int
        Stamp side H = W.
    n_band_ids : int
        Band vocabulary size including padding id 0.
    rounding_guard : bool
        Give the means as above; False: as computed, rounding and all, as the tree
        heads fitted before the guard read them (:func:`head_features`).
    """

    def __init__(self, stamp_size: int, n_band_ids: int, rounding_guard: bool = True) -> None:
        super().__init__()
        self.rounding_guard = rounding_guard
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
                                   dtype=torch.float64, rounding_guard=self.rounding_guard).float()


#: Radii (pixels) of the discs whose background-subtracted flux is a scene feature.
SCENE_APERTURES: tuple[float, ...] = (1.5, 3.0, 6.0, 9.0)
#: Inner (included) and outer (excluded) radius (pixels) of the annulus whose mean is the background.
SCENE_ANNULUS: tuple[float, float] = (10.0, 15.0)
#: Radius (pixels) within which the centroid, moments and brightest pixel are measured.
SCENE_MOMENT_RADIUS = 6.0
#: Second moments (pixels^2) below which the flux is one pixel's: rounding, not a shape.
_SINGLE_PIXEL = 1e-9
#: Scene features per band: frames, background, the disc fluxes, concentration, centroid offset, size,
#: ellipticity and brightest-pixel offset.
_SCENE_PER_BAND = 3 + len(SCENE_APERTURES) + 4


class SceneFeatures(nn.Module):
    """Features of the object's static scene: its mean stamp in each band, time thrown away.

    The in-graph counterpart of the scene reference row's features
    (:mod:`train.reference.scene`), on what the model reads: each band's coadd is
    the mean of the object's real frames in the band (:class:`BandReference`), its
    background the mean of the annulus :data:`SCENE_ANNULUS`.  Per band: the
    number of frames; the background; the background-subtracted flux within each
    radius of :data:`SCENE_APERTURES`; the concentration (flux within 3 over
    within 9 pixels); within :data:`SCENE_MOMENT_RADIUS` of the centre, of the
    background-subtracted pixels clipped at 0, the distance of their flux-weighted
    centroid from the centre, their size ``sqrt((Ixx + Iyy) / 2)``, their
    ellipticity ``sqrt((Ixx - Iyy)^2 + 4 Ixy^2) / (Ixx + Iyy)`` (NaN when one pixel
    holds all the flux) and the distance of the brightest pixel from the centre.
    Then, for neighbouring bands, the colour ``-2.5 log10(F_b / F_b+1)`` of the
    fluxes within 3 and within 9 pixels.
    A band without frames has NaN for all but its frame count, as has a ratio
    without a positive denominator or a colour without two positive fluxes.

    Unlike the light curve's, these features need no second frame: an object's
    first alert already shows its host and any steady source at its position.
    The stamps are the normalised ones the model reads, so a band's fluxes are
    in units of its normalisation's standard deviation (a constant factor per
    band, which trees do not see, and a constant offset per colour).  Computed in
    float64, as :class:`LightCurveFeatures`.

    Parameters
    ----------
    stamp_size : int
        Stamp side H = W, at least ``2 * SCENE_ANNULUS[1]``.
    n_band_ids : int
        Band vocabulary size including padding id 0.
    """

    def __init__(self, stamp_size: int, n_band_ids: int) -> None:
        super().__init__()
        if stamp_size < 2 * SCENE_ANNULUS[1]:
            raise ValueError(f"scene features need stamps of at least {2 * SCENE_ANNULUS[1]:g} pixels, "
                             f"got {stamp_size}")
        self.reference = BandReference(n_band_ids)
        rows, columns = centred_offsets(stamp_size)
        y, x = rows.flatten(), columns.flatten()
        radius = centred_radius(stamp_size).flatten()
        ring = ((radius >= SCENE_ANNULUS[0]) & (radius < SCENE_ANNULUS[1])).double()
        self.register_buffer("x", x, persistent=False)
        self.register_buffer("y", y, persistent=False)
        self.register_buffer("radius", radius, persistent=False)
        self.register_buffer("ring", ring / ring.sum(), persistent=False)
        self.register_buffer("discs", torch.stack([(radius <= r).double() for r in SCENE_APERTURES]),
                             persistent=False)
        near = radius <= SCENE_MOMENT_RADIUS
        self.register_buffer("near", near.double(), persistent=False)
        # -2.5 / ln 10 as a float64 tensor: a Python float would be exported rounded to float32
        self.register_buffer("magnitude", torch.tensor(-2.5 / math.log(10.0), dtype=torch.float64), persistent=False)
        self.register_buffer("beyond", torch.where(near, 0.0, -math.inf).double(), persistent=False)

    @property
    def width(self) -> int:
        """Number of features K."""
        bands = self.reference.bands.numel()
        return bands * _SCENE_PER_BAND + 2 * (bands - 1)

    def forward(self, stamps: Tensor, band_ids: Tensor) -> Tensor:
        """``(B, M, H, W)`` float64 stamps zeroed on padding, ``(B, M)`` int64 band ids -> ``(B, K)`` float64."""
        means, counts, _ = self.reference.means(stamps, band_ids, torch.float64)  # (B, bands, H*W), (B, bands)
        nan = torch.full_like(counts, math.nan)
        background = torch.matmul(means, self.ring)  # (B, bands)
        image = means - background.unsqueeze(-1)
        fluxes = torch.matmul(image, self.discs.t())  # (B, bands, discs)
        widest = fluxes[..., -1]
        concentration = torch.where(widest > 0, fluxes[..., 1] / torch.where(widest > 0, widest, torch.ones_like(widest)),
                                    nan)
        weights = image.clamp_min(0.0) * self.near
        total = weights.sum(dim=-1)
        positive = total > 0
        safe_total = torch.where(positive, total, torch.ones_like(total))
        cx = torch.matmul(weights, self.x) / safe_total
        cy = torch.matmul(weights, self.y) / safe_total
        dx = self.x - cx.unsqueeze(-1)
        dy = self.y - cy.unsqueeze(-1)
        ixx = (weights * dx * dx).sum(dim=-1) / safe_total
        iyy = (weights * dy * dy).sum(dim=-1) / safe_total
        ixy = (weights * dx * dy).sum(dim=-1) / safe_total
        trace = ixx + iyy
        spread = trace > _SINGLE_PIXEL  # else one pixel holds the flux: no shape
        ellipticity = torch.where(spread, torch.sqrt((ixx - iyy) ** 2 + 4.0 * ixy * ixy)
                                  / torch.where(spread, trace, torch.ones_like(trace)), nan)
        brightest = (image + self.beyond).argmax(dim=-1)  # the brightest pixel within the radius
        moments = torch.stack([torch.sqrt(cx * cx + cy * cy), torch.sqrt(trace / 2.0), ellipticity,
                               self.radius[brightest]], dim=-1)
        moments = torch.where(positive.unsqueeze(-1), moments, nan.unsqueeze(-1))
        measured = torch.cat([background.unsqueeze(-1), fluxes, concentration.unsqueeze(-1), moments], dim=-1)
        has_band = (counts > 0).unsqueeze(-1)
        per_band = torch.cat([counts.unsqueeze(-1), torch.where(has_band, measured, nan.unsqueeze(-1))], dim=-1)
        colours = []
        for disc in (1, len(SCENE_APERTURES) - 1):
            flux = torch.where(has_band[..., 0], fluxes[..., disc], nan)
            first, second = flux[:, :-1], flux[:, 1:]
            both = (first > 0) & (second > 0)  # False for NaN
            ratio = torch.where(both, first, torch.ones_like(first)) / torch.where(both, second, torch.ones_like(second))
            colours.append(torch.where(both, torch.log(ratio) * self.magnitude, nan[:, 1:]))
        return torch.cat([per_band.flatten(1), torch.stack(colours, dim=-1).flatten(1)], dim=1)


class HeadFeatures(nn.Module):
    """What the tree head reads: :class:`LightCurveFeatures`, then :class:`SceneFeatures` when ``scene``, then
    :class:`~train.model.stamp_photometry.PhotometryFeatures` when ``photometry``.

    Parameters
    ----------
    stamp_size : int
    n_band_ids : int
    scene, photometry : bool
    rounding_guard : bool
        Features that are 0 in exact arithmetic, or nearly so, are 0 or on a grid rather than rounding
        (:class:`LightCurveFeatures`, :class:`~train.model.stamp_photometry.PhotometryFeatures`).
    """

    def __init__(self, stamp_size: int, n_band_ids: int, scene: bool = False, photometry: bool = False,
                 rounding_guard: bool = True) -> None:
        super().__init__()
        self.lightcurve = LightCurveFeatures(stamp_size, n_band_ids, rounding_guard)
        self.scene = SceneFeatures(stamp_size, n_band_ids) if scene else None
        self.photometry = PhotometryFeatures(stamp_size, n_band_ids, rounding_guard) if photometry else None

    @property
    def width(self) -> int:
        """Number of features K."""
        return (self.lightcurve.width + (self.scene.width if self.scene is not None else 0)
                + (self.photometry.width if self.photometry is not None else 0))

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """As :meth:`LightCurveFeatures.forward`: ``(B, K)`` float32."""
        parts = [self.lightcurve(stamps, band_ids, times)]
        if stamps.ndim == 5:
            stamps = stamps[:, :, 0]
        stamps = stamps * (band_ids != 0).to(stamps.dtype)[:, :, None, None]
        if self.scene is not None:
            parts.append(self.scene(stamps.double(), band_ids).float())
        if self.photometry is not None:
            parts.append(self.photometry(stamps, band_ids, times))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]


def tree_weight(state: dict[str, Tensor]) -> float:
    """The trees' weight in the mixture that the fit of ``state`` (:func:`tree_state`) chose."""
    return float(state["weight"]) if "weight" in state else TREE_WEIGHT


def head_features(state: dict[str, Tensor], stamp_size: int, n_band_ids: int) -> HeadFeatures:
    """The features the trees of ``state`` (:func:`tree_state`) were fitted on (heads fitted before the
    rounding guard have no ``rounding_guard`` and read the features without it)."""
    return HeadFeatures(stamp_size, n_band_ids, scene=bool(state.get("scene", torch.tensor(False))),
                        photometry=bool(state.get("photometry", torch.tensor(False))),
                        rounding_guard=bool(state.get("rounding_guard", torch.tensor(False))))


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
        for name in ("feature", "threshold", "missing_left", "lefts", "value", "tree_score", "baseline",
                     "score_class"):
            self.register_buffer(name, state[name].clone())
        # +1 / -1 / 0 held in int8 (a quarter of float32's size; older states hold float32)
        self.register_buffer("paths", state["paths"].to(torch.int8))
        self.n_classes = int(state["n_classes"])

    def forward(self, features: Tensor) -> Tensor:
        features = features.float()
        trees, splits = self.feature.shape
        # a gather of whole rows of the transposed features: ONNX Runtime runs it several times faster
        # than a gather along the feature axis on batches of more than a few objects
        x = torch.index_select(features.t(), 0, self.feature.reshape(-1)).reshape(trees, splits, -1).transpose(1, 2)
        # x: (T, B, I), each split's feature
        went_left = ((x <= self.threshold.unsqueeze(1))
                     | (torch.isnan(x) & self.missing_left.unsqueeze(1))).float()  # NaN <= t is False
        reached = (torch.matmul(went_left, self.paths.float()) == self.lefts.unsqueeze(1)).float()  # (T, B, L)
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
        (T, I, L) int8, ``lefts`` (T, L) float32 (-1 for padding leaves, never
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
    paths = np.zeros((len(trees), splits, leaves), np.int8)
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
                    paths[t, split, column] = int(side)
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


@dataclass(frozen=True, kw_only=True)
class TreesConfig:
    """The inputs of the trees alone as a model (``train.fit --model trees``): no network, nothing learnt by
    gradient descent; what the trees read (scene, photometry) is in their state (:func:`head_features`).

    Attributes
    ----------
    stamp_size, seq_len, n_band_ids, classes, window
        Input geometry, outputs and inference window, as in :class:`train.model.config.ModelConfig`.
    """

    stamp_size: int = 32
    seq_len: int = 99
    n_band_ids: int = 10
    classes: tuple[str, ...] = SDSS_CLASSES
    window: str = "latest"

    def __post_init__(self) -> None:
        if min(self.stamp_size, self.seq_len) < 1 or self.n_band_ids < 2:
            raise ValueError("TreesConfig: stamp_size and seq_len must be positive and n_band_ids at least 2")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError("TreesConfig: classes must be at least two distinct names")
        if self.window not in INFERENCE_WINDOWS:
            raise ValueError(f"TreesConfig: window must be 'latest' or 'event', got {self.window!r}")


class TreesAlone(nn.Module):
    """The trees as a model on their own: ``(stamps, band_ids, times)`` -> ``(B, classes)`` log-probabilities.

    Their softmax gives back the trees' probabilities, so the trees stand where a
    network's logits stand: in an ensemble, at a temperature, in an export.

    Parameters
    ----------
    trees : TreeEnsemble
    features : HeadFeatures
        What the trees read.
    """

    def __init__(self, trees: TreeEnsemble, features: HeadFeatures) -> None:
        super().__init__()
        self.trees = trees
        self.features = features

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, M, H, W)`` float32 stamps, ``(B, M)`` int64 band ids and float32 MJD -> ``(B, classes)`` float32
        log-probabilities (at least log 1e-30)."""
        return torch.log(self.trees(self.features(stamps, band_ids, times)).clamp_min(1e-30))


def with_trees(models: list[nn.Module], state: dict[str, Tensor],
               model_config: Any) -> list[nn.Module]:
    """Each member as a :class:`TreeMixture` with the trees of ``state`` (:func:`tree_state`) and their weight;
    without members (the trees model), the trees alone as the one member (:class:`TreesAlone`).

    Parameters
    ----------
    models : list of nn.Module
        Networks taking ``(stamps, band_ids, times)``; empty for the trees model.
    state : dict of str to Tensor
    model_config : ModelConfig, BaselineConfig or TreesConfig
        Supplies the stamp size and band vocabulary.

    Returns
    -------
    list of nn.Module
        In evaluation mode, sharing one :class:`TreeEnsemble` and one :class:`HeadFeatures`.
    """
    trees = TreeEnsemble(state)
    features = head_features(state, model_config.stamp_size, model_config.n_band_ids)
    if not models:
        return [TreesAlone(trees, features).eval()]
    return [TreeMixture(model, trees, features, tree_weight(state)).eval() for model in models]
