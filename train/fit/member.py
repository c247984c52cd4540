"""One ensemble member: its seeds, its training (resumable, restarted on a dead head) and its saved state."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convention_rt.model_card import ModelCard
from train.data.dataset import LabelledObjects
from train.distributed import SINGLE_PROCESS, Group
from train.files import write_atomically
from train.fit.batches import augment, balanced_weights, model_inputs
from train.fit.config import FitConfig
from train.fit.evaluation import predict, scores
from train.fit.folds import inner_split, stages_of
from train.fit.provenance import CPU
from train.model import BaselineConfig, ModelConfig, build_model, training_form
from train.model.convention import ClassifierHead

__all__ = ["DEAD_HEAD_SHARE", "MAX_RESTARTS", "MemberState", "head_is_dead", "head_units_active", "load_weights",
           "member_seed", "train_member"]

log = logging.getLogger("train")

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
