"""The data splits of a run: cross-validation folds, training stages and early-stopping validation objects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from train.data.dataset import LabelledObjects
from train.files import write_atomically
from train.fit.config import FitConfig

__all__ = ["evaluation_subset", "inner_split", "make_folds", "read_folds", "stages_of"]


def read_folds(path: Path) -> list[list[str]]:
    """Held-out object ids of each fold, read from a ``folds.json`` that :func:`make_folds` wrote.

    Parameters
    ----------
    path : Path
        The folds file.

    Returns
    -------
    list of list of str
        Per fold, the object ids it holds out.

    Raises
    ------
    ValueError
        One line naming ``path`` when it cannot be read or is not such a file.
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a folds file of train.fit ({exc})") from exc
    try:
        folds = json.loads(text)["held_out"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a folds file of train.fit ({exc})") from exc
    if not (isinstance(folds, list) and folds
            and all(isinstance(fold, list) and all(isinstance(i, str) for i in fold) for fold in folds)):
        raise ValueError(f"{path}: not a folds file of train.fit (held_out is not a list of lists of object ids)")
    return folds


def make_folds(data: LabelledObjects, config: FitConfig, path: Path, *, write: bool = True) -> list[list[str]]:
    """Held-out object ids of each fold: loaded from ``path`` or made from the seed (and saved, if ``write``)."""
    ids = [str(i) for i in data.object_ids]
    if path.exists():
        folds = read_folds(path)
        if sorted(sum(folds, [])) != sorted(ids):
            raise ValueError(f"{path}: saved folds do not cover this catalog's objects; use another --run-dir")
        if len(folds) != config.folds:
            raise ValueError(f"{path}: holds {len(folds)} folds, the run asks for {config.folds}")
        return folds
    counts = data.class_counts()
    if counts.min() < config.folds:
        fewest = data.classes[int(counts.argmin())]
        raise ValueError(f"{config.catalog}: {counts.min()} {fewest} objects cannot be split into "
                         f"{config.folds} folds")
    splitter = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    folds = [[ids[k] for k in test] for _, test in splitter.split(np.zeros(len(ids)), data.labels)]
    if write:
        text = folds_text(config, folds)
        write_atomically(path, lambda target: target.write_text(text))
    return folds


def folds_text(config: FitConfig, folds: list[list[str]]) -> str:
    """The text of a run's ``folds.json`` (what :func:`make_folds` writes)."""
    return json.dumps({"seed": config.seed, "catalog": config.catalog, "held_out": folds}) + "\n"


def stages_of(data: LabelledObjects, train_idx: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Pre-training on ``phot`` then fine-tuning on ``spec`` objects, or one stage."""
    phot = train_idx[data.typing[train_idx] == "phot"]
    spec = train_idx[data.typing[train_idx] == "spec"]
    if phot.size and spec.size:
        return [("pretrain_phot", phot), ("finetune_spec", spec)]
    return [("train", train_idx)]


def inner_split(data: LabelledObjects, train_idx: np.ndarray, config: FitConfig,
                fold: int) -> tuple[np.ndarray, np.ndarray]:
    """A fold's training objects and its early-stopping validation objects (stratified, seeded)."""
    n_classes = len(data.classes)
    n_val = max(round(config.validation_fraction * train_idx.size), n_classes)
    counts = np.bincount(data.labels[train_idx], minlength=n_classes)
    if train_idx.size - n_val < n_classes or counts.min() < 2:
        raise ValueError(f"{config.catalog}: fold {fold} has {train_idx.size} training objects "
                         f"(fewest in one class: {counts.min()}), too few to split off a validation set "
                         f"covering the {n_classes} classes")
    train_idx, val_idx = train_test_split(train_idx, test_size=n_val, stratify=data.labels[train_idx],
                                          random_state=config.seed + fold)
    return train_idx, evaluation_subset(data, val_idx)


def evaluation_subset(data: LabelledObjects, idx: np.ndarray) -> np.ndarray:
    """Held-out objects scored: the spectroscopic ones when the catalog has both kinds."""
    spec = idx[data.typing[idx] == "spec"]
    return spec if spec.size and (data.typing == "phot").any() else idx
