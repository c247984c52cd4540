"""``python -m train.fit``: the paper's training protocol.

* Catalog read through the runtime's reader, preprocessed through the runtime's
  compiled path (``chunk_to_inputs``): no second copy of normalisation or
  windowing here.
* Stratified K-fold cross-validation (folds fixed by the seed and saved, so
  every model trained on the same catalog sees the same splits) x ensemble
  members per fold.  Early stopping on the macro-F1 of an inner validation
  split carved from the training folds; metrics on the held-out fold.
* Class balance: weighted sampling with replacement, weights = 1 / class
  frequency; every draw gets its own random window, frame drops, rotation by a
  multiple of 90 degrees and flips.
* Two stages when the catalog has both kinds of labels: pre-train on ``phot``
  objects, fine-tune on ``spec`` objects (metrics on the held-out ``spec``
  objects); a single stage otherwise.
* Adam, cross-entropy, early stopping; checkpoints after every epoch, so a
  stopped run resumes where it was (run it again with the same ``--run-dir``).
* A ConvEntion member whose first stage ends with a dead classifier head (at most
  10 % of its hidden units fire on the validation objects) starts again from a
  fresh seed, at most :data:`MAX_RESTARTS` times.
* Metrics from scikit-learn (accuracy, macro-F1, per-class precision/recall,
  confusion matrices as mean +/- std over folds), JSON and PNG; at the end the
  ensemble is exported with its card (``--export-out``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.model_selection import StratifiedKFold, train_test_split
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convention_rt.errors import ConventionError, UsageError
from convention_rt.model_card import ModelCard, sha256_of
from convention_rt.model_inputs import chunk_to_inputs
from train.checkpoint import Checkpoint, config_to_dict
from train.command_line import OneLineParser, report_failure
from train.data.dataset import TASKS, LabelledObjects, band_statistics, load_labelled
from train.distributed import SINGLE_PROCESS, Group, setup
from train.early import random_prefixes
from train.files import write_atomically
from train.machine import cpu_description, timing_key
from train.model import (
    MODEL_NAMES,
    BaselineConfig,
    ModelConfig,
    build_model,
    get_baseline,
    get_preset,
    training_form,
)
from train.model.convention import ClassifierHead

__all__ = ["FitConfig", "check_architecture", "fit", "load_weights", "main", "read_folds", "source_revision"]

log = logging.getLogger("train")


@dataclass(frozen=True)
class FitConfig:
    """Everything a training run depends on (YAML keys = field names).

    Attributes
    ----------
    catalog : str
        Training catalog (convention-rt format, with labels).
    run_dir : str
        Folder for folds, checkpoints, logs and metrics; reused to resume.
    model : str
        Architecture: paper, compact (ConvEntion presets), cnn_gru, cnn_lstm, lc_lstm (baselines).
    task : {"4class", "3class"}
        Classes: AGN, SNIa, SNOther, Variable; or AGN, SN, Variable.
    folds : int
        Cross-validation folds.
    members : int
        Ensemble members per fold.
    fold_limit : int or None
        Train and evaluate only the first ``fold_limit`` folds of the ``folds``-fold
        split (the split itself does not change); ``None``: all of them.
    epochs : int
        Maximum epochs per stage.
    patience : int
        Early stopping: epochs without a better validation macro-F1.
    batch_size : int
        Objects per optimiser step.
    eval_batch_size : int
        Objects per evaluation batch (validation, held-out scoring, head check):
        it sets the evaluation's memory (the paper preset's forward holds about
        33 MB per object, the compact preset's far less), not its results. Like
        ``threads``, it may change when a run resumes.
    learning_rate : float
        Adam's learning rate.
    dropout : float
        Dropout probability of the model.
    frame_drop : float
        Probability of dropping each frame (augmentation).
    validation_fraction : float
        Share of the training folds held out for early stopping.
    seed : int
        Seed of the folds, the validation splits, the weights and every draw.
    threads : int
        PyTorch CPU threads.
    precision : {"fp32", "bf16"}
        Training arithmetic; bf16 autocast (weights stay fp32; evaluation and
        export in fp32) is about 1.5x faster on CPUs with bf16 matrix units and
        far slower on CPUs without them. Like ``threads``, it may change when a
        run resumes; each epoch's record names the precision it ran in.
    max_objects : int or None
        Use only the first objects of the catalog (quick runs).
    frames_cache : str or None
        Folder for a memory-mapped copy of the training frames, written on a
        run's first start and shared by later runs on the same catalog (runs side
        by side then hold one copy of the frames in the page cache instead of one
        each in memory); None: each run holds the frames in its own memory. Like
        ``threads``, it may change when a run resumes.
    positional_encoding : str or None
        Override of the preset's encoding (ablation "none").
    band_input : str or None
        Override of the preset's band input: ``"stacked"`` is the ablation without
        band separation and band embedding (zero-filled multi-band frames per night).
    attention : str or None
        Override of the preset's attention: ``"dot"`` (query-dependent) or
        ``"published"`` (see :class:`train.model.config.ModelConfig`).
    difference_channel : bool
        Give ConvEntion frames a difference channel against the object's per-band
        mean frame (:attr:`train.model.config.ModelConfig.difference_channel`).
    prefix_truncation : float
        Share of the training draws cut to a random prefix of their frames
        (log-uniform length from 1 frame to all), so that the model learns to
        classify objects from their first alerts (``train.early``); 0: none.
    export_out : str or None
        Folder to export the ensemble to at the end.
    export_members : {"fold0", "all"}
        Which members the exported ensemble holds (all = folds x members).
    name : str
        Registry name of the exported model.
    version : str
        Version of the exported model.
    """

    catalog: str
    run_dir: str
    model: str = "compact"
    task: str = "4class"
    folds: int = 5
    members: int = 3
    fold_limit: int | None = None
    epochs: int = 100
    patience: int = 10
    batch_size: int = 128
    eval_batch_size: int = 256
    learning_rate: float = 1e-3
    dropout: float = 0.3
    frame_drop: float = 0.1
    validation_fraction: float = 0.1
    seed: int = 0
    threads: int = 2
    precision: str = "fp32"
    max_objects: int | None = None
    frames_cache: str | None = None
    positional_encoding: str | None = None
    band_input: str | None = None
    attention: str | None = None
    difference_channel: bool = False
    prefix_truncation: float = 0.0
    export_out: str | None = None
    export_members: str = "fold0"
    name: str = "convention-compact"
    version: str = "1.0.0"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model must be one of {MODEL_NAMES}, got {self.model!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.folds < 2 or self.members < 1 or self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("folds >= 2, members >= 1, epochs >= 1, batch_size >= 1 and eval_batch_size >= 1 "
                             "are required")
        if self.fold_limit is not None and not 1 <= self.fold_limit <= self.folds:
            raise ValueError(f"fold_limit must be in [1, folds={self.folds}], got {self.fold_limit}")
        if not 0.0 < self.validation_fraction < 0.5 or not 0.0 <= self.frame_drop < 1.0:
            raise ValueError("validation_fraction must be in (0, 0.5) and frame_drop in [0, 1)")
        if not 0.0 <= self.prefix_truncation <= 1.0:
            raise ValueError(f"prefix_truncation must be in [0, 1], got {self.prefix_truncation}")
        if self.export_members not in ("fold0", "all"):
            raise ValueError("export_members must be 'fold0' or 'all'")
        if self.band_input not in (None, "separated", "stacked"):
            raise ValueError(f"band_input must be 'separated' or 'stacked', got {self.band_input!r}")
        if self.attention not in (None, "published", "dot"):
            raise ValueError(f"attention must be 'published' or 'dot', got {self.attention!r}")
        if self.model not in ("paper", "compact") and (self.positional_encoding or self.band_input
                                                       or self.attention or self.difference_channel):
            raise ValueError("positional_encoding, band_input, attention and difference_channel apply to "
                             "ConvEntion models, "
                             f"not {self.model}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")

    def model_config(self, classes: tuple[str, ...], n_band_ids: int) -> ModelConfig | BaselineConfig:
        """The architecture for this run's classes and bands."""
        base = get_preset(self.model) if self.model in ("paper", "compact") else get_baseline(self.model)
        changes: dict[str, Any] = {"classes": classes, "dropout": self.dropout,
                                   "n_band_ids": max(base.n_band_ids, n_band_ids)}
        if isinstance(base, ModelConfig):
            if self.positional_encoding is not None:
                changes["positional_encoding"] = self.positional_encoding
            if self.attention is not None:
                changes["attention"] = self.attention
            if self.difference_channel:
                changes["difference_channel"] = True
            if self.band_input == "stacked":  # one channel per band of this catalog
                changes.update(band_input="stacked", band_embedding=False, n_band_ids=n_band_ids)
        return dataclasses.replace(base, **changes)


