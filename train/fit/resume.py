"""What a run takes from earlier work instead of doing it again, and the checks that it is the same computation.

* The run directory's saved configuration (``config.json``) and architecture
  (``architecture.json``) must be this run's; a field newer than the record means its
  default (:func:`same_computation`, :func:`check_architecture`).
* Folds finished on another machine are restored from the run's records folder
  (:func:`restore_fold`, checked by :func:`check_records`): weights stay where they
  were trained (``runs/`` is working state), records travel with the repository.
* Finished members of a run of the same training are copied instead of trained
  (``--reuse-from``: :func:`check_reusable`, :func:`reuse_member`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from train.checkpoint import config_from_dict, config_to_dict
from train.files import copy_atomically, write_atomically
from train.fit.config import FitConfig
from train.fit.folds import folds_text, read_folds
from train.model import BaselineConfig, ModelConfig
from train.model.trees import TREES, TreesConfig
from train.records import FOLDS_DIGEST, member_record, published_fold

__all__ = ["ARCHITECTURE_FILE", "EXECUTION_FIELDS", "TRAINING_FIELDS", "RestoredFold", "check_architecture",
           "fold_members_finished",
           "check_member_records", "check_records", "check_reusable", "restore_fold", "reuse_member",
           "same_computation"]

log = logging.getLogger("train")


#: Fields that may change when a run resumes: how it runs, not what it computes (``run_dir``:
#: a run directory may be moved).
EXECUTION_FIELDS = ("threads", "precision", "export_out", "fold_limit", "only_folds", "reuse_from", "frames_cache",
                    "eval_batch_size", "early", "records_dir", "run_dir")
#: Fields besides the architecture that enter a member's training: two runs equal in these (and in
#: catalog, split and architecture, however named: a preset or a preset with changes) train member m
#: of fold k alike, whatever their number of members or folds.
TRAINING_FIELDS = ("task", "epochs", "patience", "batch_size", "learning_rate", "dropout", "frame_drop",
                   "validation_fraction", "seed", "max_objects", "prefix_truncation", "normalisation")


#: The run's model architecture (:func:`train.checkpoint.config_to_dict`), beside ``config.json``.
ARCHITECTURE_FILE = "architecture.json"


def check_architecture(run_dir: Path, model_config: ModelConfig | BaselineConfig | TreesConfig) -> None:
    """Refuse a run directory that holds a run of another architecture than ``model_config``.

    Presets can change between versions while ``config.json`` names only the preset,
    so the architecture is compared as well, with the run's ``architecture.json``.  A
    run directory that holds saved states needs that record.

    Parameters
    ----------
    run_dir : Path
        The run directory (it may not exist yet).
    model_config : ModelConfig, BaselineConfig or TreesConfig
        The architecture this run builds.

    Raises
    ------
    ValueError
        One line naming the file that shows another architecture, or an unreadable one,
        or the run directory whose saved states have no architecture record.
    """
    wanted = json.loads(json.dumps(config_to_dict(model_config)))
    record = run_dir / ARCHITECTURE_FILE
    if not record.exists():
        states = sorted((run_dir / "state").glob("*.pt")) if (run_dir / "state").is_dir() else []
        if states:
            raise ValueError(f"{run_dir}: holds saved states ({states[0].name}) but no {ARCHITECTURE_FILE}; "
                             "use another --run-dir")
        return
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{record}: not an architecture record of train.fit ({exc})") from exc
    try:  # a record written before a field existed meant that field's default
        saved = json.loads(json.dumps(config_to_dict(config_from_dict(saved))))
    except (TypeError, ValueError, KeyError, AttributeError):
        pass
    if saved != wanted:
        differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k)) \
            if isinstance(saved, dict) else ["all"]
        raise ValueError(f"{record}: the run was trained with another architecture "
                         f"({', '.join(differing)} differ); use another --run-dir")


def check_member_records(run_dir: Path) -> None:
    """Refuse a run directory with a finished member's record (``state/*.best.json``) whose epochs lack their precision.

    Raises
    ------
    ValueError
        One line naming the first such record.
    """
    for record_file in sorted(run_dir.glob("state/fold*_member*.best.json")):
        try:
            history = json.loads(record_file.read_text())["history"]
            complete = all("precision" in epoch for epoch in history)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{record_file}: not a member record of train.fit ({exc})") from exc
        if not complete:
            raise ValueError(f"{record_file}: an epoch without its precision (every epoch names it); "
                             "use another --run-dir")


def _recorded(saved: dict[str, Any], field: str) -> Any:
    """A field of a saved run configuration; one newer than the record meant its default."""
    return saved[field] if field in saved else dataclasses.asdict(FitConfig(catalog="", run_dir=""))[field]


def same_computation(saved_config: Path, config: FitConfig) -> bool:
    """Whether the run configuration saved in ``saved_config`` computes what ``config`` does.

    Fields of :data:`EXECUTION_FIELDS` (how a run runs) are not compared; a field the
    saved configuration lacks (newer than it) meant its default.

    Raises
    ------
    ValueError
        ``saved_config`` is not a run configuration.
    """
    try:
        previous = json.loads(saved_config.read_text())
        if not isinstance(previous, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise ValueError(f"{saved_config}: not a run configuration ({exc})") from exc
    significant = {k: v for k, v in dataclasses.asdict(config).items() if k not in EXECUTION_FIELDS}
    return {k: _recorded(previous, k) for k in significant} == significant


def check_reusable(source: Path, config: FitConfig, model_config: ModelConfig | BaselineConfig | TreesConfig,
                   folds: list[list[str]]) -> None:
    """Refuse a run directory whose members are not this run's computation (``--reuse-from``).

    Raises
    ------
    ValueError
        One line naming the run directory and what differs: not a run, another
        catalog, split, architecture or training field.
    """
    try:
        saved = json.loads((source / "config.json").read_text())
        held_out = read_folds(source / "folds.json")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{source}: not a run directory of train.fit to reuse members from ({exc})") from exc
    differing = [k for k in TRAINING_FIELDS if _recorded(saved, k) != getattr(config, k)]
    if Path(saved.get("catalog", "")).resolve() != Path(config.catalog).resolve():
        differing.insert(0, "catalog")
    if held_out != folds:
        differing.append("folds")
    if differing:
        raise ValueError(f"{source}: its members were trained otherwise ({', '.join(differing)} differ); "
                         "they cannot be reused")
    _check_architecture_of(source, model_config, "its members cannot be reused")


def _check_architecture_of(folder: Path, model_config: ModelConfig | BaselineConfig | TreesConfig,
                           consequence: str) -> None:
    """:func:`check_architecture` of another run's folder, its one-line error ending with ``(consequence)``."""
    try:
        check_architecture(folder, model_config)
    except ValueError as exc:
        raise ValueError(f"{exc} ({consequence})") from exc


