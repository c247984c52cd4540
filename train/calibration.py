"""Calibrated probabilities: temperature scaling of an ensemble, and how to measure calibration.

An ensemble's probability is the mean over members of ``softmax(z_m / T)``, where
``z_m`` are member m's logits and T > 0 one temperature for the whole ensemble,
fitted by minimising the negative log-likelihood of the labels of a fold's inner
validation objects (never its held-out ones).  The logits are not needed: a
member's log-probabilities differ from its logits by a constant per object, which
the softmax removes, so ``softmax(log p_m / T) = softmax(z_m / T)``.

Calibration is measured by the expected calibration error (ECE, equal-width
confidence bins of the predicted class) and a reliability table.

``python -m train.calibration RUN_DIR --catalog CATALOG`` fits the temperature of
every finished fold of a ``train.fit`` run and writes ``RUN_DIR/calibration.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize_scalar

from convention_rt.errors import ConventionError
from train.command_line import OneLineParser, report_failure
from train.files import write_atomically

__all__ = ["CALIBRATION_FILE", "expected_calibration_error", "fit_temperature", "main", "negative_log_likelihood",
           "reliability", "tempered", "calibrate_run"]

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


def reliability(probabilities: NDArray[np.floating], labels: NDArray[np.integer],
                bins: int = 10) -> dict[str, list[float]]:
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
        ``edges`` (bins + 1), ``confidence``, ``accuracy`` (NaN for empty bins) and ``count`` (bins each).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / count
    return {"edges": edges.tolist(), "confidence": mean_confidence.tolist(), "accuracy": accuracy.tolist(),
            "count": count.tolist()}


def expected_calibration_error(probabilities: NDArray[np.floating], labels: NDArray[np.integer],
                               bins: int = 10) -> float:
    """ECE: the count-weighted mean of |accuracy - confidence| over the bins of :func:`reliability`."""
    table = reliability(probabilities, labels, bins)
    count = np.asarray(table["count"], dtype=float)
    gap = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    return float(np.sum(np.where(count > 0, gap, 0.0) * count) / max(count.sum(), 1.0))


def _member_probabilities(members: Sequence[Any], data: Any, idx: np.ndarray, card: Any,
                          batch_size: int) -> NDArray[np.float32]:
    from train.fit import predict

    return np.stack([predict(model, data, idx, card, batch_size) for model in members])


def calibrate_run(run_dir: Path, catalog: str, *, frames_cache: str | None = None, threads: int = 1,
                  bins: int = 10) -> dict[str, Any]:
    """Fit the temperature of every finished fold of a ``train.fit`` run and measure calibration.

    Per fold: the members' probabilities on the inner validation objects that are
    scored like the held-out ones (``spec`` objects when the catalog has both
    kinds) fit T; the held-out objects measure negative log-likelihood and ECE at
    T = 1 and at the fitted T.  The reliability tables pool the held-out objects
    of all folds.

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

    from train.fit import evaluation_subset, inner_split
    from train.runs import finished_folds, open_run

    torch.set_num_threads(threads)
    config, prepared = open_run(run_dir, catalog, frames_cache=frames_cache)
    data = prepared.data
    per_fold, pooled_raw, pooled_tempered, pooled_labels = [], [], [], []
    for fold in finished_folds(run_dir, config, prepared):
        members, held_out = fold.members, fold.held_out
        _, validation = inner_split(data, fold.train, config, fold.index)
        validation = evaluation_subset(data, validation)
        scored = evaluation_subset(data, held_out)
        temperature = fit_temperature(
            _member_probabilities(members, data, validation, prepared.card, config.eval_batch_size),
            data.labels[validation])
        held_out_members = _member_probabilities(members, data, scored, prepared.card, config.eval_batch_size)
        labels = data.labels[scored]
        raw, calibrated = tempered(held_out_members, 1.0), tempered(held_out_members, temperature)
        per_fold.append({
            "temperature": temperature, "fitted_on": int(validation.size), "scored": int(scored.size),
            "nll": negative_log_likelihood(raw, labels), "nll_calibrated": negative_log_likelihood(calibrated, labels),
            "ece": expected_calibration_error(raw, labels, bins),
            "ece_calibrated": expected_calibration_error(calibrated, labels, bins),
        })
        log.info("%s fold %d: T = %.3f, held-out ECE %.4f -> %.4f, NLL %.4f -> %.4f", run_dir.name, fold.index,
                 temperature, per_fold[-1]["ece"], per_fold[-1]["ece_calibrated"], per_fold[-1]["nll"],
                 per_fold[-1]["nll_calibrated"])
        pooled_raw.append(raw)
        pooled_tempered.append(calibrated)
        pooled_labels.append(labels)
    result: dict[str, Any] = {"bins": bins, "per_fold": per_fold}
    if per_fold:
        labels = np.concatenate(pooled_labels)
        result["reliability"] = reliability(np.concatenate(pooled_raw), labels, bins)
        result["reliability_calibrated"] = reliability(np.concatenate(pooled_tempered), labels, bins)
    write_atomically(run_dir / CALIBRATION_FILE, lambda path: path.write_text(json.dumps(result, indent=2) + "\n"))
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m train.calibration RUN_DIR --catalog CATALOG``."""
    parser = OneLineParser(prog="python -m train.calibration", description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--frames-cache", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bins", type=int, default=10)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        for run_dir in options.run_dirs:
            result = calibrate_run(run_dir, options.catalog, frames_cache=options.frames_cache,
                                   threads=options.threads, bins=options.bins)
            print(json.dumps({"run": str(run_dir), "temperatures": [f["temperature"] for f in result["per_fold"]]}))
    except (ConventionError, OSError, ValueError) as exc:
        report_failure(exc)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted: run the same command again", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
