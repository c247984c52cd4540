"""One reference row of the results table, on the table's folds and protocol.

A row is trained fold by fold on the folds of the row's ``folds.json`` (the table's
split, copied there by :func:`train.results.run_entry`), with the objects
and the early-stopping validation split of :mod:`train.fit` (:func:`train.fit.inner_split`,
:func:`train.fit.evaluation_subset`), and writes what a ``train.fit`` run writes for
the table: ``fold<k>.json`` (:func:`train.fit.scores` of the held-out ``spec``
objects) and ``fold<k>.predictions.json``, so that :func:`train.results.collect` and
the paired claims read it like any other row.  A finished fold is not trained again.
With a records folder, the row's text records are copied there as each fold finishes
(:mod:`train.records`), as ``train.fit`` does.

Rows (:data:`TRAINERS`):

* ``scene_boosting``: gradient boosting on features of the per-band median coadds
  (:mod:`train.reference.scene`), no time information;
* ``lightcurve_boosting``: gradient boosting on features of the PLAsTiCC difference
  light curves of the epochs the catalog rendered
  (:mod:`train.reference.lightcurve_features`), with ``photoz`` also on the host
  galaxy's photometric redshift and its error, which the images do not carry, and
  with ``window`` on those of the 99 frames an image model reads, the latest or the
  event window (:mod:`convention_rt.event_window`);
* ``flux_lstm``: the light-curve LSTM on those difference fluxes with their errors
  (:mod:`train.reference.flux_lstm`);
* ``tree_head``: the boosted-tree head of ``train.fit --tree-head`` alone (the same
  trees, :func:`train.fit.tree_head.fold_trees`, on the light curve measured from the
  stamps of each object's inference window), or with ``network`` mixed as that head
  mixes them with the held-out predictions another row recorded: what that row with
  a tree head scores, since the trees do not depend on the network.

The boosting rows fit on every training object of the fold, ``phot`` and ``spec``,
with their recorded labels (the labels the image rows' two stages use, in one
stage), and stop on the validation split's ``spec`` objects; the LSTM trains in the
image rows' two stages.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from convention_rt.event_window import event_excess
from convention_rt.preprocess import INFERENCE_WINDOWS, MAX_PIXEL_MAGNITUDE, select_frames
from train.data.dataset import LabelledObjects
from train.data.plasticc import BANDS
from train.files import write_atomically
from train.reference.boosting import BoostingConfig, fit_boosting
from train.reference.difference_flux import (
    DifferenceFluxes,
    catalog_is_plasticc,
    read_difference_fluxes,
)
from train.reference.lightcurve_features import (
    lightcurve_feature_names,
    lightcurve_features,
)
from train.reference.objects import read_objects
from train.records import publish, publish_fold, publish_run
from train.reference.scene import object_scene_features, scene_feature_names

__all__ = ["TRAINERS", "WINDOW_FRAMES", "ReferenceRow", "finished_folds", "lightcurve_feature_table", "run_reference_row"]

log = logging.getLogger("train")

#: Frames an image row reads per object (its sequence length), for the windowed light-curve rows.
WINDOW_FRAMES = 99
#: The kinds of reference row.
TRAINERS: tuple[str, ...] = ("scene_boosting", "lightcurve_boosting", "flux_lstm", "tree_head")
#: Fields of a row's ``config.json`` that may change when it resumes (how it runs, not what it computes).
EXECUTION_FIELDS = ("threads",)


@dataclass(frozen=True)
class ReferenceRow:
    """What a reference row trains.

    Attributes
    ----------
    trainer : str
        One of :data:`TRAINERS`.
    photoz : bool
        ``lightcurve_boosting`` only: add the host galaxy's photo-z and its error to the features.
    window : {"latest", "event"} or None
        ``lightcurve_boosting`` only: describe only the epochs of the :data:`WINDOW_FRAMES`
        frames an image model with this inference window reads
        (:func:`convention_rt.preprocess.select_frames`); None: every epoch.
    network : str or None
        ``tree_head`` only: the row whose recorded held-out predictions the trees are
        mixed with (its records folder beside this row's); None: the trees alone.
    """

    trainer: str
    photoz: bool = False
    window: str | None = None
    network: str | None = None

    def __post_init__(self) -> None:
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer must be one of {', '.join(TRAINERS)}, got {self.trainer!r}")
        if self.photoz and self.trainer != "lightcurve_boosting":
            raise ValueError("photoz applies to the lightcurve_boosting row only")
        if self.window is not None and (self.trainer != "lightcurve_boosting" or self.window not in INFERENCE_WINDOWS):
            raise ValueError(f"window must be one of {', '.join(INFERENCE_WINDOWS)} and applies to the "
                             f"lightcurve_boosting row only, got {self.window!r}")
        if self.network is not None and self.trainer != "tree_head":
            raise ValueError("network applies to the tree_head row only")

    @property
    def scores_early(self) -> bool:
        """Whether the row scores an early-classification curve: the trees alone read the image rows' inputs."""
        return self.trainer == "tree_head" and self.network is None

    @property
    def needs_lightcurves(self) -> bool:
        return self.trainer in ("lightcurve_boosting", "flux_lstm")


def finished_folds(run_dir: Path, fold_limit: int) -> list[int]:
    """Folds of ``0 .. fold_limit - 1`` whose scores and predictions are written."""
    return [k for k in range(fold_limit)
            if (run_dir / f"fold{k}.json").exists() and (run_dir / f"fold{k}.predictions.json").exists()]


def lightcurve_feature_table(objects: LabelledObjects, fluxes: DifferenceFluxes, *, photoz: bool = False,
                             selection: NDArray[np.int64] | None = None) -> tuple[NDArray[np.float64], list[str]]:
    """Light-curve features of every object ``(n, K)`` float64 and their names (photo-z columns last).

    ``selection`` ``(n, M)`` int64, when given, names the epochs (indices within each
    object, -1 for none) that describe it; all of them otherwise.
    """
    rows = []
    for i, (a, b) in enumerate(zip(objects.offsets[:-1], objects.offsets[1:])):
        epochs = np.arange(a, b) if selection is None else a + selection[i][selection[i] >= 0]
        rows.append(lightcurve_features(objects.mjd[epochs], fluxes.passband[epochs], fluxes.flux[epochs],
                                        fluxes.flux_err[epochs], len(BANDS)))
    table = np.stack(rows)
    names = lightcurve_feature_names(BANDS)
    if photoz:
        table = np.column_stack([table, fluxes.hostgal_photoz, fluxes.hostgal_photoz_err])
        names += ["hostgal_photoz", "hostgal_photoz_err"]
    return table, names


def _row_config(row: ReferenceRow, catalog: str, protocol: dict[str, Any], threads: int) -> dict[str, Any]:
    """The row's ``config.json``: what it computes, and how it ran."""
    config: dict[str, Any] = {
        "trainer": row.trainer, "photoz": row.photoz, "catalog": catalog, "task": protocol.get("task", "4class"),
        "folds": protocol["folds"], "fold_limit": protocol["fold_limit"], "seed": protocol["seed"],
        "validation_fraction": protocol.get("validation_fraction", 0.1), "threads": threads,
    }
    if row.window is not None:  # absent from the rows of every epoch, whose saved configurations predate it
        config.update(window=row.window, window_frames=WINDOW_FRAMES)
    if row.trainer == "tree_head":
        config.update(network=row.network, model=protocol.get("model", "compact"))
        if protocol.get("window") not in (None, "latest"):  # absent from the rows that predate it
            config.update(inference_window=protocol["window"])
    if row.trainer == "flux_lstm":
        config.update({k: protocol[k] for k in ("epochs", "patience", "batch_size", "learning_rate", "dropout")},
                      frame_drop=protocol.get("frame_drop", 0.1), precision="fp32",
                      labels="phot (pre-training), then spec (fine-tuning)")
    else:
        config.update(boosting=asdict(BoostingConfig(seed=protocol["seed"])), labels="phot and spec, one stage")
    return config


def _check_config(run_dir: Path, config: dict[str, Any]) -> None:
    saved = run_dir / "config.json"
    if not saved.exists():
        return
    try:
        previous = json.loads(saved.read_text())
    except ValueError as exc:
        raise ValueError(f"{saved}: not a run configuration ({exc})") from exc
    if {k: v for k, v in previous.items() if k not in EXECUTION_FIELDS} != {
            k: v for k, v in config.items() if k not in EXECUTION_FIELDS}:
        raise ValueError(f"{run_dir}: holds a run with another configuration; use another run directory")


def _write_json(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2) + "\n"
    write_atomically(path, lambda target: target.write_text(text))


def run_reference_row(row: ReferenceRow, catalog: str, run_dir: Path, protocol: dict[str, Any], *,
                      threads: int = 1, plasticc_cache: str | Path | None = None,
                      records_dir: Path | None = None, frames_cache: str | None = None) -> list[dict[str, Any]]:
    """Train and score the row's unfinished folds; returns the scores of the folds trained now.

    Parameters
    ----------
    row : ReferenceRow
    catalog : str
        The benchmark catalog (built by :mod:`train.data.plasticc` for the light-curve rows).
    run_dir : Path
        Holds ``folds.json`` (the table's split); receives ``config.json``, the
        folds' scores and predictions, and per fold a record in ``state/``
        (``fold<k>_boosting.json``, or the LSTM member's ``fold<k>_member0.best.json``
        and weights ``.best.pt``).
    protocol : dict
        ``folds``, ``fold_limit``, ``seed`` (and for the LSTM ``epochs``, ``patience``,
        ``batch_size``, ``learning_rate``, ``dropout``; optionally ``task``,
        ``validation_fraction``, ``frame_drop``), as :data:`train.results.TABLE_PROTOCOL`.
    threads : int
        CPU threads of the boosting and of torch.
    plasticc_cache : str or Path, optional
        Folder of the ``snmachine`` wheel (:func:`train.data.plasticc.default_cache` by default).
    records_dir : Path, optional
        Receives a copy of the row's text records (:mod:`train.records`) as each fold
        finishes, and of those of the folds finished before; a ``tree_head`` row with a
        ``network`` reads that row's records beside it.
    frames_cache : str, optional
        ``tree_head`` only: :attr:`train.fit.FitConfig.frames_cache`.

    Raises
    ------
    ValueError
        One line naming the file: another configuration saved in ``run_dir``, folds
        that do not cover the catalog's objects, a catalog the light-curve rows
        cannot use, too few objects for a fold's validation split.
    """
    from threadpoolctl import threadpool_limits

    from train.fit import FitConfig, evaluated_on, evaluation_subset, inner_split, read_folds

    config = _row_config(row, catalog, protocol, threads)
    _check_config(run_dir, config)
    folds_file = run_dir / "folds.json"
    folds = read_folds(folds_file)
    if len(folds) != protocol["folds"]:
        raise ValueError(f"{folds_file}: holds {len(folds)} folds, the protocol asks for {protocol['folds']}")
    limit = protocol["fold_limit"] or protocol["folds"]
    todo = [k for k in range(limit) if k not in finished_folds(run_dir, limit)]
    if not todo:
        log.info("%s: folds 0-%d are finished", run_dir, limit - 1)
        if records_dir is not None:
            publish(run_dir, records_dir)
        return []

    if row.trainer == "tree_head":
        if row.network is not None and records_dir is None:
            raise ValueError(f"{row.network}: a tree head mixed with a row's predictions needs the records folder")
        return _run_tree_head(row, catalog, run_dir, protocol, config, folds, todo, threads=threads,
                              frames_cache=frames_cache, records_dir=records_dir)
    if row.needs_lightcurves:  # refused before the catalog streams past
        from convention_rt.catalog import Catalog

        with Catalog(catalog):  # the reader names what is wrong with the file, if anything
            pass
        if not catalog_is_plasticc(catalog):
            raise ValueError(f"{catalog}: not a PLAsTiCC catalog (its primary header has no SOURCE = 'PLAsTiCC'); "
                             "light-curve reference rows need a catalog built by train.data.plasticc")
    started = time.perf_counter()
    frame_features = (_scene_features_of(catalog) if row.trainer == "scene_boosting"
                      else _window_of(row.window) if row.window is not None else None)
    objects, features = read_objects(catalog, config["task"], frame_features=frame_features)
    ids = [str(i) for i in objects.object_ids]
    _check_folds_cover(folds, ids, folds_file, catalog)
    fluxes = read_difference_fluxes(objects, catalog, plasticc_cache) if row.needs_lightcurves else None
    if row.trainer == "scene_boosting":
        names = scene_feature_names(objects.bands)
    elif row.trainer == "lightcurve_boosting":
        selection = None if row.window is None else features.astype(np.int64)
        features, names = lightcurve_feature_table(objects, fluxes, photoz=row.photoz, selection=selection)
    feature_seconds = time.perf_counter() - started
    if features is not None:
        log.info("%s: %d features of %d objects in %.0f s", row.trainer, features.shape[1], len(objects),
                 feature_seconds)

    (run_dir / "state").mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", config)
    if records_dir is not None:
        publish_run(run_dir, records_dir)
    index_of = {object_id: k for k, object_id in enumerate(ids)}
    split_config = FitConfig(catalog=catalog, run_dir=str(run_dir), seed=protocol["seed"],
                             validation_fraction=config["validation_fraction"])
    trained = []
    with threadpool_limits(threads):
        for fold in todo:
            held_out = np.array(sorted(index_of[i] for i in folds[fold]))
            train_idx = np.setdiff1d(np.arange(len(objects)), held_out)
            fit_idx, val_idx = inner_split(objects, train_idx, split_config, fold)
            scored = evaluation_subset(objects, held_out)
            if row.trainer == "flux_lstm":
                probabilities = _train_flux_lstm(objects, fluxes, fit_idx, val_idx, scored, protocol, threads,
                                                 run_dir, fold)
            else:
                boosted = fit_boosting(features, objects.labels, fit_idx, val_idx, len(objects.classes),
                                       BoostingConfig(seed=protocol["seed"]))
                probabilities = boosted.predict_proba(features[scored])
                kinds, counts = np.unique(objects.typing[fit_idx], return_counts=True)
                _write_json(run_dir / "state" / f"fold{fold}_boosting.json", {
                    **boosted.record(), "feature_seconds": feature_seconds, "features": names,
                    "fit_objects": {str(k): int(v) for k, v in zip(kinds, counts)},
                    "validation_objects": int(val_idx.size)})
                log.info("fold %d: %d boosting iterations chosen of %d (validation macro-F1 %.4f), %.0f s", fold,
                         boosted.iterations, len(boosted.validation_macro_f1), max(boosted.validation_macro_f1),
                         boosted.seconds)
            trained.append(_write_fold(run_dir, records_dir, fold, objects, scored, probabilities))
    _write_metrics(run_dir, config, limit, evaluated_on(objects))
    if records_dir is not None:
        publish(run_dir, records_dir)
    return trained


def _check_folds_cover(folds: list[list[str]], ids: list[str], folds_file: Path, catalog: str) -> None:
    """Refuse folds that are not a split of exactly the catalog's labelled objects (``ValueError``, one line)."""
    if sorted(i for fold in folds for i in fold) != sorted(ids):
        raise ValueError(f"{folds_file}: its folds do not cover the labelled objects of {catalog}; the table's rows "
                         "must be trained on the catalog of the reference run")


def _write_fold(run_dir: Path, records_dir: Path | None, fold: int, objects: LabelledObjects,
                scored: NDArray[np.int64], probabilities: NDArray[np.floating]) -> dict[str, Any]:
    """Score a fold's held-out objects, write its predictions and scores (scores last) and publish them."""
    from train.fit import scores, write_predictions

    fold_scores = scores(objects.labels[scored], probabilities, objects.classes)
    write_atomically(run_dir / f"fold{fold}.predictions.json",
                     partial(write_predictions, data=objects, idx=scored, probabilities=probabilities))
    _write_json(run_dir / f"fold{fold}.json", fold_scores)
    log.info("fold %d: held-out accuracy %.4f, macro-F1 %.4f (%d objects)", fold, fold_scores["accuracy"],
             fold_scores["macro_f1"], fold_scores["n"])
    if records_dir is not None:
        publish_fold(run_dir, records_dir, fold)
    return fold_scores


def _write_metrics(run_dir: Path, config: dict[str, Any], limit: int, evaluated_on: str) -> None:
    """The row's ``metrics.json``: the scores of its finished folds and their mean and spread."""
    done = [json.loads((run_dir / f"fold{k}.json").read_text()) for k in finished_folds(run_dir, limit)]
    _write_json(run_dir / "metrics.json", {
        "task": config["task"], "model": config["trainer"], "folds": len(done),
        "cross_validation": {key: {"mean": float(np.mean([f[key] for f in done])),
                                   "std": float(np.std([f[key] for f in done]))} for key in ("accuracy", "macro_f1")},
        "per_fold": done, "evaluated_on": evaluated_on})


def _run_tree_head(row: ReferenceRow, catalog: str, run_dir: Path, protocol: dict[str, Any], config: dict[str, Any],
                   folds: list[list[str]], todo: list[int], *, threads: int, frames_cache: str | None,
                   records_dir: Path | None) -> list[dict[str, Any]]:
    """Score the folds ``todo`` of a ``tree_head`` row (its trees alone, or mixed with ``row.network``'s
    records) as :func:`run_reference_row` does the others."""
    import torch
    from threadpoolctl import threadpool_limits

    from train.fit import FitConfig, evaluated_on, evaluation_subset, prepare
    from train.early import score_fold
    from train.fit.tree_head import fold_trees, head_table
    from train.model.trees import TREE_WEIGHT, TreeEnsemble, TreesAlone, head_features

    fields = {k: v for k, v in protocol.items() if k in FitConfig.__dataclass_fields__ and k != "fold_limit"}
    fit_config = FitConfig(catalog=catalog, run_dir=str(run_dir / "unused"), threads=threads,
                           frames_cache=frames_cache, **{**fields, "tree_head": True})
    prepared = prepare(fit_config)  # the catalog, its normalisation and the card the image rows have
    data, card, model_config = prepared.data, prepared.card, prepared.model_config
    ids = [str(i) for i in data.object_ids]
    _check_folds_cover(folds, ids, run_dir / "folds.json", catalog)
    network = None if row.network is None else records_dir.parent / row.network
    (run_dir / "state").mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "config.json", config)
    if records_dir is not None:
        publish_run(run_dir, records_dir)
    index_of = {object_id: k for k, object_id in enumerate(ids)}
    trained = []
    torch.set_num_threads(threads)
    with threadpool_limits(threads):
        for fold in todo:
            held_out = np.array(sorted(index_of[i] for i in folds[fold]))
            train_idx = np.setdiff1d(np.arange(len(data)), held_out)
            scored = evaluation_subset(data, held_out)
            state = fold_trees(fit_config, run_dir, fold, data, train_idx, card, model_config)
            features = head_features(state, model_config.stamp_size, model_config.n_band_ids)
            with torch.no_grad():
                table = torch.from_numpy(head_table(data, scored, card, features).astype(np.float32))
                probabilities = TreeEnsemble(state)(table).numpy().astype(np.float64)
            if network is not None:
                recorded = _recorded_predictions(network / f"fold{fold}.predictions.json", ids, scored, data.classes)
                probabilities = TREE_WEIGHT * probabilities + (1.0 - TREE_WEIGHT) * recorded
            trained.append(_write_fold(run_dir, records_dir, fold, data, scored, probabilities))
            if row.scores_early:  # the trees alone see what an image row sees: the same early curve
                score_fold(run_dir, fold, [TreesAlone(TreeEnsemble(state), features)], data, scored, card,
                           trained[-1], batch_size=fit_config.eval_batch_size)
                if records_dir is not None:
                    publish_fold(run_dir, records_dir, fold)
    _write_metrics(run_dir, config, protocol["fold_limit"] or protocol["folds"], evaluated_on(data))
    if records_dir is not None:
        publish(run_dir, records_dir)
    return trained


