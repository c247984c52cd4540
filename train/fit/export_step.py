"""The export at the end of a run: the ensemble with its card, and the record that says it is current."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import platform
from pathlib import Path
from typing import Any

import torch

from convention_rt.model_card import sha256_of
from train.checkpoint import Checkpoint, config_to_dict
from train.files import write_atomically
from train.fit.config import FitConfig
from train.fit.evaluation import fold_summary
from train.fit.provenance import SOURCE_REVISION, catalog_provenance
from train.fit.resume import fold_members_finished
from train.model import BaselineConfig, ModelConfig
from train.model.trees import TREES, TreesConfig, tree_weight

__all__ = ["EXPORT_RECORD", "export_ensemble", "export_is_current", "fold_digests"]

log = logging.getLogger("train")

#: The run's record of its exports (destination, model sha256, digests of the fold scores on the card).
EXPORT_RECORD = "export.json"


def fold_digests(per_fold: list[dict[str, Any]]) -> list[str]:
    """The sha256 of each fold's scores (canonical JSON), as ``export.json`` records them."""
    return [hashlib.sha256(json.dumps(f, sort_keys=True).encode()).hexdigest() for f in per_fold]


def export_is_current(run_dir: Path, out_dir: Path, per_fold: list[dict[str, Any]], config: FitConfig) -> bool:
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
            and digests[:len(per_fold)] == fold_digests(per_fold)):
        return False
    for fold in range(len(per_fold), len(digests)):
        finished = fold_members_finished(run_dir, fold, config)
        try:
            scored = fold_digests([json.loads((run_dir / f"fold{fold}.json").read_text())])
        except (OSError, ValueError):
            return False
        if not finished or scored != digests[fold:fold + 1]:
            return False
    return True


def export_ensemble(config: FitConfig, command: str, run_dir: Path,
                    model_config: ModelConfig | BaselineConfig | TreesConfig,
                    members: list[dict[str, torch.Tensor]], member_precisions: list[list[str]],
                    bands: tuple[str, ...], stats: dict[str, Any], per_fold: list[dict[str, Any]],
                    evaluated_on: str, trees: dict[str, torch.Tensor] | None = None) -> None:
    """Export the ensemble with the metrics of the folds evaluated so far.

    The provenance names the precisions each exported member was trained in
    (``member_precisions``), which the command line of a resumed run may not.

    The exported members are complete once their folds are trained (fold 0 for
    ``export_members="fold0"``), so the model is exported then and re-exported
    after every further fold with the metrics of more folds; the weights, and
    so the predictions, stay the same.  With ``trees`` (fold 0's tree head,
    :mod:`train.fit.tree_head`), every member is exported mixed with them and the
    card's provenance says what the fit chose (``tree_head``).
    """
    from train.domain import training_domain
    from train.export import export_checkpoint

    if config.tree_head != (trees is not None):
        raise ValueError(f"{run_dir}: tree_head is {config.tree_head} but fold 0's trees are "
                         f"{'missing' if trees is None else 'given'}; export refused")

    summary = fold_summary(per_fold, tuple(model_config.classes))
    provenance = {
        "training_catalog": Path(config.catalog).name, "catalog_sha256": sha256_of(Path(config.catalog)),
        "training_data": catalog_provenance(config.catalog),
        "training_domain": training_domain(config.catalog, model_config.seq_len),  # the card's domain (train.domain)
        "folds_sha256": sha256_of(run_dir / "folds.json"), "command": command,
        "member_precisions": member_precisions, "config": dataclasses.asdict(config),
        "architecture": config_to_dict(model_config),
        "source_revision": SOURCE_REVISION, "python": platform.python_version(), "torch": str(torch.__version__),
    }
    if trees is not None:
        fitted = json.loads((run_dir / "state" / "fold0_boosting.json").read_text())
        provenance["tree_head"] = {**({} if config.model == TREES else {"weight": tree_weight(trees)}),
                                   **{key: fitted[key] for key in (
            "iterations", "grown", "best_validation_macro_f1", "features", "scene", "photometry", "prefix_draws",
            "trees", "max_leaves", "fit_objects", "validation_objects") if key in fitted}}
    checkpoint = Checkpoint(
        name=config.name, version=config.version, preset=config.model, config=model_config,
        members=members, bands=bands, normalisation={b: (s.mean, s.std) for b, s in stats.items()},
        metrics={"cross_validation": summary, "folds_planned": config.fold_limit or config.folds,
                 "evaluated_on": evaluated_on},
        provenance=provenance, trees=trees,
    )
    checkpoint.save(run_dir / "ensemble.ckpt")
    # the same members again (a later fold scored): the graph stays, only the card's metrics change
    result = export_checkpoint(checkpoint, config.export_out, threads=config.threads, overwrite=True,
                               reuse_graph=True)
    record = json.dumps({"export_out": str(Path(config.export_out).resolve()), "folds": len(per_fold),
                         "model_sha256": sha256_of(result.model_path), "fold_digests": fold_digests(per_fold)})
    write_atomically(run_dir / EXPORT_RECORD, lambda path: path.write_text(record + "\n"))
    log.info("%s %d member(s) to %s (%s), metrics of %d of %d folds",
             "card rewritten for the" if result.graph_reused else "exported", result.card.members, result.model_path,
             result.graph, len(per_fold), config.fold_limit or config.folds)
