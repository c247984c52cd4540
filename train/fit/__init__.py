"""``python -m train.fit``: the paper's training protocol.

* Catalog read through the runtime's reader, preprocessed through the runtime's
  compiled path (``convention_rt.transform.to_inputs``): no second copy of normalisation or
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

Modules: :mod:`~train.fit.config` (the run's configuration),
:mod:`~train.fit.folds` (folds, stages, validation objects),
:mod:`~train.fit.batches` (draw weights, augmentation, model inputs),
:mod:`~train.fit.evaluation` (predictions and scores),
:mod:`~train.fit.member` (one member's training), :mod:`~train.fit.protocol`
(checks, then folds x members), :mod:`~train.fit.export_step` (the export),
:mod:`~train.fit.provenance` (code revision, CPU, catalog header) and
:mod:`~train.fit.command_line` (``python -m train.fit``).
"""

from train.fit.batches import augment, balanced_weights, model_inputs
from train.fit.command_line import configure_logging, main
from train.fit.config import FitConfig
from train.fit.evaluation import evaluated_on, fold_summary, plot_confusion, predict, scores, write_predictions
from train.fit.export_step import EXPORT_RECORD, export_ensemble, export_is_current, fold_digests
from train.fit.folds import evaluation_subset, inner_split, make_folds, read_folds, stages_of
from train.fit.member import (
    DEAD_HEAD_SHARE,
    MAX_RESTARTS,
    MemberState,
    head_is_dead,
    head_units_active,
    load_weights,
    member_seed,
    train_member,
)
from train.fit.protocol import (
    ARCHITECTURE_FILE,
    EXECUTION_FIELDS,
    Prepared,
    check_architecture,
    check_member_records,
    fit,
    prepare,
)
from train.fit.provenance import CPU, SOURCE_REVISION, catalog_provenance, source_revision

__all__ = [
    "ARCHITECTURE_FILE", "CPU", "DEAD_HEAD_SHARE", "EXECUTION_FIELDS", "EXPORT_RECORD", "MAX_RESTARTS", "MemberState",
    "FitConfig", "Prepared", "SOURCE_REVISION", "augment", "balanced_weights", "catalog_provenance",
    "check_architecture", "check_member_records", "configure_logging", "evaluated_on", "evaluation_subset", "export_ensemble",
    "export_is_current", "fit", "fold_digests", "fold_summary", "head_is_dead", "head_units_active", "inner_split",
    "load_weights", "main", "make_folds", "member_seed", "model_inputs", "plot_confusion",
    "predict", "prepare", "read_folds", "scores", "source_revision", "stages_of", "train_member",
    "write_predictions",
]