def _recorded_predictions(path: Path, ids: list[str], scored: NDArray[np.int64],
                          classes: tuple[str, ...]) -> NDArray[np.float64]:
    """Another row's held-out probabilities ``(len(scored), classes)`` from its ``fold<k>.predictions.json``."""
    try:
        recorded = json.loads(path.read_text())
        by_id = dict(zip(recorded["object_id"], recorded["probabilities"]))
        if tuple(recorded["classes"]) != tuple(classes):
            raise ValueError(f"classes {recorded['classes']} are not {list(classes)}")
        return np.array([by_id[ids[i]] for i in scored], dtype=np.float64)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not the held-out predictions of this fold's objects ({exc})") from exc


def _scene_features_of(catalog: str) -> Callable[[NDArray[np.float32], NDArray[np.int32]], NDArray[np.float64]]:
    """Scene features of one object's frames, for the bands of ``catalog``."""
    from convention_rt.catalog import Catalog

    with Catalog(catalog) as opened:
        n_bands = len(opened.bands)
    return lambda frames, band: object_scene_features(frames, band, n_bands)


def _window_of(window: str) -> Callable[[NDArray[np.float32], NDArray[np.int32]], NDArray[np.float64]]:
    """The epochs (indices within the object, -1 padded to :data:`WINDOW_FRAMES`) that ``window`` reads."""
    def chosen(frames: NDArray[np.float32], band: NDArray[np.int32]) -> NDArray[np.float64]:
        offsets = np.array([0, frames.shape[0]], dtype=np.int64)
        excess = (event_excess(frames, band.astype(np.int32), offsets, MAX_PIXEL_MAGNITUDE) if window == "event"
                  else None)
        return select_frames(offsets, WINDOW_FRAMES, mode=window, excess=excess)[0].astype(np.float64)
    return chosen