def reuse_member(config: FitConfig, run_dir: Path, fold: int, member: int, *, write: bool = True) -> bool:
    """Whether member ``member`` of ``fold`` finished in ``config.reuse_from``; copied here when ``write``."""
    if not config.reuse_from:
        return False
    source = Path(config.reuse_from) / "state" / f"fold{fold}_member{member}.best.pt"
    if not source.with_suffix(".json").is_file():  # the record is written after the weights
        return False
    if write:
        target = run_dir / "state" / source.name
        copy_atomically(source, target)
        copy_atomically(source.with_suffix(".json"), target.with_suffix(".json"))
        log.info("fold %d member %d: taken from %s", fold, member, config.reuse_from)
    return True


def check_records(records: Path, config: FitConfig, model_config: ModelConfig | BaselineConfig | TreesConfig,
                  folds: list[list[str]]) -> None:
    """Refuse a records folder that holds the records of another computation than this run's.

    A run restores from its records folder the folds it finished on another machine
    (:func:`fit`), so the folder's configuration, architecture and folds digest must be
    this run's.

    Raises
    ------
    ValueError
        One line naming the folder and what differs.
    """
    if (records / "config.json").is_file() and not same_computation(records / "config.json", config):
        raise ValueError(f"{records}: holds the records of a run with another configuration; "
                         "use another --records-dir")
    _check_architecture_of(records, model_config, "in the records folder: use another --records-dir")
    digest = records / FOLDS_DIGEST
    if digest.is_file():
        folds_file = Path(config.run_dir) / "folds.json"
        text = folds_file.read_bytes() if folds_file.is_file() else folds_text(config, folds).encode()
        if digest.read_text().strip() != hashlib.sha256(text).hexdigest():
            raise ValueError(f"{digest}: the records were made on other folds than this run's; "
                             "use another --records-dir")


@dataclass(frozen=True)
class RestoredFold:
    """A fold finished on another machine: its scores and its members' epochs, from its records."""

    scores: dict[str, Any]
    epochs: list[dict[str, Any]]


def fold_members_finished(run_dir: Path, fold: int, config: FitConfig) -> bool:
    """Whether the members of ``fold`` are finished in ``run_dir``: every network member's record
    (``state/fold<k>_member<m>.best.json``, written last), or for the trees model its trees
    (``state/fold<k>_trees.pt``, written last).

    Parameters
    ----------
    run_dir : Path
    fold : int
    config : FitConfig

    Returns
    -------
    bool
    """
    if config.model == TREES:
        return (run_dir / "state" / f"fold{fold}_trees.pt").exists()
    return all((run_dir / "state" / f"fold{fold}_member{m}.best.json").exists() for m in range(config.members))


def restore_fold(config: FitConfig, run_dir: Path, fold: int, *, write: bool = True) -> RestoredFold | None:
    """Restore a fold whose members are not in ``run_dir`` but whose records are published.

    Weights stay on the machine that trained them (``runs/`` is working state); the
    records folder (``config.records_dir``, checked by :func:`check_records`) keeps a
    finished fold's scores, predictions, early curve and member records.  With them,
    the fold counts as finished: its scores, predictions and early curve are copied
    back into ``run_dir`` (when ``write``) and it is not trained again.

    Returns
    -------
    RestoredFold or None
        None when the fold's members are in ``run_dir`` (it resumes or is scored as
        usual), when the run keeps no records, or when they are not all there.

    Raises
    ------
    ValueError
        The fold's members are needed for the export (``export_out``: fold 0, or
        every fold with ``export_members="all"``) but are not on this machine.
    """
    if not config.records_dir:
        return None
    if fold_members_finished(run_dir, fold, config):
        return None
    records = Path(config.records_dir)
    published = published_fold(records, fold, config.members, early=config.early)
    if published is None:
        return None
    if config.export_out and (config.export_members == "all" or fold == 0):
        raise ValueError(f"{run_dir}: fold {fold}'s members were trained elsewhere (their records are in "
                         f"{records}) and the export needs their weights; run without --export-out, or train "
                         "them again in another --run-dir")
    if write:
        for source in published:
            target = run_dir / source.name
            if not (target.is_file() and target.read_bytes() == source.read_bytes()):
                write_atomically(target, lambda path, data=source.read_bytes(): path.write_bytes(data))
    epochs = []
    for member in range(config.members):
        record = member_record(records, fold, member)
        try:
            epochs += json.loads(record.read_text())["history"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{record}: not a member record of train.fit ({exc})") from exc
    try:
        scores = json.loads(published[0].read_text())
    except ValueError as exc:
        raise ValueError(f"{published[0]}: not the scores of a fold ({exc})") from exc
    return RestoredFold(scores, epochs)
