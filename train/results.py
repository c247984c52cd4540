"""``python -m train.results``: the results table of ``docs/results.md``.

Every entry of :data:`PLAN` is one :func:`train.fit.fit` run under the same
protocol (:data:`TABLE_PROTOCOL`) on the same folds: the split of the shipped
model's run, kept once in :data:`FOLDS_FILE` (copied into each entry's run
directory before it starts), so all models are scored on the same held-out
objects.  The reference rows (gradient boosting on the static scene or on the
difference light curves, the light-curve LSTM on difference fluxes with errors)
are trained by :func:`train.reference.rows.run_reference_row` on the same folds,
validation splits and held-out objects, and write the same per-fold files.

Each row has two folders: its run directory under the benchmark's ``runs/``
folder (working state: weights, resume states, logs, plots; ignored by git), and
its records folder under the benchmark's ``results/`` folder (tracked), which
receives the row's text records as each fold finishes (:mod:`train.records`).
The table reads only the records.

* ``python -m train.results run --catalog CATALOG [--only NAME ...]`` trains the
  entries one after the other; each resumes where it stopped, like ``train.fit``
  (a reference row at its first unfinished fold).  The image rows of the early
  table score each fold's early-classification curve as the fold finishes
  (``train.fit``'s ``early``).
* ``python -m train.results table`` writes the table between the markers of
  ``docs/results.md`` from whatever folds are finished (partial rows say so).
* ``--benchmark hard`` or ``--benchmark difference`` (before the command) trains
  and tables the rows of another benchmark instead (:data:`BENCHMARKS`: a catalog
  built with ``python -m train.data.plasticc --scene hard`` or ``--scene difference``,
  records in ``results/hard`` or ``results/difference``, its own table markers, each
  row compared with the same row of the standard benchmark).  A catalog is refused
  unless its ``SCENE`` is the benchmark's and its objects are, in order, those of
  the catalog the folds were made on.

The 3-class scores of a 4-class run come from its held-out probabilities with
SNIa and SNOther summed into SN; the ``compact-3class`` entry is a model trained
on the 3-class task itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import shutil
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convention_rt.errors import ConventionError, UsageError
from convention_rt.model_card import sha256_of
from train.command_line import OneLineParser, report_failure
from train.data.dataset import TASKS
from train.files import copy_atomically, write_atomically
from train.machine import timing_key
from train.records import FOLDS_DIGEST, early_file
from train.reference.rows import ReferenceRow

__all__ = ["BENCHMARKS", "FOLDS_FILE", "PLAN", "REFERENCE_RUN", "TABLE_PROTOCOL", "Benchmark", "Entry",
           "check_catalog", "collect", "main", "render_against", "render_early", "render_table", "run_entry"]

log = logging.getLogger("train")

#: What every entry shares: the shipped model's protocol with one member per fold, on
#: the first three of its five folds.
TABLE_PROTOCOL: dict[str, Any] = {
    "folds": 5, "fold_limit": 3, "members": 1, "epochs": 30, "patience": 6, "batch_size": 128,
    "learning_rate": 1e-3, "dropout": 0.3, "precision": "bf16", "seed": 0,
}


@dataclass(frozen=True)
class Benchmark:
    """A variant of the benchmark catalog whose rows have their own results root and table.

    Attributes
    ----------
    name : str
        The catalog's static-scene variant, as :func:`train.data.plasticc.scene_variant`
        reads it from the ``SCENE`` keyword (``standard`` when there is none).
    root : Path
        Default folder of the rows' records (tracked; the table reads it).
    runs : Path
        Default folder of the rows' run directories (working state, ignored by git).
    marker : str
        The table goes between ``<!-- {marker}:begin -->`` and ``<!-- {marker}:end -->``.
    """

    name: str
    root: Path
    runs: Path
    marker: str

    @property
    def markers(self) -> tuple[str, str]:
        return f"<!-- {self.marker}:begin -->", f"<!-- {self.marker}:end -->"


#: The benchmarks, by name: the standard catalog, the hard one (``--scene hard``) and the one
#: of difference stamps (``--scene difference``).
BENCHMARKS: dict[str, Benchmark] = {
    name: Benchmark(name, Path("results") / name, Path("runs") / name, marker)
    for name, marker in (("standard", "results-table"), ("hard", "results-table-hard"),
                         ("difference", "results-table-difference"))
}
#: The split every row of every benchmark is trained and scored on: that of the shipped model's run.
FOLDS_FILE = Path("results/folds.json")
#: The shipped model's run directory, whose finished member-0 states the ``compact`` row reuses.
REFERENCE_RUN = Path("runs/compact-4class-1.1.0")


@dataclass(frozen=True)
class Entry:
    """One row of the table.

    Attributes
    ----------
    name : str
        Name of the row's run directory and of its records folder.
    label : str
        Row label in the table.
    changes : dict
        :class:`train.fit.FitConfig` fields that differ from :data:`TABLE_PROTOCOL`.
    reference : ReferenceRow, optional
        A reference row, trained by :func:`train.reference.rows.run_reference_row`
        instead of :func:`train.fit.fit`.
    reuses : str, optional
        Another entry whose finished members this one copies when its run directory
        is there (:attr:`train.fit.FitConfig.reuse_from`): the same members, scored otherwise.
    """

    name: str
    label: str
    changes: dict[str, Any] = field(default_factory=dict)
    reference: ReferenceRow | None = None
    reuses: str | None = None

    @property
    def task(self) -> str:
        return self.changes.get("task", "4class")

    @property
    def scored_early(self) -> bool:
        """Whether the row is in the early-classification table (4-class image models, and the trees alone
        of the tree head, which read the same inputs)."""
        return (self.reference is None or self.reference.scores_early) and self.task == "4class"


#: The tree head on light curve and static scene, fitted on random prefixes too, of at most 150
#: iterations; with the stamps' aperture photometry as well. The rows that name one share it.
SCENE_HEAD: dict[str, Any] = {"tree_scene": True, "tree_prefixes": 2, "tree_iterations": 150}
PHOTOMETRY_HEAD: dict[str, Any] = {**SCENE_HEAD, "tree_photometry": True}
#: A row's members mixed with a tree head whose weight the validation split chooses.
MIXED_WITH_CHOSEN_WEIGHT: dict[str, Any] = {"tree_head": True, "tree_weight_chosen": True}

#: The rows, in the order they are trained (cheapest and most telling first).
PLAN: tuple[Entry, ...] = (
    Entry("compact", "ConvEntion-compact", {"model": "compact"}),
    Entry("lc_lstm", "LSTM on light curves", {"model": "lc_lstm"}),
    Entry("compact-stacked-bands", "ConvEntion-compact, no band separation (zero-filled multi-band frames)",
          {"model": "compact", "band_input": "stacked"}),
    Entry("cnn_gru", "CNN + GRU", {"model": "cnn_gru"}),
    Entry("cnn_lstm", "CNN + LSTM", {"model": "cnn_lstm"}),
    Entry("compact-no-position", "ConvEntion-compact, no positional encoding",
          {"model": "compact", "positional_encoding": "none"}),
    Entry("compact-3class", "ConvEntion-compact trained on 3 classes", {"model": "compact", "task": "3class"}),
    Entry("compact-dot-attention", "ConvEntion-compact, query-dependent (dot-product) attention",
          {"model": "compact", "attention": "dot"}),
    Entry("compact-prefix-truncation", "ConvEntion-compact, trained on random prefixes (half the draws)",
          {"model": "compact", "prefix_truncation": 0.5}),
    Entry("compact-difference-channel",
          "ConvEntion-compact, with a difference channel (each frame minus the object's mean frame in its band)",
          {"model": "compact", "difference_channel": True}),
    Entry("broker", "ConvEntion-broker (difference channel, recency summary, 70 M MACs), trained on random prefixes",
          {"model": "broker", "prefix_truncation": 0.5}),
    Entry("broker-scene",
          "ConvEntion-broker with a scene branch (a small CNN over the per-band coadds, 73 M MACs), "
          "trained on random prefixes",
          {"model": "broker", "prefix_truncation": 0.5, "scene_summary": 32}),
    Entry("broker-scene-whole",
          "ConvEntion-broker with a scene branch, trained on whole windows",
          {"model": "broker", "scene_summary": 32}),
    Entry("broker-scene-whole-trees",
          "ConvEntion-broker with a scene branch, whole windows, mixed with a boosted-tree head on the light curve "
          "measured from its stamps",
          {"model": "broker", "scene_summary": 32, "tree_head": True}, reuses="broker-scene-whole"),
    Entry("broker-scene-whole-trees-scene",
          "ConvEntion-broker with a scene branch, whole windows, mixed with a tree head on the light curve and the "
          "static scene measured from its stamps, fitted on random prefixes too, weight chosen on validation",
          {"model": "broker", "scene_summary": 32, **MIXED_WITH_CHOSEN_WEIGHT, **SCENE_HEAD},
          reuses="broker-scene-whole"),
    Entry("broker-scene-whole-trees-photometry",
          "ConvEntion-broker with a scene branch, whole windows, mixed with a tree head on the light curve, the "
          "static scene and the aperture photometry measured from its stamps, fitted on random prefixes too, weight "
          "chosen on validation",
          {"model": "broker", "scene_summary": 32, **MIXED_WITH_CHOSEN_WEIGHT, **PHOTOMETRY_HEAD},
          reuses="broker-scene-whole"),
    Entry("broker-scene-whole-noise",
          "ConvEntion-broker with a scene branch, whole windows, stamps normalised by their noise and read through "
          "asinh",
          {"model": "broker", "scene_summary": 32, "normalisation": "noise"}),
    Entry("broker-scene-whole-noise-trees-photometry",
          "ConvEntion-broker with a scene branch, whole windows, stamps normalised by their noise and read through "
          "asinh, mixed with the photometry tree head",
          {"model": "broker", "scene_summary": 32, "normalisation": "noise", **MIXED_WITH_CHOSEN_WEIGHT,
           **PHOTOMETRY_HEAD}, reuses="broker-scene-whole-noise"),
    Entry("cnn_gru-noise", "CNN + GRU, stamps normalised by their noise and read through asinh",
          {"model": "cnn_gru", "normalisation": "noise"}),
    Entry("cnn_gru-trees-photometry",
          "CNN + GRU mixed with the photometry tree head, fitted on random prefixes too, weight chosen on validation",
          {"model": "cnn_gru", **MIXED_WITH_CHOSEN_WEIGHT, **PHOTOMETRY_HEAD}, reuses="cnn_gru"),
    Entry("broker-scene-event",
          "ConvEntion-broker with a scene branch, reading the event window of long series",
          {"model": "broker", "scene_summary": 32, "window": "event"}),
    Entry("broker-scene-lightcurve-whole",
          "ConvEntion-broker with scene and light-curve branches (75 M MACs), trained on whole windows",
          {"model": "broker", "scene_summary": 32, "lightcurve_summary": 32}),
    # The paper's preset trains at ~4 objects/s on one core (bench/training.py): ~20 minutes
    # per epoch of both stages, so it gets fold 0 and at most 5 epochs per stage. Its
    # evaluation forward holds ~33 MB per object: 32 objects per batch keep it near 1 GB.
    Entry("paper-fold0-5epochs", "ConvEntion (paper preset), fold 0, at most 5 epochs per stage",
          {"model": "paper", "fold_limit": 1, "epochs": 5, "eval_batch_size": 32}),
    # Reference rows: what the benchmark can be solved with short of image models.
    Entry("scene-boosting", "Reference: gradient boosting on the static scene (median coadds, no time)",
          reference=ReferenceRow("scene_boosting")),
    Entry("lightcurve-boosting", "Reference: gradient boosting on the difference light curves",
          reference=ReferenceRow("lightcurve_boosting")),
    Entry("lightcurve-boosting-latest",
          "Reference: gradient boosting on the difference light curves of the latest 99 frames (what the image "
          "rows read)",
          reference=ReferenceRow("lightcurve_boosting", window="latest")),
    Entry("lightcurve-boosting-event",
          "Reference: gradient boosting on the difference light curves of the event window's 99 frames",
          reference=ReferenceRow("lightcurve_boosting", window="event")),
    Entry("tree-head",
          "Reference: the tree head alone (gradient boosting on the light curve measured from the stamps of the "
          "latest 99 frames)",
          {"model": "broker"}, reference=ReferenceRow("tree_head")),
    Entry("tree-head-scene",
          "Reference: the tree head on light curve and static scene alone (gradient boosting on features measured "
          "from the stamps of the latest 99 frames, fitted on random prefixes too)",
          {"model": "broker", **SCENE_HEAD}, reference=ReferenceRow("tree_head")),
    Entry("tree-head-photometry",
          "Reference: the tree head on light curve, static scene and aperture photometry alone (gradient boosting on "
          "the catalog reference's features of each stamp's flux and error, and the scene, measured from the stamps "
          "of the latest 99 frames, fitted on random prefixes too)",
          {"model": "broker", **PHOTOMETRY_HEAD}, reference=ReferenceRow("tree_head")),
    Entry("tree-head-photometry-event",
          "Reference: the photometry tree head alone, on the event window's 99 frames (the frames around the "
          "brightening)",
          {"model": "broker", **PHOTOMETRY_HEAD, "window": "event"}, reference=ReferenceRow("tree_head")),
    Entry("cnn_gru-trees", "Reference: CNN + GRU mixed with the same tree head",
          {"model": "broker"}, reference=ReferenceRow("tree_head", network="cnn_gru")),
    Entry("lightcurve-boosting-photoz",
          "Reference: gradient boosting on the difference light curves and host photo-z (not in the images)",
          reference=ReferenceRow("lightcurve_boosting", photoz=True)),
    Entry("lc_lstm-difference-flux", "Reference: LSTM on the difference light curves with errors",
          reference=ReferenceRow("flux_lstm")),
)


def _entry(name: str) -> Entry:
    for entry in PLAN:
        if entry.name == name:
            return entry
    raise UsageError(f"unknown entry {name!r}; entries: {', '.join(e.name for e in PLAN)}")


def _held_out_ids(path: Path) -> list[list[str]]:
    from train.fit import read_folds

    try:
        return read_folds(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _object_ids(path: str | Path) -> np.ndarray:
    """The ``OBJECT_ID`` column of a catalog's ``OBJECTS`` table, in catalog order."""
    from astropy.io import fits

    with fits.open(path, memmap=True) as hdul:
        return np.array(hdul["OBJECTS"].data["OBJECT_ID"])