# -- data splits ---------------------------------------------------------------------
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
        text = json.dumps({"seed": config.seed, "catalog": config.catalog, "held_out": folds}) + "\n"
        write_atomically(path, lambda target: target.write_text(text))
    return folds


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


# -- batches -------------------------------------------------------------------------
def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Draw probabilities ``(n,)`` float64 of objects with class indices ``labels``: 1 / class frequency, normalised.

    Drawn with replacement, every class present comes up equally often.
    """
    counts = np.bincount(labels).astype(float)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


def augment(stamps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation by k x 90 degrees and flips, one draw per object: (B, M, H, W)."""
    turns = torch.randint(0, 4, (stamps.shape[0],), generator=generator)
    flips = torch.randint(0, 2, (stamps.shape[0], 2), generator=generator).bool()
    out = stamps.clone()
    for k in range(1, 4):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
    out = torch.where(flips[:, 0, None, None, None], out.flip(-1), out)
    return torch.where(flips[:, 1, None, None, None], out.flip(-2), out)


def model_inputs(data: LabelledObjects, indices: np.ndarray, card: ModelCard, *,
                 rng: np.random.Generator | None = None, frame_drop: float = 0.0,
                 prefix_truncation: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the objects ``indices``: training windows when ``rng`` is given, else the latest.

    With ``prefix_truncation`` > 0 (training only), that share of the objects is first
    cut to a random prefix of its frames (:func:`train.early.random_prefixes`).
    """
    chunk = data.chunk(indices)
    if rng is not None and prefix_truncation > 0:  # no draw otherwise: earlier runs resume unchanged
        chunk = random_prefixes(chunk, rng, prefix_truncation)
    if rng is None:
        inputs = chunk_to_inputs(chunk, card)
    else:
        seeds = rng.integers(0, 2**63, size=len(indices), dtype=np.uint64)
        inputs = chunk_to_inputs(chunk, card, mode="random", seeds=seeds, drop_prob=frame_drop)
    seq = inputs.sequences
    return torch.from_numpy(seq.stamps), torch.from_numpy(seq.band_ids), torch.from_numpy(inputs.times)


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
    path.write_text(json.dumps({
        "classes": list(data.classes), "object_id": [str(i) for i in data.object_ids[idx]],
        "label": [data.classes[k] for k in data.labels[idx]],
        "probabilities": np.round(probabilities.astype(np.float64), 6).tolist(),
    }) + "\n")


# -- one ensemble member ---------------------------------------------------------------
#: A head with at most this share of its hidden units firing on the validation objects is dead.
DEAD_HEAD_SHARE = 0.1
#: Fresh starts a member may take when its first stage ends with a dead head.
MAX_RESTARTS = 3
#: Marks a restart's seed, so that it cannot equal another draw's seed.
_RESTART_TAG = 7_919_001


def member_seed(config: FitConfig, fold: int, member: int, restarts: int = 0) -> list[int]:
    """Seed material of a member's attempt: the first attempt's is ``[seed, fold, member]``."""
    return [config.seed, fold, member] + ([_RESTART_TAG, restarts] if restarts else [])


def head_units_active(model: nn.Module, data: LabelledObjects, idx: np.ndarray, card: ModelCard,
                      batch_size: int = 256) -> tuple[int, int] | None:
    """Hidden units of a ConvEntion head that fire (are > 0) on at least one of the objects ``idx``.

    Returns
    -------
    (active, width) or None
        ``None`` for models without a hidden head layer (the baselines).
    """
    head = getattr(model, "head", None)
    if not isinstance(head, ClassifierHead):
        return None
    hidden = next(layer for layer in head.layers if isinstance(layer, nn.Linear))
    fired = torch.zeros(hidden.out_features, dtype=torch.bool)

    def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        fired.logical_or_((output > 0).any(dim=0))

    model.eval()
    handle = hidden.register_forward_hook(record)
    try:
        with torch.no_grad():
            for start in range(0, idx.size, batch_size):
                model(*model_inputs(data, idx[start:start + batch_size], card))
    finally:
        handle.remove()
    return int(fired.sum()), hidden.out_features


def head_is_dead(active: tuple[int, int] | None) -> bool:
    """Whether a :func:`head_units_active` count is at most :data:`DEAD_HEAD_SHARE` of the width."""
    return active is not None and active[0] <= DEAD_HEAD_SHARE * active[1]


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Load saved ``weights`` into ``model``, refusing weights of another architecture.

    Parameters
    ----------
    model : nn.Module
        The model this run builds.
    weights : dict of str to Tensor
        A state dict read from ``path``.
    path : Path
        Where ``weights`` were read, for the message.

    Raises
    ------
    ValueError
        One line naming ``path`` when the names or shapes differ (e.g. weights saved
        before a preset changed), instead of a half-loaded model.
    """
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ValueError(f"{path}: saved weights of another architecture than this run's model builds "
                         f"({detail[:200]}); train it in another --run-dir") from exc


@dataclass
class MemberState:
    """What a member's training has reached; saved after every epoch."""

    restarts: int = 0
    stage: int = 0
    epoch: int = 0
    best_f1: float = -1.0
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0
    seconds: float = 0.0
    epochs_run: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    #: (active, width) of the final weights' head on the validation objects (ConvEntion models)
    head_units_active: tuple[int, int] | None = None


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: MemberState,
                group: Group = SINGLE_PROCESS) -> None:
    if group.is_main:
        payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "state": dataclasses.asdict(state)}
        write_atomically(path, lambda target: torch.save(payload, target))
    group.barrier()


