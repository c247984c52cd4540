"""Calibrated probabilities: temperature scaling of an ensemble, and how to measure calibration.

An ensemble's probability is the mean over members of ``softmax(z_m / T)``, where
``z_m`` are member m's logits and T > 0 one temperature for the whole ensemble,
fitted by minimising the negative log-likelihood of labelled objects that are not
the fold's held-out ones (its inner validation objects, or the other folds'
held-out objects: :func:`calibrate_run`).  The logits are not needed: a
member's log-probabilities differ from its logits by a constant per object, which
the softmax removes, so ``softmax(log p_m / T) = softmax(z_m / T)``.

Calibration is measured by the expected calibration error (ECE, equal-width
confidence bins of the predicted class) and a reliability table.

``train.fit`` writes, as each fold finishes, what calibrating the fold needs
(:func:`fold_record`: its inner-validation temperature and its members' held-out
probabilities, ``fold<k>.calibration.json``), so that
``python -m train.calibration RUN_DIR --catalog CATALOG`` fits the temperatures of
every finished fold of a run, both ways, without the weights of folds trained on
another machine, and writes ``RUN_DIR/calibration.json``, which names the way to
ship (or none).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from train.files import write_atomically
from train.runs import evaluate_runs, run_parser

__all__ = ["CALIBRATION_FILE", "calibrate_run", "choose_way", "expected_calibration_error", "fit_temperature",
           "fold_file", "fold_record", "main", "negative_log_likelihood", "reliability", "tempered"]

log = logging.getLogger("train")

CALIBRATION_FILE = "calibration.json"
#: Temperatures searched (log-space bounds).
TEMPERATURE_RANGE = (0.05, 20.0)


def tempered(member_probabilities: NDArray[np.floating], temperature: float) -> NDArray[np.float64]:
    """Ensemble probabilities at ``temperature``: the mean over members of ``softmax(log p / T)``.

    Parameters
    ----------
    member_probabilities : ndarray, shape (members, n, classes)
        Each member's softmax output (at T = 1).
    temperature : float
        T > 0; 1 returns the plain ensemble mean.

    Returns
    -------
    ndarray, shape (n, classes), float64
    """
    logits = np.log(np.clip(np.asarray(member_probabilities, dtype=np.float64), 1e-30, None)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    member = np.exp(logits)
    member /= member.sum(axis=-1, keepdims=True)
    return member.mean(axis=0)


def negative_log_likelihood(probabilities: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """Mean of ``-log p[label]`` over objects; ``probabilities`` (n, classes), ``labels`` (n,)."""
    picked = np.asarray(probabilities, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-30, None))))


def fit_temperature(member_probabilities: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    """The temperature that minimises the ensemble's negative log-likelihood of ``labels``.

    Parameters
    ----------
    member_probabilities : ndarray, shape (members, n, classes)
    labels : ndarray, shape (n,), int

    Returns
    -------
    float
        In :data:`TEMPERATURE_RANGE`.
    """
    if len(labels) == 0:
        raise ValueError("no objects to fit a temperature on")
    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(tempered(member_probabilities, np.exp(log_t)),
                                                                   labels),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def _binned(probabilities: NDArray[np.floating], labels: NDArray[np.integer],
            bins: int) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per equal-width confidence bin: mean confidence, accuracy (NaN when empty) and count."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / count
    return mean_confidence, accuracy, count


def reliability(probabilities: NDArray[np.floating], labels: NDArray[np.integer],
                bins: int = 10) -> dict[str, list[float | None]]:
    """Reliability table of the predicted class: per confidence bin, mean confidence, accuracy and count.

    Parameters
    ----------
    probabilities : ndarray, shape (n, classes)
    labels : ndarray, shape (n,), int
    bins : int
        Equal-width bins of confidence over [0, 1].

    Returns
    -------
    dict
        ``edges`` (bins + 1), ``confidence``, ``accuracy`` (None for empty bins) and
        ``count`` (bins each): plain JSON values.
    """
    confidence, accuracy, count = _binned(probabilities, labels, bins)
    plain = lambda values: [None if np.isnan(v) else float(v) for v in values]  # noqa: E731
    return {"edges": np.linspace(0.0, 1.0, bins + 1).tolist(), "confidence": plain(confidence),
            "accuracy": plain(accuracy), "count": count.tolist()}


def expected_calibration_error(probabilities: NDArray[np.floating], labels: NDArray[np.integer],
                               bins: int = 10) -> float:
    """ECE: the count-weighted mean of |accuracy - confidence| over the bins of :func:`reliability`."""
    confidence, accuracy, count = _binned(probabilities, labels, bins)
    gap = np.where(count > 0, np.abs(accuracy - confidence), 0.0)
    return float(np.sum(gap * count) / max(count.sum(), 1))


def choose_way(per_fold: list[dict[str, Any]]) -> str:
    """The way of fitting T to ship: held-out NLL and ECE both better than T = 1's, on average over folds.

    Parameters
    ----------
    per_fold : list of dict
        Per fold ``nll`` and ``ece`` at T = 1 and, per way (``inner_validation``,
        ``other_folds``), the same at that way's temperature.

    Returns
    -------
    str
        Among the ways whose mean held-out negative log-likelihood is below T = 1's
        and whose mean expected calibration error is not above it, the one with the
        lowest mean negative log-likelihood; ``"none"`` when no way qualifies.
    """
    if not per_fold:
        return "none"
    base_nll, base_ece = np.mean([f["nll"] for f in per_fold]), np.mean([f["ece"] for f in per_fold])
    winners = {}
    for way in ("inner_validation", "other_folds"):
        if all(way in f for f in per_fold):
            nll, ece = np.mean([f[way]["nll"] for f in per_fold]), np.mean([f[way]["ece"] for f in per_fold])
            if nll < base_nll and ece <= base_ece:
                winners[way] = nll
    return min(winners, key=winners.get) if winners else "none"


def fold_file(directory: Path, fold: int) -> Path:
    """The calibration record of ``fold`` in a run directory or a records folder."""
    return directory / f"fold{fold}.calibration.json"


def fold_record(validation_members: NDArray[np.floating], validation_labels: NDArray[np.integer],
                held_out_members: NDArray[np.floating], held_out_labels: NDArray[np.integer]) -> dict[str, Any]:
    """What calibrating one fold needs, kept when its weights are not.

    Parameters
    ----------
    validation_members : ndarray, shape (members, v, classes)
        The members' probabilities on the fold's scored inner-validation objects.
    validation_labels : ndarray, shape (v,), int
    held_out_members : ndarray, shape (members, n, classes)
        The members' probabilities on the fold's scored held-out objects.
    held_out_labels : ndarray, shape (n,), int

    Returns
    -------
    dict
        ``fitted_on`` (v), ``temperature`` (fitted on the inner validation objects),
        ``held_out_label`` and ``held_out_member_probabilities`` (rounded to 1e-7).
    """
    return {"fitted_on": int(len(validation_labels)),
            "temperature": fit_temperature(validation_members, validation_labels),
            "held_out_label": np.asarray(held_out_labels).tolist(),
            "held_out_member_probabilities": np.round(np.asarray(held_out_members, np.float64), 7).tolist()}


def _member_probabilities(members: Sequence[Any], data: Any, idx: np.ndarray, card: Any,
                          batch_size: int) -> NDArray[np.float32]:
    from train.fit import predict

    return np.stack([predict(model, data, idx, card, batch_size) for model in members])


def calibrate_run(run_dir: Path, catalog: str, *, frames_cache: str | None = None, threads: int = 1,
                  bins: int = 10) -> dict[str, Any]:
    """Fit the temperature of every finished fold of a ``train.fit`` run and measure calibration.

    Per fold, two ways of fitting T, each scored on the fold's held-out objects
    (negative log-likelihood and ECE, against T = 1):

    * ``inner_validation``: on the members' probabilities of the fold's inner
      validation objects that are scored like the held-out ones (``spec`` objects
      when the catalog has both kinds).  Those objects also chose the members'
      epochs (early stopping), which can make the members look sharper there than
      on new objects;
    * ``other_folds``: on the held-out objects of the other finished folds, scored
      by their own members (trained the same way, never on this fold's objects).

    ``chosen`` names the way that wins (:func:`choose_way`), or ``none``: the
    temperature to ship is then 1.
    The reliability tables pool the held-out objects of all folds, at T = 1 and at
    each fold's temperature of the chosen way.

    Parameters
    ----------
    run_dir : Path
    catalog : str
        The run's catalog.
    frames_cache : str, optional
    threads : int
    bins : int

    Returns
    -------
    dict
        Also written to ``run_dir/calibration.json``.
    """
    import torch

    from train.runs import open_run

    torch.set_num_threads(threads)
    config, prepared = open_run(run_dir, catalog, frames_cache=frames_cache)
    per_fold, held_out_members, held_out_labels = [], [], []
    for record in _fold_records(run_dir, config, prepared):
        held_out_members.append(np.asarray(record["held_out_member_probabilities"], dtype=np.float64))
        held_out_labels.append(np.asarray(record["held_out_label"], dtype=np.int64))
        raw = tempered(held_out_members[-1], 1.0)
        per_fold.append({"fitted_on": record["fitted_on"], "scored": int(held_out_labels[-1].size),
                         "nll": negative_log_likelihood(raw, held_out_labels[-1]),
                         "ece": expected_calibration_error(raw, held_out_labels[-1], bins),
                         "inner_validation": {"temperature": record["temperature"]}})
    for k, fold in enumerate(per_fold):
        others = [j for j in range(len(per_fold)) if j != k]
        if others:
            fold["other_folds"] = {"temperature": fit_temperature(
                np.concatenate([held_out_members[j] for j in others], axis=1),
                np.concatenate([held_out_labels[j] for j in others]))}
        for way in ("inner_validation", "other_folds"):
            if way in fold:
                calibrated = tempered(held_out_members[k], fold[way]["temperature"])
                fold[way]["nll"] = negative_log_likelihood(calibrated, held_out_labels[k])
                fold[way]["ece"] = expected_calibration_error(calibrated, held_out_labels[k], bins)
        log.info("%s fold %d: held-out NLL %.4f, ECE %.4f; %s", run_dir.name, k, fold["nll"], fold["ece"],
                 "; ".join(f"{way} T = {fold[way]['temperature']:.3f}: NLL {fold[way]['nll']:.4f}, "
                           f"ECE {fold[way]['ece']:.4f}" for way in ("inner_validation", "other_folds")
                           if way in fold))
    result: dict[str, Any] = {"bins": bins, "per_fold": per_fold, "chosen": choose_way(per_fold)}
    if per_fold:
        labels = np.concatenate(held_out_labels)
        temperatures = [f[result["chosen"]]["temperature"] if result["chosen"] != "none" else 1.0
                        for f in per_fold]
        result["reliability"] = reliability(np.concatenate([tempered(m, 1.0) for m in held_out_members]),
                                            labels, bins)
        result["reliability_calibrated"] = reliability(
            np.concatenate([tempered(m, t) for m, t in zip(held_out_members, temperatures)]), labels, bins)
    write_atomically(run_dir / CALIBRATION_FILE, lambda path: path.write_text(json.dumps(result, indent=2) + "\n"))
    return result


def _fold_records(run_dir: Path, config: Any, prepared: Any) -> Iterator[dict[str, Any]]:
    """The calibration record (:func:`fold_record`) of each leading finished fold of the run.

    A fold's record written by ``train.fit`` (``fold<k>.calibration.json``, also
    restored from a records folder) is read; for a fold finished before runs wrote
    one, it is computed from the fold's weights.  Stops at the first fold with neither.
    """
    from train.fit import evaluation_subset, inner_split
    from train.runs import finished_folds

    data = prepared.data
    with_weights = None  # the folds' weights, loaded only if a fold has no record
    for index in range(len(prepared.folds[:config.fold_limit])):
        path = fold_file(run_dir, index)
        if path.is_file():
            try:
                yield json.loads(path.read_text())
            except ValueError as exc:
                raise ValueError(f"{path}: not a calibration record of train.fit ({exc})") from exc
            continue
        if with_weights is None:
            with_weights = {fold.index: fold for fold in finished_folds(run_dir, config, prepared)}
        fold = with_weights.get(index)
        if fold is None:
            return
        _, validation = inner_split(data, fold.train, config, fold.index)
        validation = evaluation_subset(data, validation)
        scored = evaluation_subset(data, fold.held_out)
        yield fold_record(
            _member_probabilities(fold.members, data, validation, prepared.card, config.eval_batch_size),
            data.labels[validation],
            _member_probabilities(fold.members, data, scored, prepared.card, config.eval_batch_size),
            data.labels[scored])


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m train.calibration RUN_DIR... --catalog CATALOG``."""
    parser = run_parser("python -m train.calibration", __doc__.split("\n")[0])
    parser.add_argument("--bins", type=int, default=10)
    options = parser.parse_args(argv)

    def evaluate(run_dir: Path) -> dict[str, Any]:
        result = calibrate_run(run_dir, options.catalog, frames_cache=options.frames_cache,
                               threads=options.threads, bins=options.bins)
        return {"chosen": result["chosen"],
                "temperatures": {way: [f[way]["temperature"] for f in result["per_fold"] if way in f]
                                 for way in ("inner_validation", "other_folds")}}

    return evaluate_runs(options.run_dirs, evaluate)


if __name__ == "__main__":
    sys.exit(main())