def check_catalog(catalog: str | Path, benchmark: Benchmark, folds_file: Path) -> None:
    """Refuse a catalog of another benchmark, or one whose objects are not those the folds were made on.

    Parameters
    ----------
    catalog : str or Path
        The catalog the rows are to be trained on.
    benchmark : Benchmark
        Its ``SCENE`` must be ``benchmark.name``.
    folds_file : Path
        The rows' folds (:data:`FOLDS_FILE`); it names the catalog the folds were made
        on, and unless that is ``catalog`` itself, both must hold the same object ids
        in the same order.  A missing or unreadable folds file is left to
        :func:`run_entry` to report.

    Raises
    ------
    UsageError
        The catalog is another benchmark's (say which ``--benchmark`` to pass).
    ValueError
        Its objects differ from the folds' catalog (when that catalog is not found
        here: some object of the folds is not in it).
    convention_rt.errors.CatalogError
        It is not a readable catalog.
    """
    from convention_rt.catalog import Catalog
    from train.data.plasticc import scene_variant

    with Catalog(catalog) as opened:
        scene = scene_variant(opened.header)
    if scene != benchmark.name:
        hint = (f"pass --benchmark {scene}" if scene in BENCHMARKS
                else f"no benchmark has that scene ({', '.join(BENCHMARKS)})")
        raise UsageError(f"{catalog}: SCENE = {scene!r}, not a catalog of the {benchmark.name} benchmark; {hint}")
    try:
        made_on = json.loads(folds_file.read_text()).get("catalog")
    except (OSError, ValueError, AttributeError):
        return
    if not made_on or Path(made_on).resolve() == Path(catalog).resolve():
        return
    mine = _object_ids(catalog)
    if not Path(made_on).is_file():  # another machine: the folds' objects must all be in the catalog
        held_out = {str(i) for fold in _held_out_ids(folds_file) for i in fold}
        missing = held_out - {str(i).strip() for i in mine.tolist()}
        if missing:
            raise ValueError(f"{catalog}: OBJECTS: {len(missing)} of the {len(held_out)} objects of the folds of "
                             f"{folds_file} are not in it (e.g. {sorted(missing)[0]}); build it from the same data, "
                             "seed and --limit as the folds' catalog")
        log.info("%s: holds every object of the folds of %s (made on %s, not found here: their order is not "
                 "checked)", catalog, folds_file, made_on)
        return
    theirs = _object_ids(made_on)
    if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
        size = min(mine.size, theirs.size)
        row = int(np.argmax(mine[:size] != theirs[:size])) if np.any(mine[:size] != theirs[:size]) else size
        first = (f"first difference at row {row}: {mine[row] if row < mine.size else 'none'} against "
                 f"{theirs[row] if row < theirs.size else 'none'}")
        raise ValueError(f"{catalog}: OBJECTS: its {mine.size} object ids are not, in order, the {theirs.size} of "
                         f"{made_on}, on which the folds of {folds_file} were made ({first}); build both from the "
                         "same data, seed and --limit")