def train_member(data: LabelledObjects, train_idx: np.ndarray, card: ModelCard,
                 model_config: ModelConfig | BaselineConfig, config: FitConfig, *, fold: int, member: int,
                 state_path: Path, progress: Progress | None = None,
                 group: Group = SINGLE_PROCESS) -> tuple[dict[str, torch.Tensor], MemberState]:
    """Train one member (resuming from ``state_path``); returns its best weights and record.

    A ConvEntion member whose first stage ends with a dead head (:func:`head_is_dead`
    on the validation objects) starts again from the seed of its next attempt
    (:func:`member_seed`), at most :data:`MAX_RESTARTS` times.
    """
    def attempt(restarts: int) -> tuple[list[int], nn.Module, nn.Module, torch.optim.Optimizer]:
        seed = member_seed(config, fold, member, restarts)
        torch.manual_seed(int(np.random.default_rng(seed).integers(2**31)))
        model = training_form(build_model(model_config))
        trained = DistributedDataParallel(model) if group.distributed else model
        return seed, model, trained, torch.optim.Adam(model.parameters(), lr=config.learning_rate)

    state = MemberState()
    saved = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.exists() else None
    if saved is not None:
        state = MemberState(**saved["state"])
    seed, model, trained, optimizer = attempt(state.restarts)
    if saved is not None:
        load_weights(model, saved["model"], state_path)
        optimizer.load_state_dict(saved["optimizer"])
        log.info("fold %d member %d: resuming at stage %d epoch %d%s", fold, member, state.stage, state.epoch,
                 f" (attempt {state.restarts + 1})" if state.restarts else "")

    train_idx, val_idx = inner_split(data, train_idx, config, fold)
    stages = stages_of(data, train_idx)
    loss_function = nn.CrossEntropyLoss()
    while state.stage < len(stages):
        stage_name, stage_idx = stages[state.stage]
        weights = balanced_weights(data.labels[stage_idx])
        while state.epoch < config.epochs and state.waited < config.patience:
            start = time.perf_counter()
            rng = np.random.default_rng(seed + [state.stage, state.epoch])
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)) + group.rank)
            torch.manual_seed(int(rng.integers(2**31)) + group.rank)
            draws = rng.choice(stage_idx, size=stage_idx.size, replace=True, p=weights)
            batch_size = config.batch_size
            if group.distributed:  # equal shards (same number of steps on every rank), same global batch
                draws = group.shard(draws[: draws.size // group.world * group.world])
                batch_size = max(1, config.batch_size // group.world)
                rng = np.random.default_rng(seed + [state.stage, state.epoch, 1 + group.rank])
            trained.train()
            total_loss = 0.0
            task = progress.add_task(f"fold {fold} m{member} {stage_name} ep {state.epoch}",
                                     total=draws.size) if progress else None
            for first in range(0, draws.size, batch_size):
                batch = draws[first:first + batch_size]
                stamps, band_ids, times = model_inputs(data, batch, card, rng=rng, frame_drop=config.frame_drop,
                                                       prefix_truncation=config.prefix_truncation)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16"):
                    logits = trained(augment(stamps, generator), band_ids, times)
                    loss = loss_function(logits, torch.from_numpy(data.labels[batch]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * batch.size
                if progress:
                    progress.advance(task, batch.size)
            if progress:
                progress.remove_task(task)
            total_loss, n_drawn = (float(v) for v in group.sum(np.array([total_loss, draws.size])))
            validation = scores(data.labels[val_idx], predict(model, data, val_idx, card, config.eval_batch_size,
                                                              group=group),
                                data.classes)
            elapsed = time.perf_counter() - start
            state.seconds += elapsed
            state.epochs_run += 1
            improved = validation["macro_f1"] > state.best_f1
            if improved:
                state.best_f1 = validation["macro_f1"]
                state.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                state.waited = 0
            else:
                state.waited += 1
            state.history.append({"attempt": state.restarts, "stage": stage_name, "epoch": state.epoch,
                                  "loss": total_loss / n_drawn,
                                  "val_macro_f1": validation["macro_f1"], "val_accuracy": validation["accuracy"],
                                  "seconds": elapsed, "precision": config.precision, **CPU})
            log.info("fold %d member %d %s epoch %d: loss %.4f, val macro-F1 %.4f acc %.4f%s (%.1f s)",
                     fold, member, stage_name, state.epoch, total_loss / n_drawn, validation["macro_f1"],
                     validation["accuracy"], " *" if improved else "", elapsed)
            state.epoch += 1
            _save_state(state_path, model, optimizer, state, group)
        # next stage starts from the best weights of this one
        model.load_state_dict(state.best_state)
        if state.stage == 0 and state.restarts < MAX_RESTARTS:
            active = head_units_active(model, data, val_idx, card, config.eval_batch_size)
            # rank 0 decides for all: the ranks' batch-norm statistics may differ slightly
            if group.sum(np.array([float(group.is_main and head_is_dead(active))]))[0] > 0:
                log.warning("fold %d member %d: only %d of %d classifier-head units fire on the validation "
                            "objects after %s; starting again from a fresh seed (restart %d of %d)", fold,
                            member, active[0], active[1], stage_name, state.restarts + 1, MAX_RESTARTS)
                state = MemberState(restarts=state.restarts + 1, seconds=state.seconds,
                                    epochs_run=state.epochs_run, history=state.history)
                seed, model, trained, optimizer = attempt(state.restarts)
                _save_state(state_path, model, optimizer, state, group)
                continue
        state.stage += 1
        state.epoch = 0
        state.waited = 0
        if state.stage < len(stages):
            state.best_f1 = -1.0
        _save_state(state_path, model, optimizer, state, group)
    state.head_units_active = head_units_active(model, data, val_idx, card, config.eval_batch_size)
    if head_is_dead(state.head_units_active):
        log.warning("fold %d member %d: its head is still dead after %d restarts (%d of %d units fire)",
                    fold, member, state.restarts, *state.head_units_active)
    return state.best_state, state


# -- the whole protocol -----------------------------------------------------------------
def _summary(per_fold: list[dict[str, Any]], classes: tuple[str, ...]) -> dict[str, Any]:
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
    figure.savefig(path, dpi=120)
    plt.close(figure)


#: The run's model architecture (:func:`train.checkpoint.config_to_dict`), beside ``config.json``.
ARCHITECTURE_FILE = "architecture.json"


def check_architecture(run_dir: Path, model_config: ModelConfig | BaselineConfig) -> None:
    """Refuse a run directory that holds a run of another architecture than ``model_config``.

    Presets can change between versions while ``config.json`` names only the preset,
    so the architecture is compared as well: with ``architecture.json``, or, in a run
    directory older than that record, with the parameter names and shapes of a saved
    member state.

    Parameters
    ----------
    run_dir : Path
        The run directory (it may not exist yet).
    model_config : ModelConfig or BaselineConfig
        The architecture this run builds.

    Raises
    ------
    ValueError
        One line naming the file that shows another architecture, or an unreadable one.
    """
    wanted = json.loads(json.dumps(config_to_dict(model_config)))
    record = run_dir / ARCHITECTURE_FILE
    if record.exists():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{record}: not an architecture record of train.fit ({exc})") from exc
        if isinstance(saved, dict):  # fields newer than the record hold their defaults in it
            defaults = json.loads(json.dumps({f.name: f.default for f in dataclasses.fields(model_config)
                                              if f.default is not dataclasses.MISSING}))
            saved = {**{k: v for k, v in defaults.items() if k in wanted and k not in saved}, **saved}
        if saved != wanted:
            differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)) \
                if isinstance(saved, dict) else ["all"]
            raise ValueError(f"{record}: the run was trained with another architecture "
                             f"({', '.join(differing)} differ); use another --run-dir")
        return
    states = sorted((run_dir / "state").glob("*.pt")) if (run_dir / "state").is_dir() else []
    if not states:
        return
    try:
        saved_state = torch.load(states[0], map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds on a damaged file
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"{states[0]}: not a saved state of train.fit ({detail})") from exc
    weights = saved_state.get("model", saved_state) if isinstance(saved_state, dict) else {}
    shapes = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    if shapes != {k: tuple(v.shape) for k, v in build_model(model_config).state_dict().items()}:
        raise ValueError(f"{states[0]}: saved weights of another architecture than this run's model builds; "
                         "train it in another --run-dir")


@dataclass(frozen=True)
class Prepared:
    """What a run needs before it writes anything: checked data, statistics, architecture, card, folds."""

    data: LabelledObjects
    stats: dict[str, Any]
    bands: tuple[str, ...]
    model_config: ModelConfig | BaselineConfig
    card: ModelCard
    folds: list[list[str]]
    #: Precision of the epochs recorded before a run's records named theirs: the saved configuration's.
    earlier_precision: str = "fp32"


#: Fields that may change when a run resumes: how it runs, not what it computes.
EXECUTION_FIELDS = ("threads", "precision", "export_out", "fold_limit", "frames_cache", "eval_batch_size")


def name_epoch_precisions(state_dir: Path, earlier: str) -> None:
    """Name the precision of every saved epoch that does not: ``earlier``, the run's until now.

    Records (``*.best.json``) and resume states (``*.pt``, not the best weights)
    written before epochs named their precision are rewritten in place, before the
    run's ``config.json`` (which says what that precision was) is replaced.
    """
    def named(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**epoch, "precision": epoch.get("precision", earlier)} for epoch in history]

    for record_file in sorted(state_dir.glob("fold*_member*.best.json")):
        record = json.loads(record_file.read_text())
        if any("precision" not in epoch for epoch in record["history"]):
            text = json.dumps({**record, "history": named(record["history"])}) + "\n"
            write_atomically(record_file, lambda path: path.write_text(text))
    for state_file in sorted(state_dir.glob("fold*_member*.pt")):
        if state_file.name.endswith(".best.pt"):
            continue
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        if any("precision" not in epoch for epoch in saved["state"]["history"]):
            saved["state"]["history"] = named(saved["state"]["history"])
            write_atomically(state_file, lambda path: torch.save(saved, path))


def prepare(config: FitConfig) -> Prepared:
    """Read and check everything a run depends on, writing nothing in the run directory.

    With ``config.frames_cache``, the cached copy of the frames is written (or
    mapped) first: it does not depend on the run, and a later run reuses it.

    Raises
    ------
    ValueError
        Another configuration saved in ``run_dir``, too few objects for the folds
        or a fold's validation split, an unusable folds file or architecture
        (:class:`convention_rt.errors.CatalogError` for an unreadable catalog,
        :class:`convention_rt.errors.ModelError` for a refused export destination).
    """
    run_dir = Path(config.run_dir)
    saved_config = run_dir / "config.json"
    earlier_precision = config.precision
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: is a file, not a run directory")
    if saved_config.exists():
        try:
            previous = json.loads(saved_config.read_text())
        except ValueError as exc:
            raise ValueError(f"{saved_config}: not a run configuration ({exc})") from exc
        as_dict = dataclasses.asdict(config)
        significant = {k: v for k, v in as_dict.items() if k not in EXECUTION_FIELDS}
        defaults = dataclasses.asdict(FitConfig(catalog="", run_dir=""))  # fields newer than the saved run
        if {k: previous.get(k, defaults[k]) for k in significant} != significant:
            raise ValueError(f"{run_dir}: holds a run with another configuration; use another --run-dir")
        earlier_precision = previous.get("precision", defaults["precision"])
    if config.export_out:  # refused now, not after hours of training
        from train.export import check_destination

        check_destination(Path(config.export_out), overwrite=True)
    data = load_labelled(config.catalog, config.task, max_objects=config.max_objects,
                         frames_cache=config.frames_cache)
    stats = band_statistics(data)
    bands = tuple(b for b in data.bands if b in stats)
    model_config = config.model_config(data.classes, len(bands) + 1)
    card = ModelCard(
        name=config.name, version=config.version, preset=config.model, classes=data.classes, bands=bands,
        stamp_size=model_config.stamp_size, seq_len=model_config.seq_len,
        stem_window=getattr(model_config, "stem_window", 1), normalisation=stats,
        time_encoding=getattr(model_config, "positional_encoding", "") == "time",
    )
    check_architecture(run_dir, model_config)
    folds = make_folds(data, config, run_dir / "folds.json", write=False)
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    for fold, held_out_ids in enumerate(folds[:config.fold_limit]):
        held_out = np.array(sorted(index_of[i] for i in held_out_ids))
        inner_split(data, np.setdiff1d(np.arange(len(data)), held_out), config, fold)
    return Prepared(data, stats, bands, model_config, card, folds, earlier_precision)


def fit(config: FitConfig, command: str = "", group: Group = SINGLE_PROCESS,
        prepared: Prepared | None = None) -> dict[str, Any]:
    """Run the protocol; returns the metrics written to ``run_dir/metrics.json``.

    Everything is checked (:func:`prepare`, unless given) before anything is
    written.  With a process ``group`` (``torchrun``), every rank runs this
    function; rank 0 alone writes files.
    """
    prepared = prepared or prepare(config)
    data, stats, bands, model_config, card = (prepared.data, prepared.stats, prepared.bands,
                                              prepared.model_config, prepared.card)
    run_dir = Path(config.run_dir)
    group.barrier()  # every rank has compared with the saved configuration before rank 0 rewrites it
    if group.is_main:
        (run_dir / "state").mkdir(parents=True, exist_ok=True)
        name_epoch_precisions(run_dir / "state", prepared.earlier_precision)
        write_atomically(run_dir / "config.json",
                         lambda path: path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n"))
        make_folds(data, config, run_dir / "folds.json")
        architecture = json.dumps(config_to_dict(model_config), indent=2) + "\n"
        write_atomically(run_dir / ARCHITECTURE_FILE, lambda path: path.write_text(architecture))
    group.barrier()
    torch.set_num_threads(config.threads)
    log.info("%s: %d labelled objects, %d frames; classes %s", config.catalog, len(data), data.frames.shape[0],
             dict(zip(data.classes, data.class_counts().tolist())))
    folds = prepared.folds
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}

    per_fold, members_out, precisions_out = [], [], []
    timings: dict[str, list[float]] = {}
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True,
                  disable=not (console.is_terminal and group.is_main)) as progress:
        for fold, held_out_ids in enumerate(folds[:config.fold_limit]):
            held_out = np.array(sorted(index_of[i] for i in held_out_ids))
            train_idx = np.setdiff1d(np.arange(len(data)), held_out)
            fold_file = run_dir / f"fold{fold}.json"
            member_states, member_precisions = [], []
            for member in range(config.members):
                member_file = run_dir / "state" / f"fold{fold}_member{member}.best.pt"
                if member_file.with_suffix(".json").exists():  # written last: the member is finished
                    best = torch.load(member_file, map_location="cpu", weights_only=True)
                    record = json.loads(member_file.with_suffix(".json").read_text())
                else:
                    best, state = train_member(
                        data, train_idx, card, model_config, config, fold=fold, member=member,
                        state_path=run_dir / "state" / f"fold{fold}_member{member}.pt", progress=progress,
                        group=group)
                    record = {"seconds": state.seconds, "epochs": state.epochs_run, "restarts": state.restarts,
                              "head_units_active": state.head_units_active, "source_revision": SOURCE_REVISION,
                              "history": state.history}
                    if group.is_main:
                        write_atomically(member_file, lambda path: torch.save(best, path))
                        write_atomically(member_file.with_suffix(".json"),
                                          lambda path: path.write_text(json.dumps(record) + "\n"))
                        # finished: its resume state (weights, optimiser, best weights) is not read again
                        (run_dir / "state" / f"fold{fold}_member{member}.pt").unlink(missing_ok=True)
                    group.barrier()
                member_states.append(best)
                member_precisions.append(sorted({epoch["precision"] for epoch in record["history"]}))
                for epoch in record["history"]:
                    timings.setdefault(timing_key(epoch, prepared.earlier_precision), []).append(epoch["seconds"])
            scored = evaluation_subset(data, held_out)
            probabilities = []
            for member, best in enumerate(member_states):
                model = training_form(build_model(model_config))
                load_weights(model, best, run_dir / "state" / f"fold{fold}_member{member}.best.pt")
                probabilities.append(predict(model, data, scored, card, config.eval_batch_size, group=group))
            ensemble = np.mean(probabilities, axis=0)
            fold_scores = scores(data.labels[scored], ensemble, data.classes)
            if group.is_main:
                fold_file.write_text(json.dumps(fold_scores, indent=2) + "\n")
                write_predictions(run_dir / f"fold{fold}.predictions.json", data, scored, ensemble)
            log.info("fold %d: held-out accuracy %.4f, macro-F1 %.4f (%d objects)", fold,
                     fold_scores["accuracy"], fold_scores["macro_f1"], fold_scores["n"])
            per_fold.append(fold_scores)
            if config.export_members == "all" or fold == 0:
                members_out.extend(member_states)
                precisions_out.extend(member_precisions)
            ensemble_ready = config.export_members == "fold0" or fold == len(folds[:config.fold_limit]) - 1
            if config.export_out and ensemble_ready and group.is_main \
                    and not _export_is_current(run_dir, Path(config.export_out), per_fold, config.members):
                _export(config, command, run_dir, model_config, members_out, precisions_out, bands, stats,
                        per_fold, _evaluated_on(data))
            group.barrier()

    summary = _summary(per_fold, data.classes)
    metrics = {
        "task": config.task, "model": config.model, "cross_validation": summary, "per_fold": per_fold,
        "seconds_per_epoch": {key: float(np.mean(values)) for key, values in sorted(timings.items())},
        "exported_members": config.export_members,
        "evaluated_on": _evaluated_on(data),
    }
    if group.is_main:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        title = f"{config.model} {config.task}: {len(per_fold)} of {config.folds} folds, mean ± std"
        plot_confusion(summary, data.classes, title,
                       run_dir / "confusion.png")
        log.info("cross-validation: accuracy %.4f ± %.4f, macro-F1 %.4f ± %.4f", summary["accuracy"]["mean"],
                 summary["accuracy"]["std"], summary["macro_f1"]["mean"], summary["macro_f1"]["std"])
    group.barrier()
    return metrics


def _evaluated_on(data: LabelledObjects) -> str:
    return "held-out spec objects" if (data.typing == "phot").any() else "held-out objects"


EXPORT_RECORD = "export.json"


def _fold_digests(per_fold: list[dict[str, Any]]) -> list[str]:
    return [hashlib.sha256(json.dumps(f, sort_keys=True).encode()).hexdigest() for f in per_fold]


def _export_is_current(run_dir: Path, out_dir: Path, per_fold: list[dict[str, Any]], members: int) -> bool:
    """Whether ``out_dir`` holds this run's export, with a card showing these fold scores (and maybe more).

    The run records its exports in ``run_dir/export.json``: the model's sha256 and a
    digest of each fold's scores on its card.  An export left in ``out_dir`` by
    another run, one whose card shows other scores for one of these folds (a fold
    scored again), or one showing a later fold that is no longer complete (a member
    deleted to be trained again) or was scored since, is not current.
    """
    try:
        record = json.loads((run_dir / EXPORT_RECORD).read_text())
    except (OSError, ValueError):
        return False
    exported = out_dir / "model.onnx"
    digests = record.get("fold_digests", [])
    if not (record.get("export_out") == str(out_dir.resolve()) and exported.exists()
            and record.get("model_sha256") == sha256_of(exported)
            and digests[:len(per_fold)] == _fold_digests(per_fold)):
        return False
    for fold in range(len(per_fold), len(digests)):
        finished = all((run_dir / "state" / f"fold{fold}_member{m}.best.json").exists() for m in range(members))
        try:
            scored = _fold_digests([json.loads((run_dir / f"fold{fold}.json").read_text())])
        except (OSError, ValueError):
            return False
        if not finished or scored != digests[fold:fold + 1]:
            return False
    return True


def catalog_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance keywords of a catalog's primary header (source, generator, seed, command, ...)."""
    from astropy.io import fits

    structural = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "COMMENT", "HISTORY", ""}
    header = fits.getheader(path, 0)
    return {key: header[key] for key in header if key not in structural}


