"""Gradient boosting on per-object features, stopped on the inner validation split.

scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier` with
balanced class weights (each class weighs as much in the loss as any other, as the
inverse-frequency sampling of the image models' training does) and NaN for missing
features.  Its own early stopping (on the loss of a random split) is off: the number
of boosting iterations is the one with the best macro-F1 on the validation objects
the image models stop on, among :attr:`BoostingConfig.max_iter`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["BoostedModel", "BoostingConfig", "fit_boosting"]


@dataclass(frozen=True)
class BoostingConfig:
    """Hyper-parameters of the boosting (scikit-learn's defaults, but the number of iterations).

    Attributes
    ----------
    max_iter : int
        Boosting iterations grown; the validation split picks how many are used.
    learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization
        As in :class:`~sklearn.ensemble.HistGradientBoostingClassifier`.
    seed : int
        Its ``random_state`` (it draws nothing without its own early stopping).
    """

    max_iter: int = 500
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_iter < 1 or self.max_leaf_nodes < 2 or self.min_samples_leaf < 1:
            raise ValueError("max_iter >= 1, max_leaf_nodes >= 2 and min_samples_leaf >= 1 are required")
        if not self.learning_rate > 0 or self.l2_regularization < 0:
            raise ValueError("learning_rate must be positive and l2_regularization non-negative")


@dataclass
class BoostedModel:
    """A fitted classifier and the number of its iterations the validation split chose.

    Attributes
    ----------
    model : HistGradientBoostingClassifier
    iterations : int
        Iterations used for predictions (1-based).
    validation_macro_f1 : list of float
        Validation macro-F1 after each iteration.
    n_classes : int
        Classes of the task (columns of the probabilities, whatever the training objects held).
    seconds : float
        Wall time of the fit and the validation pass.
    used : ndarray, shape (K,), bool
        Features the model was fitted on: those not NaN for every training object.
    """

    model: Any
    iterations: int
    validation_macro_f1: list[float]
    n_classes: int
    seconds: float
    used: NDArray[np.bool_]

    def predict_proba(self, features: NDArray[np.float64]) -> NDArray[np.float64]:
        """Class probabilities ``(n, n_classes)`` float64 after :attr:`iterations` iterations.

        Parameters
        ----------
        features : ndarray, shape (n, K), float64
            All K features, as given to :func:`fit_boosting`.
        """
        staged = None
        for staged, _ in zip(self.model.staged_predict_proba(features[:, self.used]), range(self.iterations)):
            pass
        out = np.zeros((features.shape[0], self.n_classes))
        out[:, self.model.classes_] = staged
        return out

    def record(self) -> dict[str, Any]:
        """What a run saves about the fit (JSON-ready)."""
        return {"iterations": self.iterations, "grown": len(self.validation_macro_f1),
                "unused_features": int((~self.used).sum()),
                "best_validation_macro_f1": max(self.validation_macro_f1),
                "validation_macro_f1": [round(v, 5) for v in self.validation_macro_f1], "seconds": self.seconds}


def fit_boosting(features: NDArray[np.float64], labels: NDArray[np.int64], train_idx: NDArray[np.int64],
                 val_idx: NDArray[np.int64], n_classes: int, config: BoostingConfig = BoostingConfig()) -> BoostedModel:
    """Fit on the objects ``train_idx``; choose the iterations by macro-F1 on ``val_idx``.

    Parameters
    ----------
    features : ndarray, shape (n, K), float64
        NaN where a feature is undefined.
    labels : ndarray, shape (n,), int64
        Class indices in ``0 .. n_classes - 1``.
    train_idx, val_idx : ndarray of int
        Rows of ``features`` to fit on and to stop on.
    n_classes : int
    config : BoostingConfig

    Returns
    -------
    BoostedModel
        The earliest iteration with the best validation macro-F1 is the one used.
        Features that are NaN for every training object carry nothing and are left
        out (:attr:`BoostedModel.used`).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score

    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"features (n, K) and labels (n,) must agree, got {features.shape} and {labels.shape}")
    if np.isinf(features).any():
        raise ValueError("features must be finite or NaN (missing), not infinite")
    started = time.perf_counter()
    used = ~np.isnan(features[train_idx]).all(axis=0)
    model = HistGradientBoostingClassifier(
        **{k: v for k, v in asdict(config).items() if k != "seed"}, early_stopping=False,
        class_weight="balanced", random_state=config.seed)
    model.fit(features[train_idx][:, used], labels[train_idx])
    everything = list(range(n_classes))
    curve = [float(f1_score(labels[val_idx], model.classes_[p.argmax(axis=1)], labels=everything, average="macro",
                            zero_division=0))
             for p in model.staged_predict_proba(features[val_idx][:, used])]
    return BoostedModel(model=model, iterations=int(np.argmax(curve)) + 1, validation_macro_f1=curve,
                        n_classes=n_classes, seconds=time.perf_counter() - started, used=used)