def _check_row_folds(entry: Entry, root: Path, runs: Path, folds_file: Path) -> None:
    """Refuse a row whose records or run directory were made on other folds than ``folds_file``."""
    recorded = root / entry.name / FOLDS_DIGEST
    if recorded.is_file() and recorded.read_text().strip() != sha256_of(folds_file):
        raise UsageError(f"{recorded}: the row was trained on other folds than {folds_file}; the rows of the table "
                         "must share them (remove the row's records and run directory to start it again)")
    saved = runs / entry.name / "folds.json"
    if saved.exists() and _held_out_ids(saved) != _held_out_ids(folds_file):
        raise UsageError(f"{saved}: other folds than {folds_file}; the rows of the table must share them (remove "
                         "the row's records and run directory to start it again)")


def run_entry(entry: Entry, catalog: str, root: Path, runs: Path, threads: int = 1, *,
              folds_file: Path = FOLDS_FILE, reference_run: Path | None = None, reuse_only: bool = False,
              precision: str | None = None, frames_cache: str | None = None,
              plasticc_cache: str | None = None, benchmark: Benchmark = BENCHMARKS["standard"],
              only_folds: str | None = None) -> None:
    """Train one entry (resuming), on the folds of ``folds_file``, for ``benchmark``.

    The row's working state goes to ``runs / entry.name`` and its text records to
    ``root / entry.name`` as each fold finishes (:mod:`train.records`).  The catalog
    must be one of ``benchmark``, with the objects of the catalog the folds were
    made on (:func:`check_catalog`).  The rows of the early table
    (:attr:`Entry.scored_early`) score each fold's early curve as it finishes.

    Member 0 of a fold of ``reference_run`` (the shipped model's run directory, if
    given) is the same computation as member 0 of the ``compact`` entry (same
    configuration, seeds and folds; the member count does not enter a member's
    training), so finished ones are copied instead of trained again.  With
    ``reuse_only``, the ``compact`` entry scores the leading folds whose member 0 the
    reference run has finished and trains nothing (other entries are skipped); run
    again as the reference run proceeds.  ``precision`` replaces the protocol's
    training precision (it may change between resumes; each epoch's record names its
    own); ``frames_cache`` and ``only_folds`` are :class:`train.fit.FitConfig`'s (rows
    training side by side share their frames; folds of one row train side by side in
    separate processes, and a last run without ``only_folds`` gathers the row).  Reference rows train in fp32 and hold no frames
    (``precision`` and ``frames_cache`` do not apply to them); the light-curve ones
    read the PLAsTiCC wheel from ``plasticc_cache`` (the catalog builder's cache by
    default).
    """
    if reuse_only and entry.name != "compact":
        return
    run_dir, records = runs / entry.name, root / entry.name
    if not folds_file.is_file():
        raise UsageError(f"{folds_file}: not found; the table's rows share the folds of the shipped model's run "
                         f"(--folds, default {FOLDS_FILE})")
    check_catalog(catalog, benchmark, folds_file)
    from train.fit import FitConfig, check_architecture, fit, prepare
    from train.fit.resume import check_reusable

    _check_row_folds(entry, root, runs, folds_file)
    (run_dir / "state").mkdir(parents=True, exist_ok=True)
    if not (run_dir / "folds.json").exists():
        copy_atomically(folds_file, run_dir / "folds.json")
    if entry.reference is not None:
        from train.reference.rows import run_reference_row

        run_reference_row(entry.reference, catalog, run_dir, {**TABLE_PROTOCOL, **entry.changes}, threads=threads,
                          plasticc_cache=plasticc_cache, records_dir=records, frames_cache=frames_cache)
        return
    reused = runs / entry.reuses if entry.reuses else None
    try:
        config = FitConfig(catalog=catalog, run_dir=str(run_dir), threads=threads, name=f"results-{entry.name}",
                           frames_cache=frames_cache, early=entry.scored_early, records_dir=str(records),
                           only_folds=only_folds,
                           reuse_from=str(reused) if reused and (reused / "config.json").is_file() else None,
                           **{**TABLE_PROTOCOL, **entry.changes, **({"precision": precision} if precision else {})})
    except ValueError as exc:  # an option out of range for the row, e.g. --only-folds
        raise UsageError(f"{entry.name}: {exc}") from exc
    prepared = None
    if entry.name == "compact" and reference_run is not None:
        if not reference_run.is_dir():
            log.warning("%s: not found; the compact row trains its members itself", reference_run)
        prepared = prepare(config)
        try:  # the reference run's members are copied only if they are of this entry's architecture
            check_architecture(reference_run, prepared.model_config)
        except ValueError as exc:
            raise UsageError(f"{exc} (the reference run's members cannot be reused)") from exc
        try:  # and of its training, on the same data and folds
            check_reusable(reference_run, config, prepared.model_config, prepared.folds)
            same = True
        except ValueError:
            same = False
        for fold in range(config.fold_limit or config.folds):
            source = reference_run / "state" / f"fold{fold}_member0.best.pt"
            target = run_dir / "state" / source.name
            # the record (.json) is written after the weights: its presence means the member is finished
            if same and source.with_suffix(".json").exists() and not target.with_suffix(".json").exists():
                copy_atomically(source, target)
                copy_atomically(source.with_suffix(".json"), target.with_suffix(".json"))
                log.info("%s: fold %d member 0 taken from %s", entry.name, fold, reference_run)
    if reuse_only:
        limit = config.fold_limit or config.folds
        ready = next((f for f in range(limit)
                      if not (run_dir / "state" / f"fold{f}_member0.best.json").exists()), limit)
        if ready == 0:
            log.info("%s: no finished member 0 in %s yet", entry.name, reference_run)
            return
        config = dataclasses.replace(config, fold_limit=ready)
    fit(config, command=f"python -m train.results run --only {entry.name}", prepared=prepared)