def source_revision() -> str | None:
    """Git revision of the training code in this checkout.

    Returns
    -------
    str or None
        The commit, with ``+modified`` when ``train/``, ``convention_rt/`` or
        ``csrc/`` differ from it; None outside a git checkout or without git.
    """
    git = ["git", "--no-optional-locks", "-C", str(Path(__file__).resolve().parent.parent)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no",
                                  "--", "train", "convention_rt", "csrc"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+modified" if changed else "") if commit else None


#: The revision of the code this process imported (read once, before any later edit).
SOURCE_REVISION = source_revision()
#: The CPU this process trains on (model name, matrix units), named in every epoch's record.
CPU = cpu_description()


def _export(config: FitConfig, command: str, run_dir: Path, model_config: ModelConfig | BaselineConfig,
            members: list[dict[str, torch.Tensor]], member_precisions: list[list[str]], bands: tuple[str, ...],
            stats: dict[str, Any], per_fold: list[dict[str, Any]], evaluated_on: str) -> None:
    """Export the ensemble with the metrics of the folds evaluated so far.

    The provenance names the precisions each exported member was trained in
    (``member_precisions``), which the command line of a resumed run may not.

    The exported members are complete once their folds are trained (fold 0 for
    ``export_members="fold0"``), so the model is exported then and re-exported
    after every further fold with the metrics of more folds; the weights, and
    so the predictions, stay the same.
    """
    from train.card import training_domain
    from train.export import export_checkpoint

    summary = _summary(per_fold, tuple(model_config.classes))
    provenance = {
        "training_catalog": Path(config.catalog).name, "catalog_sha256": sha256_of(Path(config.catalog)),
        "training_data": catalog_provenance(config.catalog),
        "training_domain": training_domain(config.catalog, model_config.seq_len),  # the card's domain (train.card)
        "folds_sha256": sha256_of(run_dir / "folds.json"), "command": command,
        "member_precisions": member_precisions, "config": dataclasses.asdict(config), "architecture": config_to_dict(model_config),
        "source_revision": SOURCE_REVISION, "python": platform.python_version(), "torch": str(torch.__version__),
    }
    checkpoint = Checkpoint(
        name=config.name, version=config.version, preset=config.model, config=model_config,
        members=members, bands=bands, normalisation={b: (s.mean, s.std) for b, s in stats.items()},
        metrics={"cross_validation": summary, "folds_planned": config.fold_limit or config.folds,
                 "evaluated_on": evaluated_on},
        provenance=provenance,
    )
    checkpoint.save(run_dir / "ensemble.ckpt")
    # the same members again (a later fold scored): the graph stays, only the card's metrics change
    result = export_checkpoint(checkpoint, config.export_out, threads=config.threads, overwrite=True,
                               reuse_graph=True)
    record = json.dumps({"export_out": str(Path(config.export_out).resolve()), "folds": len(per_fold),
                         "model_sha256": sha256_of(result.model_path), "fold_digests": _fold_digests(per_fold)})
    write_atomically(run_dir / EXPORT_RECORD, lambda path: path.write_text(record + "\n"))
    log.info("%s %d member(s) to %s (%s), metrics of %d of %d folds",
             "card rewritten for the" if result.graph_reused else "exported", len(members), result.model_path,
             result.graph, len(per_fold), config.fold_limit or config.folds)


_FIELD_TYPES: dict[str, type] = {"int": int, "float": float, "int | None": int, "str | None": str, "str": str}


def _typed(name: str, value: Any, source: str) -> Any:
    """A YAML value as its FitConfig field's type, or a UsageError naming ``source`` and the field."""
    annotation = str(next(f.type for f in dataclasses.fields(FitConfig) if f.name == name))
    if value is None and "None" in annotation:
        return None
    if annotation.startswith("dict"):
        if isinstance(value, dict):
            return value
        raise UsageError(f"{source}: field {name!r} must be a mapping, got {value!r}")
    kind = _FIELD_TYPES[annotation]
    if kind is float and isinstance(value, str):  # YAML reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise UsageError(f"{source}: field {name!r} must be {'a number' if kind is float else 'an integer' if kind is int else 'a string'}"
                     f"{' or null' if 'None' in annotation else ''}, got {value!r}")


