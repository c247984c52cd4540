"""Scoring: class probabilities of objects, their metrics, a fold's predictions file and the folds' summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from torch import nn

from convention_rt.model_card import ModelCard
from train.data.dataset import LabelledObjects
from train.distributed import SINGLE_PROCESS, Group
from train.files import write_atomically
from train.fit.batches import model_inputs

__all__ = ["evaluated_on", "fold_summary", "plot_confusion", "predict", "scores", "write_predictions"]


def predict(model: nn.Module, data: LabelledObjects, idx: np.ndarray, card: ModelCard,
            batch_size: int = 256, group: Group = SINGLE_PROCESS) -> np.ndarray:
    """Class probabilities (n, classes) of the objects ``idx`` (inference windows).

    In a process group each rank scores its shard; the shards are summed so that
    every rank returns the whole table.
    """
    model.eval()
    mine = group.shard(np.arange(idx.size))
    table = np.zeros((idx.size, len(card.classes)), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, mine.size, batch_size):
            rows = mine[start:start + batch_size]
            stamps, band_ids, times = model_inputs(data, idx[rows], card)
            table[rows] = torch.softmax(model(stamps, band_ids, times), dim=-1).numpy()
    return group.sum(table).astype(np.float32)


def scores(labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall and the row-normalised confusion matrix."""
    predicted = probabilities.argmax(axis=1)
    everything = list(range(len(classes)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, predicted, labels=everything, zero_division=0)
    matrix = confusion_matrix(labels, predicted, labels=everything).astype(float)
    rows = matrix.sum(axis=1, keepdims=True)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "macro_f1": float(f1_score(labels, predicted, labels=everything, average="macro", zero_division=0)),
        "precision": dict(zip(classes, precision.tolist())),
        "recall": dict(zip(classes, recall.tolist())),
        "support": dict(zip(classes, support.tolist())),
        "confusion": np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0).tolist(),
        "n": int(labels.size),
    }


def write_predictions(path: Path, data: LabelledObjects, idx: np.ndarray, probabilities: np.ndarray) -> None:
    """Held-out predictions of a fold as JSON: object ids, true classes, class probabilities (n, classes)."""
    text = json.dumps({
        "classes": list(data.classes), "object_id": [str(i) for i in data.object_ids[idx]],
        "label": [data.classes[k] for k in data.labels[idx]],
        "probabilities": np.round(probabilities.astype(np.float64), 6).tolist(),
    }) + "\n"
    write_atomically(path, lambda target: target.write_text(text))


def fold_summary(per_fold: list[dict[str, Any]], classes: tuple[str, ...]) -> dict[str, Any]:
    """Mean and std over folds of the :func:`scores` in ``per_fold``, and how many folds there are.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1`` (``{"mean", "std"}``), ``precision`` and ``recall``
        (class -> ``{"mean", "std"}``), ``confusion_mean`` and ``confusion_std``
        (classes x classes lists), ``folds``.
    """
    def mean_std(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values))}

    confusion = np.array([f["confusion"] for f in per_fold])
    return {
        "accuracy": mean_std([f["accuracy"] for f in per_fold]),
        "macro_f1": mean_std([f["macro_f1"] for f in per_fold]),
        "precision": {c: mean_std([f["precision"][c] for f in per_fold]) for c in classes},
        "recall": {c: mean_std([f["recall"][c] for f in per_fold]) for c in classes},
        "confusion_mean": confusion.mean(axis=0).tolist(),
        "confusion_std": confusion.std(axis=0).tolist(),
        "folds": len(per_fold),
    }


def plot_confusion(summary: dict[str, Any], classes: tuple[str, ...], title: str, path: Path) -> None:
    """Mean +/- std confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean, std = np.array(summary["confusion_mean"]), np.array(summary["confusion_std"])
    figure, axes = plt.subplots(figsize=(1.4 * len(classes) + 2, 1.2 * len(classes) + 1.5))
    axes.imshow(mean, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axes.text(j, i, f"{mean[i, j]:.2f}\n±{std[i, j]:.2f}", ha="center", va="center",
                      color="white" if mean[i, j] > 0.5 else "black", fontsize=9)
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    write_atomically(path, lambda target: figure.savefig(target, dpi=120, format="png"))
    plt.close(figure)


def evaluated_on(data: LabelledObjects) -> str:
    """Which held-out objects are scored (:func:`train.fit.folds.evaluation_subset`), in words."""
    return "held-out spec objects" if (data.typing == "phot").any() else "held-out objects"