# -- the table ------------------------------------------------------------------------
def _merge_to_three(predictions: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """3-class labels and probabilities from a 4-class run's held-out predictions."""
    mapping = TASKS["3class"]
    classes = tuple(dict.fromkeys(mapping.values()))
    probabilities = np.asarray(predictions["probabilities"], dtype=np.float64)
    merged = np.zeros((probabilities.shape[0], len(classes)))
    for column, name in enumerate(predictions["classes"]):
        merged[:, classes.index(mapping[name])] += probabilities[:, column]
    labels = np.array([classes.index(mapping[name]) for name in predictions["label"]])
    return labels, merged, classes


def collect(entry: Entry, root: Path) -> dict[str, Any]:
    """Scores of one entry's finished folds: 4-class (or 3-class) and merged 3-class, and timings.

    Read from the entry's records folder ``root / entry.name`` (:mod:`train.records`)
    alone: no weights are needed.

    Returns
    -------
    dict
        ``folds`` (finished), ``planned``, ``fold_ids`` (the finished folds),
        ``accuracy``/``macro_f1`` (lists per finished fold), ``accuracy3``/``macro_f13``
        (3-class), ``recall`` (class -> list),
        ``epochs`` (list per member), ``seconds_per_epoch`` (how the epochs ran, as
        :func:`train.machine.timing_key` names it -> list of the seconds of every
        finished member's epochs that ran so), ``held_out``
        (fold -> object ids, true and predicted class indices, for :func:`verdict`, in
        the entry's task), ``held_out3`` (the same in 3 classes: a 4-class run's
        predictions with the supernova probabilities summed),
        ``restarted`` ("fold k member m: restarts" of members trained again for a dead head),
        ``boosting`` (per finished fold of a boosting reference row: its fit's ``seconds``
        and the boosting ``iterations`` chosen).
    """
    from train.fit import scores

    run_dir = root / entry.name
    planned = {**TABLE_PROTOCOL, **entry.changes}["fold_limit"]
    out: dict[str, Any] = {"folds": 0, "planned": planned, "fold_ids": [], "accuracy": [], "macro_f1": [],
                           "accuracy3": [], "macro_f13": [], "recall": {}, "seconds_per_epoch": {}, "epochs": [],
                           "held_out": {}, "held_out3": {}, "restarted": [], "boosting": []}
    for fold in range(planned):
        scored = run_dir / f"fold{fold}.json"
        predictions_file = run_dir / f"fold{fold}.predictions.json"
        if not (scored.exists() and predictions_file.exists()):
            continue
        fold_scores = json.loads(scored.read_text())
        out["folds"] += 1
        out["fold_ids"].append(fold)
        out["accuracy"].append(fold_scores["accuracy"])
        out["macro_f1"].append(fold_scores["macro_f1"])
        for name, value in fold_scores["recall"].items():
            out["recall"].setdefault(name, []).append(value)
        predictions = json.loads(predictions_file.read_text())
        out["held_out"][fold] = _held_out(predictions)
        if entry.task == "3class":
            three = fold_scores
            out["held_out3"][fold] = out["held_out"][fold]
        else:
            labels, merged, classes = _merge_to_three(predictions)
            three = scores(labels, merged, classes)
            out["held_out3"][fold] = _held_out({"object_id": predictions["object_id"], "classes": classes,
                                                "label": [classes[i] for i in labels], "probabilities": merged})
        out["accuracy3"].append(three["accuracy"])
        out["macro_f13"].append(three["macro_f1"])
    for record_file in sorted(run_dir.glob("fold*.member*.json")):
        record = json.loads(record_file.read_text())
        for epoch in record["history"]:
            out["seconds_per_epoch"].setdefault(timing_key(epoch), []).append(epoch["seconds"])
        out["epochs"].append(record["epochs"])
        if record.get("restarts"):
            fold, member = re.findall(r"\d+", record_file.name)[:2]
            out["restarted"].append(f"fold {fold} member {member}: {record['restarts']}")
    for record_file in sorted(run_dir.glob("fold*.boosting.json")):
        record = json.loads(record_file.read_text())
        out["boosting"].append({"seconds": record["seconds"], "iterations": record["iterations"]})
    return out


def _mean_std(values: list[float]) -> str:
    """``mean ± std`` over folds, the value alone for one fold, ``–`` for none."""
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "–"
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def render_table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown tables (4-class, 3-class, per-class recall, time) of the collected entries (in :data:`PLAN`'s order)."""
    entries = [entry for entry in PLAN if entry.name in results]
    lines = ["| model | folds | 4-class accuracy | 4-class macro-F1 | 3-class accuracy | 3-class macro-F1 |",
             "|---|---|---|---|---|---|"]
    for entry in entries:
        got = results[entry.name]
        folds = f"{got['folds']}/{got['planned']}"
        if entry.task == "3class":
            lines.append(f"| {entry.label} | {folds} | – | – | {_mean_std(got['accuracy'])} | "
                         f"{_mean_std(got['macro_f1'])} |")
        else:
            lines.append(f"| {entry.label} | {folds} | {_mean_std(got['accuracy'])} | {_mean_std(got['macro_f1'])} | "
                         f"{_mean_std(got['accuracy3'])} | {_mean_std(got['macro_f13'])} |")
    classes = list(dict.fromkeys(TASKS["4class"].values()))
    lines += ["", "Recall per class (4-class runs):", "",
              "| model | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for entry in entries:
        got = results[entry.name]
        if entry.task == "4class":
            lines.append(f"| {entry.label} | " + " | ".join(_mean_std(got["recall"].get(c, [])) for c in classes)
                         + " |")
    lines += ["", "Training time of the runs (wall time on a machine shared with other runs; the epochs of a "
              "member include those of any attempt discarded for a dead head; seconds per epoch by training "
              "precision, bf16 on CPUs with bf16 units (AMX, AVX512-BF16), fp32 on CPUs with AVX2 alone, and by the "
              "CPU's matrix units where the epoch records them: \"bf16 on amx\"):", "",
              "| model | members finished | epochs per member | seconds per epoch |", "|---|---|---|---|"]
    for entry in entries:
        got = results[entry.name]
        if got["boosting"] and not got["epochs"]:  # a boosting row: the fit's time and the iterations chosen
            fits = got["boosting"]
            lines.append(f"| {entry.label} | {len(fits)} | – | – (gradient boosting: "
                         f"{np.mean([f['seconds'] for f in fits]):.0f} s per fit, "
                         f"{np.mean([f['iterations'] for f in fits]):.0f} iterations used) |")
            continue
        epochs = "–" if not got["epochs"] else f"{np.mean(got['epochs']):.0f}"
        seconds = ", ".join(f"{np.mean(values):.0f} ({key}, {len(values)} epoch{'s' * (len(values) != 1)})"
                            for key, values in sorted(got["seconds_per_epoch"].items())) or "–"
        lines.append(f"| {entry.label} | {len(got['epochs'])} | {epochs} | {seconds} |")
    restarted = [f"{entry.label} ({'; '.join(results[entry.name]['restarted'])})" for entry in entries
                 if results[entry.name]["restarted"]]
    lines += ["", "Members trained again from a fresh seed after a dead classifier head (restarts): "
              + (", ".join(restarted) if restarted else "none") + "."]
    return "\n".join(lines)


def render_early(root: Path, names: Collection[str] | None = None) -> str:
    """Lines of the early-classification table: 4-class macro-F1 against the first k frames seen.

    Read from the per-fold records of each row (``fold<k>.early.json`` of its records
    folder, for the folds the protocol plans) of :data:`PLAN`, or of its rows
    ``names``; rows without one are left out and named.  Empty when no row has one.

    Raises
    ------
    ValueError
        A row's folds were scored at different frames seen (the file is named).
    """
    curves, missing = {}, []
    for entry in (entry for entry in PLAN if entry.scored_early and (names is None or entry.name in names)):
        planned = {**TABLE_PROTOCOL, **entry.changes}["fold_limit"]
        found = [(path, json.loads(path.read_text())) for path in
                 (early_file(root / entry.name, fold) for fold in range(planned)) if path.is_file()]
        if not found:
            missing.append(entry.label)
            continue
        seen = found[0][1]["frames_seen"]
        for path, curve in found:
            if curve["frames_seen"] != seen:
                raise ValueError(f"{path}: scored at other frames seen than the row's other folds ({seen}); score "
                                 "the row's folds again with python -m train.early")
        curves[entry.label] = (seen, np.array([curve["macro_f1"] for _, curve in found]))
    if not curves:
        return ""
    frames = next(iter(curves.values()))[0]
    lines = ["", "Early classification (`python -m train.early`): 4-class macro-F1 of the held-out objects cut to "
             "their first k frames in time, mean over the row's folds:", "",
             "| model | " + " | ".join(f"k = {k}" for k in frames) + " |", "|---|" + "---|" * len(frames)]
    for label, (seen, table) in curves.items():
        if seen == frames:
            lines.append(f"| {label} | " + " | ".join(f"{v:.3f}" for v in table.mean(axis=0)) + " |")
    if missing:
        lines += ["", "Not yet scored early: " + "; ".join(missing) + "."]
    return "\n".join(lines)


#: The claims checked on this benchmark: (claim, better entry, worse entry, task of the
#: macro-F1 compared). On the 3-class task a 4-class entry is scored by its merged
#: predictions (SNIa + SNOther summed).
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("ConvEntion above CNN + GRU", "compact", "cnn_gru", "4class"),
    ("ConvEntion above CNN + LSTM", "compact", "cnn_lstm", "4class"),
    ("ConvEntion (paper preset, 5 epochs per stage) above CNN + GRU", "paper-fold0-5epochs", "cnn_gru", "4class"),
    ("images above light curves (ConvEntion vs LSTM on light curves)", "compact", "lc_lstm", "4class"),
    ("images above light curves (CNN + GRU vs LSTM on light curves)", "cnn_gru", "lc_lstm", "4class"),
    ("band separation above zero-filled multi-band frames", "compact", "compact-stacked-bands", "4class"),
    ("positional encoding helps", "compact", "compact-no-position", "4class"),
    ("query-dependent attention above the published one", "compact-dot-attention", "compact", "4class"),
    ("training on prefixes above training on whole windows (scored on whole windows)", "compact-prefix-truncation",
     "compact", "4class"),
    ("a difference channel helps", "compact-difference-channel", "compact", "4class"),
    ("ConvEntion-broker above CNN + GRU", "broker", "cnn_gru", "4class"),
    ("a scene branch helps the broker preset", "broker-scene", "broker", "4class"),
    ("ConvEntion-broker with a scene branch above CNN + GRU", "broker-scene", "cnn_gru", "4class"),
    ("ConvEntion-broker with a scene branch, whole windows, above CNN + GRU", "broker-scene-whole", "cnn_gru",
     "4class"),
    ("a light-curve branch helps", "broker-scene-lightcurve-whole", "broker-scene-whole", "4class"),
    ("the event window helps", "broker-scene-event", "broker-scene-whole", "4class"),
    ("a boosted-tree head helps", "broker-scene-whole-trees", "broker-scene-whole", "4class"),
    ("ConvEntion-broker with a scene branch and a tree head above CNN + GRU", "broker-scene-whole-trees", "cnn_gru",
     "4class"),
    ("ConvEntion-broker with a scene branch and a tree head above CNN + GRU with the same tree head",
     "broker-scene-whole-trees", "cnn_gru-trees", "4class"),
    ("ConvEntion-broker with a scene branch and a tree head above the tree head alone", "broker-scene-whole-trees",
     "tree-head", "4class"),
    ("scene features and prefixes help the tree head", "broker-scene-whole-trees-scene", "broker-scene-whole-trees",
     "4class"),
    ("ConvEntion-broker with a scene branch and a scene tree head above CNN + GRU", "broker-scene-whole-trees-scene",
     "cnn_gru", "4class"),
    ("ConvEntion-broker with a scene branch and a scene tree head above that tree head alone",
     "broker-scene-whole-trees-scene", "tree-head-scene", "4class"),
    ("the scene tree head alone above gradient boosting on the static scene", "tree-head-scene", "scene-boosting",
     "4class"),
    ("photometry features help the scene tree head", "tree-head-photometry", "tree-head-scene", "4class"),
    ("ConvEntion-broker with a scene branch and a photometry tree head above that tree head alone",
     "broker-scene-whole-trees-photometry", "tree-head-photometry", "4class"),
    ("photometry features help the mixture of the broker with a scene tree head",
     "broker-scene-whole-trees-photometry", "broker-scene-whole-trees-scene", "4class"),
    ("the photometry tree head alone above gradient boosting on the light curves of the frames it reads",
     "tree-head-photometry", "lightcurve-boosting-latest", "4class"),
    ("noise normalisation helps the broker with a scene branch", "broker-scene-whole-noise", "broker-scene-whole",
     "4class"),
    ("noise normalisation helps CNN + GRU", "cnn_gru-noise", "cnn_gru", "4class"),
    ("ConvEntion-broker with a scene branch, noise normalisation, above CNN + GRU with the same normalisation",
     "broker-scene-whole-noise", "cnn_gru-noise", "4class"),
    ("ConvEntion-broker with a scene branch, noise normalisation, above CNN + GRU", "broker-scene-whole-noise",
     "cnn_gru", "4class"),
    ("noise normalisation helps the mixture with the photometry tree head",
     "broker-scene-whole-noise-trees-photometry", "broker-scene-whole-trees-photometry", "4class"),
    ("the noise-normalised broker with a photometry tree head above that tree head alone",
     "broker-scene-whole-noise-trees-photometry", "tree-head-photometry", "4class"),
    ("the event window helps gradient boosting on the light curves", "lightcurve-boosting-event",
     "lightcurve-boosting-latest", "4class"),
    ("ConvEntion-broker with a scene branch, event window, above gradient boosting on its frames' light curves",
     "broker-scene-event", "lightcurve-boosting-event", "4class"),
    ("CNN + GRU above gradient boosting on the light curves of the frames it reads", "cnn_gru",
     "lightcurve-boosting-latest", "4class"),
    ("the photometry tree head alone above CNN + GRU", "tree-head-photometry", "cnn_gru", "4class"),
    ("the event window helps the photometry tree head", "tree-head-photometry-event", "tree-head-photometry",
     "4class"),
    ("the photometry tree head on the event window above gradient boosting on those frames' light curves",
     "tree-head-photometry-event", "lightcurve-boosting-event", "4class"),
    ("the photometry tree head on the event window above CNN + GRU", "tree-head-photometry-event", "cnn_gru",
     "4class"),
    ("the photometry tree head on the event window above the shipped recipe (the broker with a scene tree head)",
     "tree-head-photometry-event", "broker-scene-whole-trees-scene", "4class"),
    ("the photometry tree head on the event window above the broker with the photometry tree head",
     "tree-head-photometry-event", "broker-scene-whole-trees-photometry", "4class"),
    ("the photometry tree head on the event window above CNN + GRU with the photometry tree head",
     "tree-head-photometry-event", "cnn_gru-trees-photometry", "4class"),
    ("ConvEntion-broker with a scene branch and a photometry tree head above CNN + GRU",
     "broker-scene-whole-trees-photometry", "cnn_gru", "4class"),
    ("the noise-normalised broker with a photometry tree head above CNN + GRU",
     "broker-scene-whole-noise-trees-photometry", "cnn_gru", "4class"),
    ("CNN + GRU with the photometry tree head above that tree head alone", "cnn_gru-trees-photometry",
     "tree-head-photometry", "4class"),
    ("ConvEntion-broker with a scene branch and a photometry tree head above CNN + GRU with the same tree head",
     "broker-scene-whole-trees-photometry", "cnn_gru-trees-photometry", "4class"),
    ("ConvEntion-broker with a scene branch, event window, above CNN + GRU", "broker-scene-event", "cnn_gru",
     "4class"),
    ("ConvEntion-broker with scene and light-curve branches above CNN + GRU", "broker-scene-lightcurve-whole",
     "cnn_gru", "4class"),
    ("training on 3 classes above the 4-class model scored on 3 classes", "compact-3class", "compact", "3class"),
    # against the reference rows: do the image models beat what needs no image model?
    *((f"{image_label} above {reference_label}", image, reference, "4class")
      for reference, reference_label in (
          ("scene-boosting", "gradient boosting on the static scene"),
          ("lightcurve-boosting", "gradient boosting on the difference light curves"),
          ("lightcurve-boosting-photoz", "gradient boosting on the difference light curves and host photo-z"),
          ("lc_lstm-difference-flux", "the LSTM on the difference light curves with errors"))
      for image, image_label in (("compact", "ConvEntion"), ("cnn_gru", "CNN + GRU"),
                                 ("broker-scene-whole-trees-scene", "ConvEntion-broker with a scene tree head"))),
)


def _held_out(predictions: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object ids (sorted), true and predicted class indices of a fold's held-out predictions."""
    classes = predictions["classes"]
    ids = np.asarray(predictions["object_id"])
    order = np.argsort(ids, kind="stable")
    labels = np.array([classes.index(name) for name in predictions["label"]])
    predicted = np.asarray(predictions["probabilities"]).argmax(axis=1)
    return ids[order], labels[order], predicted[order]


def macro_f1(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 of each row: ``(..., n)`` int class indices -> ``(...)`` float64.

    Every class counts, a class neither present nor predicted scoring 0, as
    ``sklearn.metrics.f1_score(labels=range(n_classes), average="macro", zero_division=0)``.
    """
    labels, predicted = np.broadcast_arrays(np.asarray(labels), np.asarray(predicted))
    rows = labels.reshape(-1, labels.shape[-1])
    guesses = predicted.reshape(rows.shape)
    offset = np.arange(rows.shape[0])[:, None] * n_classes
    size = rows.shape[0] * n_classes

    def counts(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount((offset + values).ravel(), weights=weights, minlength=size).reshape(-1, n_classes)

    true_positives = counts(rows, (rows == guesses).ravel().astype(float))
    denominator = counts(rows) + counts(guesses)
    f1 = np.divide(2.0 * true_positives, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=1).reshape(labels.shape[:-1])


#: Bootstrap resamples and confidence of the paired interval of :func:`verdict`.
RESAMPLES, CONFIDENCE = 2000, 0.95


def verdict(better: dict[str, Any], worse: dict[str, Any], n_classes: int = 4, seed: int = 0) -> str:
    """Paired comparison of two rows' macro-F1 on the held-out objects of the folds both finished.

    The difference is the mean over the shared folds of the per-fold macro-F1
    difference; its 95 % interval is a paired bootstrap that resamples each fold's
    held-out objects with replacement (the same draws for both rows).  The claim
    ``holds`` when the interval is above 0, is ``reversed`` when below, and is
    ``not shown`` when it holds 0.  The interval covers the choice of held-out
    objects, not the spread of training (seeds, members): with one member per fold
    it is narrower than a retraining would show.
    """
    shared = sorted(set(better["held_out"]) & set(worse["held_out"]))
    if not shared:
        return "not measured yet"
    rng = np.random.default_rng(seed)
    point, resampled = [], []
    for fold in shared:
        ids, labels, first = better["held_out"][fold]
        other_ids, other_labels, second = worse["held_out"][fold]
        if not (np.array_equal(ids, other_ids) and np.array_equal(labels, other_labels)):
            raise ValueError(f"fold {fold}: the two rows were scored on different held-out objects")
        point.append(macro_f1(labels, first, n_classes) - macro_f1(labels, second, n_classes))
        draws = rng.integers(0, ids.size, size=(RESAMPLES, ids.size))
        resampled.append(macro_f1(labels[draws], first[draws], n_classes)
                         - macro_f1(labels[draws], second[draws], n_classes))
    difference = float(np.mean(point))
    low, high = np.quantile(np.mean(resampled, axis=0), [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    first_mean = np.mean([macro_f1(*better["held_out"][k][1:], n_classes) for k in shared])
    second_mean = np.mean([macro_f1(*worse["held_out"][k][1:], n_classes) for k in shared])
    word = "holds" if low > 0 else "reversed" if high < 0 else "not shown"
    folds = f"{len(shared)} fold{'s' if len(shared) > 1 else ''}"
    return (f"{word} on {folds}: {first_mean:.3f} vs {second_mean:.3f}, difference {difference:+.3f}, "
            f"95 % interval [{low:+.3f}, {high:+.3f}] (per fold {', '.join(f'{d:+.3f}' for d in point)})")


def compare(better: Path, worse: Path) -> list[str]:
    """:func:`verdict` lines (4 classes, then merged to 3) of one records folder above another, on the folds
    both finished: e.g. two shipped models' ``results/models/<run>`` folders.

    Parameters
    ----------
    better, worse : Path
        Records folders of 4-class runs (``config.json``, ``fold<k>.json``, ``fold<k>.predictions.json``).

    Returns
    -------
    list of str
        The 4-class line, then the 3-class line.

    Raises
    ------
    UsageError
        A folder that is not a 4-class run's records, or two without a finished fold in common.
    """
    collected = []
    for folder in (better, worse):
        try:
            config = json.loads((folder / "config.json").read_text())
            folds, task = int(config["folds"]), config.get("task", "4class")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{folder}: not a records folder of a run ({exc})") from exc
        if task != "4class":
            raise UsageError(f"{folder}: a {task} run; compare reads 4-class runs")
        collected.append(collect(Entry(folder.name, folder.name, {"fold_limit": folds}), folder.parent))
    first, second = collected
    if not set(first["held_out"]) & set(second["held_out"]):
        raise UsageError(f"{better} and {worse}: no finished fold in common (fold<k>.json and "
                         "fold<k>.predictions.json in both)")
    three = ({"held_out": first["held_out3"]}, {"held_out": second["held_out3"]})
    return [f"{better.name} above {worse.name}, 4 classes: {verdict(first, second)}",
            f"{better.name} above {worse.name}, 3 classes: {verdict(*three, n_classes=3)}"]


def render_claims(results: dict[str, dict[str, Any]]) -> str:
    """One line per claim of :data:`CLAIMS` with its paired verdict."""
    heading = ("Claims (macro-F1 on the held-out objects of the folds both rows finished, 4-class unless the claim "
               "is about 3 classes; the interval is a paired bootstrap over those objects, "
               f"{RESAMPLES} resamples within each fold):")
    lines = [heading, ""]
    for claim, better, worse, task in CLAIMS:
        if better in results and worse in results:
            key = "held_out3" if task == "3class" else "held_out"
            n_classes = len(set(TASKS[task].values()))
            lines.append(f"- {claim}: "
                         f"{verdict({'held_out': results[better][key]}, {'held_out': results[worse][key]}, n_classes)}")
    return "\n".join(lines)


def render_against(results: dict[str, dict[str, Any]], standard: dict[str, dict[str, Any]], name: str) -> str:
    """One line per entry of ``results`` (benchmark ``name``): its macro-F1 against the same entry's in ``standard``.

    Paired as the claims are (:func:`verdict`), on the held-out objects of the folds
    both finished, in the entry's task: "standard above NAME" holds when the entry
    scores lower on benchmark ``name``.  An entry missing from ``standard`` says so.
    """
    heading = (f"Against the standard benchmark (the same row there; macro-F1 on the same held-out objects, paired "
               f"as the claims are, {RESAMPLES} resamples within each fold):")
    lines = [heading, ""]
    for entry in (entry for entry in PLAN if entry.name in results):
        n_classes = len(set(TASKS[entry.task].values()))
        if entry.name not in standard or not standard[entry.name]["held_out"]:
            lines.append(f"- {entry.label}: not measured on the standard benchmark")
            continue
        here, there = results[entry.name], standard[entry.name]
        per_fold = ", ".join(f"fold {fold} {macro_f1(*there['held_out'][fold][1:], n_classes):.3f} / "
                             f"{macro_f1(*here['held_out'][fold][1:], n_classes):.3f}"
                             for fold in sorted(set(here["held_out"]) & set(there["held_out"])))
        lines.append(f"- {entry.label}: standard above {name}: "
                     f"{verdict({'held_out': there['held_out']}, {'held_out': here['held_out']}, n_classes)}"
                     + (f"; macro-F1 standard / {name}: {per_fold}" if per_fold else ""))
    return "\n".join(lines)


BEGIN, END = BENCHMARKS["standard"].markers


def write_table(document: Path, root: Path, benchmark: Benchmark = BENCHMARKS["standard"],
                against: Path | None = None) -> str:
    """Replace the text between the benchmark's table markers of ``document``; returns the table.

    ``root`` is the benchmark's records folder; the table reads nothing else.  The
    standard benchmark's table has a row for every entry of :data:`PLAN`.  Another
    benchmark's has a row for every entry started under ``root`` (that has a records
    folder), the claims those rows decide, and, when ``against`` (the standard
    benchmark's records folder) is a folder, :func:`render_against` for each.
    """
    begin, end = benchmark.markers
    if benchmark.name == "standard":
        results = {entry.name: collect(entry, root) for entry in PLAN}
        table = render_table(results) + render_early(root) + "\n\n" + render_claims(results)
    else:
        results = {entry.name: collect(entry, root) for entry in PLAN if (root / entry.name).is_dir()}
        if not results:
            raise UsageError(f"{root}: no row of the {benchmark.name} benchmark has started (python -m train.results "
                             f"--benchmark {benchmark.name} run ...)")
        table = render_table(results) + render_early(root, results)
        if any(better in results and worse in results for _, better, worse, _ in CLAIMS):
            table += "\n\n" + render_claims(results)
        if against is not None and against.is_dir():
            standard = {name: collect(_entry(name), against) for name in results}
            table += "\n\n" + render_against(results, standard, benchmark.name)
    text = document.read_text()
    if begin not in text or end not in text.partition(begin)[2]:
        raise UsageError(f"{document}: needs the markers {begin} and {end}, in that order")
    head, rest = text.split(begin, 1)
    rewritten = f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}"
    write_atomically(document, lambda path: path.write_text(rewritten))
    return table


def _trained_here(run_dir: Path, reference_run: Path | None) -> bool:
    """Whether ``run_dir/state`` holds anything but copies of the reference run's finished members."""
    for path in (run_dir / "state").glob("*"):
        source = reference_run / "state" / path.name if reference_run is not None else None
        if not (source is not None and source.is_file() and source.read_bytes() == path.read_bytes()):
            return True
    return False


@contextlib.contextmanager
def _removed_unless_trained(run_dir: Path, records: Path, reference_run: Path | None) -> Iterator[None]:
    """Remove ``run_dir`` and ``records`` again if they are new and the run stops before it has trained anything."""
    existed = run_dir.exists(), records.exists()
    try:
        yield
    except BaseException:
        if not existed[0] and run_dir.is_dir() and not _trained_here(run_dir, reference_run):
            logging.shutdown()
            shutil.rmtree(run_dir)
            if not existed[1] and records.is_dir():
                shutil.rmtree(records)
        raise


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: 0 done, 1 bad input, 2 usage, 130 interrupted."""
    parser = OneLineParser(prog="python -m train.results", description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", choices=tuple(BENCHMARKS), default="standard",
                        help="the catalog variant the rows are trained on and tabled for (default: standard)")
    parser.add_argument("--root", type=Path, default=None,
                        help="records folder of the rows, which the table reads (default: the benchmark's, "
                             + ", ".join(f"{b.root} for {b.name}" for b in BENCHMARKS.values()) + ")")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train the entries (resuming)")
    run.add_argument("--catalog", required=True)
    run.add_argument("--runs", type=Path, default=None,
                     help="folder of the rows' run directories: weights, resume states, logs (default: the "
                          "benchmark's, " + ", ".join(f"{b.runs} for {b.name}" for b in BENCHMARKS.values()) + ")")
    run.add_argument("--folds", type=Path, default=FOLDS_FILE,
                     help="the folds every row shares, those of the shipped model's run (default: %(default)s)")
    run.add_argument("--reference-run", type=Path, default=REFERENCE_RUN,
                     help="the shipped model's run directory: the compact row reuses its finished member-0 states "
                          "(default: %(default)s)")
    run.add_argument("--only", nargs="+", metavar="NAME", help="entries to train (default: all, in order)")
    run.add_argument("--threads", type=int, default=1)
    run.add_argument("--precision", choices=("bf16", "fp32"),
                     help=f"training arithmetic (default: {TABLE_PROTOCOL['precision']}; fp32 on CPUs without "
                          "bf16 matrix units)")
    run.add_argument("--frames-cache", metavar="DIR",
                     help="folder for a memory-mapped copy of the training frames that runs side by side share "
                          "(default: each run holds its own in memory)")
    run.add_argument("--only-folds", metavar="K,K",
                     help="train and score only these folds of the rows (processes side by side on other folds); "
                          "run again without it to gather the rows (default: all)")
    run.add_argument("--reuse-only", action="store_true",
                     help="score the compact row's folds the reference run has finished; train nothing")
    run.add_argument("--plasticc-cache", metavar="DIR",
                     help="folder of the snmachine wheel the light-curve reference rows read (default: the "
                          "catalog builder's, python -m train.data.plasticc --help)")
    table = commands.add_parser("table", help="write the table into docs/results.md")
    table.add_argument("--document", type=Path, default=Path("docs/results.md"))
    table.add_argument("--against", type=Path, default=BENCHMARKS["standard"].root,
                       help="another benchmark's rows are compared with the same rows' records here "
                            "(default: %(default)s)")
    pair = commands.add_parser("compare", help="paired verdict of one records folder above another, on the "
                                                "folds both finished (e.g. two shipped models' results/models/RUN)")
    pair.add_argument("better", type=Path)
    pair.add_argument("worse", type=Path)
    options = parser.parse_args(argv)
    benchmark = BENCHMARKS[options.benchmark]
    root = options.root if options.root is not None else benchmark.root
    try:
        if options.command == "compare":
            print("\n".join(compare(options.better, options.worse)))
            return 0
        if options.command == "table":
            if not root.is_dir():
                raise UsageError(f"{root}: no such folder of results records (see --root)")
            print(write_table(options.document, root, benchmark, options.against))
            return 0
        from train.fit import configure_logging

        runs = options.runs if options.runs is not None else benchmark.runs
        entries = [_entry(name) for name in options.only] if options.only else list(PLAN)
        entries = [e for e in entries if not options.reuse_only or e.name == "compact"]
        for entry in entries:
            with _removed_unless_trained(runs / entry.name, root / entry.name, options.reference_run):
                configure_logging(runs / entry.name)
                run_entry(entry, options.catalog, root, runs, options.threads, folds_file=options.folds,
                          reference_run=options.reference_run, reuse_only=options.reuse_only,
                          precision=options.precision, frames_cache=options.frames_cache,
                          plasticc_cache=options.plasticc_cache, benchmark=benchmark,
                          only_folds=options.only_folds)
    except (ConventionError, ValueError, OSError) as exc:
        return report_failure(exc)
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
