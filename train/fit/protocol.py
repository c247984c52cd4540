"""The whole protocol: every check before a run writes anything (:func:`prepare`), then the folds (:func:`fit`)."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from convention_rt.model_card import ModelCard
from train.calibration import fold_file as calibration_file
from train.calibration import fold_record
from train.checkpoint import config_to_dict
from train.data.dataset import LabelledObjects, band_statistics, load_labelled
from train.distributed import SINGLE_PROCESS, Group
from train.early import FRAMES_SEEN, gather, score_fold
from train.files import write_atomically
from train.fit.config import FitConfig
from train.fit.evaluation import evaluated_on, fold_summary, plot_confusion, predict, scores, write_predictions
from train.fit.export_step import export_ensemble, export_is_current
from train.fit.folds import evaluation_subset, inner_split, make_folds
from train.fit.member import load_weights, train_member
from train.fit.provenance import SOURCE_REVISION
from train.fit.tree_head import fold_trees
from train.fit.resume import (
    ARCHITECTURE_FILE,
    EXECUTION_FIELDS,
    check_architecture,
    check_member_records,
    check_records,
    check_reusable,
    restore_fold,
    reuse_member,
    same_computation,
)
from train.machine import timing_key
from train.model import BaselineConfig, ModelConfig, build_model, training_form
from train.model.trees import TreesConfig, with_trees
from train.records import publish_fold, publish_run

__all__ = ["ARCHITECTURE_FILE", "EXECUTION_FIELDS", "Prepared", "check_architecture", "check_member_records", "fit",
           "prepare"]

log = logging.getLogger("train")


@dataclass(frozen=True)
class Prepared:
    """What a run needs before it writes anything: checked data, statistics, architecture, card, folds."""

    data: LabelledObjects
    stats: dict[str, Any]
    bands: tuple[str, ...]
    model_config: ModelConfig | BaselineConfig | TreesConfig
    card: ModelCard
    folds: list[list[str]]


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
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{run_dir}: is a file, not a run directory")
    if saved_config.exists() and not same_computation(saved_config, config):
        raise ValueError(f"{run_dir}: holds a run with another configuration; use another --run-dir")
    if config.export_out:  # refused now, not after hours of training
        from train.export import check_destination

        check_destination(Path(config.export_out), overwrite=True)
    data = load_labelled(config.catalog, config.task, max_objects=config.max_objects,
                         frames_cache=config.frames_cache)
    stats = band_statistics(data, kind=config.normalisation)
    bands = tuple(b for b in data.bands if b in stats)
    model_config = config.model_config(data.classes, len(bands) + 1)
    card = ModelCard(
        name=config.name, version=config.version, preset=config.model, classes=data.classes, bands=bands,
        stamp_size=model_config.stamp_size, seq_len=model_config.seq_len,
        stem_window=getattr(model_config, "stem_window", 1), normalisation=stats,
        time_encoding=getattr(model_config, "positional_encoding", "") == "time",
        window=model_config.window,
    )
    check_architecture(run_dir, model_config)
    check_member_records(run_dir)
    folds = make_folds(data, config, run_dir / "folds.json", write=False)
    if config.reuse_from:
        check_reusable(Path(config.reuse_from), config, model_config, folds)
    if config.records_dir:
        check_records(Path(config.records_dir), config, model_config, folds)
        if config.export_out:  # refused now, not after the folds before it are trained
            exported = range(len(folds[:config.fold_limit])) if config.export_members == "all" else [0]
            for fold in exported:
                restore_fold(config, run_dir, fold, write=False)
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    for fold, held_out_ids in enumerate(folds[:config.fold_limit]):
        held_out = np.array(sorted(index_of[i] for i in held_out_ids))
        inner_split(data, np.setdiff1d(np.arange(len(data)), held_out), config, fold)
    return Prepared(data, stats, bands, model_config, card, folds)


def fit(config: FitConfig, command: str = "", group: Group = SINGLE_PROCESS,
        prepared: Prepared | None = None) -> dict[str, Any]:
    """Run the protocol; returns the metrics written to ``run_dir/metrics.json``.

    With ``config.only_folds``, only those folds are trained, scored and published,
    and the scores of those folds are returned (``per_fold``, ``folds``); nothing
    is gathered or exported.  Folds published on another machine are restored, and
    finished members of ``config.reuse_from`` copied (:mod:`train.fit.resume`).
    Everything is checked (:func:`prepare`, unless given) before anything is
    written.  With a process ``group`` (``torchrun``), every rank runs this
    function; rank 0 alone writes files (and scores the early curves).  A fold is
    finished when its members are: it is then scored, its early curve too with
    ``config.early``, and its records are copied to ``config.records_dir``.
    """
    prepared = prepared or prepare(config)
    data, stats, bands, model_config, card = (prepared.data, prepared.stats, prepared.bands,
                                              prepared.model_config, prepared.card)
    run_dir = Path(config.run_dir)
    group.barrier()  # every rank has compared with the saved configuration before rank 0 rewrites it
    if group.is_main:
        (run_dir / "state").mkdir(parents=True, exist_ok=True)
        write_atomically(run_dir / "config.json",
                         lambda path: path.write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n"))
        make_folds(data, config, run_dir / "folds.json")
        architecture = json.dumps(config_to_dict(model_config), indent=2) + "\n"
        write_atomically(run_dir / ARCHITECTURE_FILE, lambda path: path.write_text(architecture))
        if config.records_dir:
            publish_run(run_dir, Path(config.records_dir))
    group.barrier()
    torch.set_num_threads(config.threads)
    log.info("%s: %d labelled objects, %d frames; classes %s", config.catalog, len(data), data.frames.shape[0],
             dict(zip(data.classes, data.class_counts().tolist())))
    folds = prepared.folds
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    selected = config.selected_folds()

    per_fold, members_out, precisions_out, early_folds = [], [], [], []
    trees_out: dict[str, torch.Tensor] | None = None  # fold 0's, with config.tree_head
    timings: dict[str, list[float]] = {}
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True,
                  disable=not (console.is_terminal and group.is_main)) as progress:
        for fold, held_out_ids in enumerate(folds[:config.fold_limit]):
            if selected is not None and fold not in selected:
                continue
            held_out = np.array(sorted(index_of[i] for i in held_out_ids))
            train_idx = np.setdiff1d(np.arange(len(data)), held_out)
            fold_file = run_dir / f"fold{fold}.json"
            restored = restore_fold(config, run_dir, fold, write=group.is_main)
            if restored is not None:  # every rank reads the same records; the main one copies them
                group.barrier()
                per_fold.append(restored.scores)
                for epoch in restored.epochs:
                    timings.setdefault(timing_key(epoch), []).append(epoch["seconds"])
                if config.early:
                    early_folds.append(fold)
                log.info("fold %d: finished on another machine, restored from %s (accuracy %.4f, macro-F1 %.4f)",
                         fold, config.records_dir, restored.scores["accuracy"], restored.scores["macro_f1"])
                continue
            member_states, member_precisions = [], []
            for member in range(config.members):
                member_file = run_dir / "state" / f"fold{fold}_member{member}.best.pt"
                finished = member_file.with_suffix(".json").exists()  # the record is written last
                if not finished and reuse_member(config, run_dir, fold, member, write=group.is_main):
                    group.barrier()  # copied by the main process before any reads it
                    finished = True
                if finished:
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
                    timings.setdefault(timing_key(epoch), []).append(epoch["seconds"])
            scored = evaluation_subset(data, held_out)
            models = []
            for member, best in enumerate(member_states):
                model = training_form(build_model(model_config))
                load_weights(model, best, run_dir / "state" / f"fold{fold}_member{member}.best.pt")
                models.append(model)
            if config.tree_head:
                trees = fold_trees(config, run_dir, fold, data, train_idx, card, model_config, networks=models,
                                   write=group.is_main)
                group.barrier()
                models = with_trees(models, trees, model_config)
                if fold == 0:
                    trees_out = trees
            probabilities = [predict(model, data, scored, card, config.eval_batch_size, group=group)
                             for model in models]
            ensemble = np.mean(probabilities, axis=0)
            fold_scores = scores(data.labels[scored], ensemble, data.classes)
            validation = evaluation_subset(data, inner_split(data, train_idx, config, fold)[1])
            on_validation = [predict(model, data, validation, card, config.eval_batch_size, group=group)
                             for model in models]
            if group.is_main:  # what calibrating the fold needs, kept when its weights are not
                record = json.dumps(fold_record(np.stack(on_validation), data.labels[validation],
                                                np.stack(probabilities), data.labels[scored])) + "\n"
                write_atomically(calibration_file(run_dir, fold), lambda path: path.write_text(record))
                fold_text = json.dumps(fold_scores, indent=2) + "\n"
                write_atomically(fold_file, lambda path: path.write_text(fold_text))
                write_predictions(run_dir / f"fold{fold}.predictions.json", data, scored, ensemble)
            log.info("fold %d: held-out accuracy %.4f, macro-F1 %.4f (%d objects)", fold,
                     fold_scores["accuracy"], fold_scores["macro_f1"], fold_scores["n"])
            if group.is_main:
                if config.early:  # scored once per fold: kept on resume while the fold scores stay the same
                    log.info("fold %d: early classification", fold)
                    score_fold(run_dir, fold, models, data, scored, card, fold_scores,
                               batch_size=config.eval_batch_size, reuse=True)
                    early_folds.append(fold)
                if config.records_dir:
                    publish_fold(run_dir, Path(config.records_dir), fold)
            per_fold.append(fold_scores)
            if config.export_members == "all" or fold == 0:
                members_out.extend(member_states)
                precisions_out.extend(member_precisions)
            ensemble_ready = config.export_members == "fold0" or fold == len(folds[:config.fold_limit]) - 1
            if config.export_out and ensemble_ready and selected is None and group.is_main \
                    and not export_is_current(run_dir, Path(config.export_out), per_fold, config):
                export_ensemble(config, command, run_dir, model_config, members_out, precisions_out, bands,
                                stats, per_fold, evaluated_on(data), trees=trees_out)
            group.barrier()

    if selected is not None:  # a pass over some folds: the pass over all of them gathers the run
        log.info("folds %s finished; run again without --only-folds to gather the run",
                 ", ".join(map(str, selected)))
        return {"task": config.task, "model": config.model, "per_fold": per_fold, "folds": list(selected)}
    summary = fold_summary(per_fold, data.classes)
    metrics = {
        "task": config.task, "model": config.model, "cross_validation": summary, "per_fold": per_fold,
        "seconds_per_epoch": {key: float(np.mean(values)) for key, values in sorted(timings.items())},
        "exported_members": config.export_members,
        "evaluated_on": evaluated_on(data),
    }
    if group.is_main:
        metrics_text = json.dumps(metrics, indent=2) + "\n"
        write_atomically(run_dir / "metrics.json", lambda path: path.write_text(metrics_text))
        if early_folds:
            gather(run_dir, early_folds, FRAMES_SEEN)
        if config.records_dir:
            publish_run(run_dir, Path(config.records_dir))
        title = f"{config.model} {config.task}: {len(per_fold)} of {config.folds} folds, mean ± std"
        plot_confusion(summary, data.classes, title, run_dir / "confusion.png")
        log.info("cross-validation: accuracy %.4f ± %.4f, macro-F1 %.4f ± %.4f", summary["accuracy"]["mean"],
                 summary["accuracy"]["std"], summary["macro_f1"]["mean"], summary["macro_f1"]["std"])
    group.barrier()
    return metrics