def _read_yaml(path: Path) -> dict[str, Any]:
    """FitConfig fields from a YAML file, each checked against its field's type."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the configuration ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: must be a mapping of FitConfig fields, got {type(loaded).__name__}")
    known = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(str(k) for k in loaded if k not in known)
    if unknown:
        raise UsageError(f"{path}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
    return {name: _typed(name, value, str(path)) for name, value in loaded.items()}


def _field_help() -> dict[str, str]:
    """Each field's description, from the FitConfig docstring."""
    helps: dict[str, str] = {}
    lines = (FitConfig.__doc__ or "").split("Attributes\n    ----------\n", 1)[-1].splitlines()
    names: list[str] = []
    for line in lines:
        if line.startswith("    ") and not line.startswith("        ") and line.strip():
            names = [n.strip() for n in line.split(":")[0].split(",")]
        elif line.startswith("        ") and names:
            for name in names:
                helps[name] = (helps.get(name, "") + " " + line.strip()).strip()
    return helps


def _parse(argv: list[str] | None) -> tuple[FitConfig, str]:
    """The run's configuration from ``--config`` YAML and flags (flags win), and the command as typed."""
    parser = OneLineParser(prog="python -m train.fit", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="YAML file of FitConfig fields (flags override it)")
    helps = _field_help()
    for item in dataclasses.fields(FitConfig):
        if item.name == "extra":
            continue
        kind = _FIELD_TYPES.get(str(item.type), str)
        default = "" if item.default is dataclasses.MISSING else f" (default: {item.default})"
        parser.add_argument(f"--{item.name.replace('_', '-')}", dest=item.name, type=kind, default=None,
                            help=helps.get(item.name, "").replace("%", "%%") + default)
    options = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_path = options.pop("config")
    if config_path is not None:
        values.update(_read_yaml(config_path))
    values.update({k: v for k, v in options.items() if v is not None})
    missing = [k for k in ("catalog", "run_dir") if not values.get(k)]
    if missing:
        parser.error(f"missing {', '.join('--' + m.replace('_', '-') for m in missing)}")
    command = "python -m train.fit " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        return FitConfig(**values), command
    except ValueError as exc:
        raise UsageError(f"{config_path or 'command line'}: {exc}") from exc


def configure_logging(run_dir: Path, is_main: bool = True) -> None:
    """Log to the console and to ``run_dir/fit.log`` (in the main process; other ranks stay quiet)."""
    handlers: list[logging.Handler] = []
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        console = RichHandler(console=Console(stderr=True), show_path=False)
        console.setFormatter(logging.Formatter("%(message)s"))
        logfile = logging.FileHandler(run_dir / "fit.log")
        logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers = [console, logfile]
    logging.basicConfig(level=logging.WARNING, handlers=handlers or [logging.NullHandler()], force=True)
    log.setLevel(logging.INFO if is_main else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: 0 done, 1 bad input, 2 usage, 3 model or export refused, 130 interrupted."""
    try:
        config, command = _parse(argv)
        prepared = prepare(config)  # every check before the run directory is touched
    except (ConventionError, ValueError, OSError) as exc:
        return report_failure(exc)
    group = setup()
    configure_logging(Path(config.run_dir), group.is_main)
    if group.distributed:
        log.info("data-parallel training over %d processes", group.world)
    try:
        fit(config, command, group, prepared)
    except (ConventionError, ValueError, OSError) as exc:
        return report_failure(exc)
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume", file=sys.stderr)
        return 130
    finally:
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