def _train_flux_lstm(objects: LabelledObjects, fluxes: DifferenceFluxes, fit_idx: NDArray[np.int64],
                     val_idx: NDArray[np.int64], scored: NDArray[np.int64], protocol: dict[str, Any], threads: int,
                     run_dir: Path, fold: int) -> NDArray[np.float32]:
    """Train the fold's LSTM member, save its weights and record, return its held-out probabilities."""
    import torch

    from train.reference.flux_lstm import (
        FluxLSTMTraining,
        predict_flux_lstm,
        train_flux_lstm,
    )

    torch.set_num_threads(threads)
    training = FluxLSTMTraining(**{k: protocol[k] for k in ("epochs", "patience", "batch_size", "learning_rate",
                                                             "dropout", "seed")},
                                frame_drop=protocol.get("frame_drop", 0.1))
    model, scale, record = train_flux_lstm(objects, fluxes, fit_idx, val_idx, training, fold=fold, n_bands=len(BANDS))
    weights = run_dir / "state" / f"fold{fold}_member0.best.pt"
    write_atomically(weights, lambda path: torch.save(model.state_dict(), path))
    _write_json(weights.with_suffix(".json"), record)  # written last: the member is finished
    return predict_flux_lstm(model, objects, fluxes, scored, scale, training.eval_batch_size)
