"""Early classification: how well a trained run classifies objects from their first frames.

A broker sees an object's frames one alert at a time, so a classifier is used
long before the object's light curve is complete.  For a finished fold of a
``train.fit`` run, this module cuts each held-out object to its first k frames in
time (all of them when it has fewer), classifies it with the fold's members as
the runtime would (the latest ``seq_len`` of those frames), and scores the
ensemble: accuracy and macro-F1 against k (:func:`early_curve`).

Each fold's curve is a record of its own, ``fold<k>.early.json`` (:func:`score_fold`),
and ``early.json`` gathers the run's.  ``train.fit`` with ``early`` scores a fold as
soon as its members are finished; ``python -m train.early RUN_DIR --catalog CATALOG
[--frames 1 2 3 5 10 20 50 99]`` scores every finished fold of a run directory that
still holds its members' weights.  ``python -m train.results table`` reads the
per-fold records of the table's rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convention_rt.catalog import ObjectChunk
from convention_rt.model_card import ModelCard
from convention_rt.transform import to_inputs
from convention_rt.session import frames_needed
from train.data.dataset import LabelledObjects
from train.files import write_atomically
from train.records import early_file
from train.runs import evaluate_runs, run_parser

__all__ = ["EARLY_FILE", "FRAMES_SEEN", "early_curve", "first_frames", "gather", "main", "random_prefixes",
           "score_fold", "score_run"]

log = logging.getLogger("train")

#: Frames seen at which the curve is measured (the model's sequence holds 99).
FRAMES_SEEN: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 50, 99)
#: The run's curves of every scored fold, gathered from the per-fold records.
EARLY_FILE = "early.json"


def first_frames(chunk: ObjectChunk, frames: int | np.ndarray) -> ObjectChunk:
    """The same objects, each cut to its first ``frames`` frames in time.

    Parameters
    ----------
    chunk : ObjectChunk
        n objects; each object's frames are ordered by time (as the reader returns them).
    frames : int or ndarray, shape (n,), int
        Frames kept per object (>= 1), one number for all or one per object; an
        object with fewer keeps all of its own.

    Returns
    -------
    ObjectChunk
        A copy: ``frames``, ``band``, ``mjd``, ``n_bad`` and ``offsets`` cut; the rest shared.
    """
    if np.min(frames, initial=1) < 1:
        raise ValueError(f"frames must be at least 1, got {np.min(frames)}")
    starts, stops = chunk.offsets[:-1], chunk.offsets[1:]
    kept = np.minimum(stops - starts, frames)
    offsets = np.zeros_like(chunk.offsets)
    np.cumsum(kept, out=offsets[1:])
    rows = np.repeat(starts - offsets[:-1], kept) + np.arange(offsets[-1])
    return dataclasses.replace(
        chunk, frames=chunk.frames[rows], band=chunk.band[rows], mjd=chunk.mjd[rows],
        n_bad=chunk.n_bad[rows], offsets=offsets,
    )


def random_prefixes(chunk: ObjectChunk, rng: np.random.Generator, probability: float) -> ObjectChunk:
    """Training augmentation for early classification: cut some objects to a random prefix.

    Each object is cut with ``probability`` to its first L frames, L drawn
    log-uniformly from 1 to its number of frames (so short prefixes, the alerts a
    broker sees first, are as common as long ones); the others keep all frames.

    Parameters
    ----------
    chunk : ObjectChunk
        n objects, frames ordered by time.
    rng : numpy.random.Generator
        Two draws per object.
    probability : float
        In [0, 1].

    Returns
    -------
    ObjectChunk
    """
    counts = np.diff(chunk.offsets)
    cut = rng.random(counts.size) < probability
    length = np.floor(np.exp(rng.random(counts.size) * np.log(np.maximum(counts, 1) + 1))).astype(np.int64)
    return first_frames(chunk, np.where(cut, np.clip(length, 1, np.maximum(counts, 1)), np.maximum(counts, 1)))


def early_curve(members: Sequence[torch.nn.Module], data: LabelledObjects, idx: np.ndarray, card: ModelCard,
                frames_seen: Sequence[int] = FRAMES_SEEN, batch_size: int = 256) -> dict[str, Any]:
    """Ensemble scores of the objects ``idx`` cut to their first k frames, for each k.

    Parameters
    ----------
    members : sequence of nn.Module
        The ensemble (eval mode is set here); probabilities are averaged.
    data : LabelledObjects
    idx : ndarray, shape (n,), int64
        Objects scored.
    card : ModelCard
        The run's band order, normalisation and sequence length.
    frames_seen : sequence of int
    batch_size : int

    Returns
    -------
    dict
        ``{"frames_seen": [...], "accuracy": [...], "macro_f1": [...], "n": n,
        "mean_frames_used": [...]}``, lists aligned with ``frames_seen``.
    """
    from train.fit import scores  # train.fit imports this module

    labels = data.labels[idx]
    accuracy, macro_f1, used = [], [], []
    for k in frames_seen:
        probabilities = np.zeros((idx.size, len(data.classes)), dtype=np.float64)
        frames_used = 0
        with torch.no_grad():
            for start in range(0, idx.size, batch_size):
                rows = idx[start:start + batch_size]
                inputs = to_inputs(first_frames(data.chunk(rows), k), card)
                seq = inputs.sequences
                # the batch's padding windows change nothing in eval mode (ConvEntion notes): not computed;
                # models without stem windows (baselines: stem_window 1) keep the whole sequence
                length = int(frames_needed(seq.band_ids, card.stem_window).max()) if card.stem_window > 1 \
                    else seq.band_ids.shape[1]
                tensors = (torch.from_numpy(seq.stamps[:, :length]), torch.from_numpy(seq.band_ids[:, :length]),
                           torch.from_numpy(inputs.times[:, :length]))
                frames_used += int(np.count_nonzero(seq.band_ids))
                for model in members:
                    probabilities[start:start + rows.size] += torch.softmax(model.eval()(*tensors), -1).numpy()
        scored = scores(labels, probabilities, data.classes)
        accuracy.append(scored["accuracy"])
        macro_f1.append(scored["macro_f1"])
        used.append(frames_used / max(idx.size, 1))
        log.info("first %d frames: accuracy %.4f, macro-F1 %.4f", k, accuracy[-1], macro_f1[-1])
    return {"frames_seen": list(frames_seen), "accuracy": accuracy, "macro_f1": macro_f1, "n": int(idx.size),
            "mean_frames_used": used}


def score_fold(run_dir: Path, fold: int, members: Sequence[torch.nn.Module], data: LabelledObjects,
               idx: np.ndarray, card: ModelCard, fold_scores: dict[str, Any] | None, *,
               frames_seen: Sequence[int] = FRAMES_SEEN, batch_size: int = 256, reuse: bool = False) -> dict[str, Any]:
    """The early curve of one fold (:func:`early_curve`), written to ``run_dir/fold<k>.early.json``.

    Parameters
    ----------
    run_dir : Path
    fold : int
    members, data, idx, card
        As :func:`early_curve`: the fold's members and its held-out objects scored.
    fold_scores : dict or None
        The fold's held-out scores (``fold<k>.json``); the record keeps their digest
        (``fold_sha256``), which says which members the curve was scored with.
    frames_seen : sequence of int
    batch_size : int
    reuse : bool
        Keep the record already written for the same fold scores and frames seen
        instead of scoring again (a resumed run).

    Returns
    -------
    dict
        ``fold``, ``fold_sha256`` and :func:`early_curve`'s keys.
    """
    from train.fit import fold_digests  # train.fit imports this module

    path = early_file(run_dir, fold)
    digest = fold_digests([fold_scores])[0] if fold_scores is not None else None
    if reuse and digest is not None:
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError):
            saved = None
        if isinstance(saved, dict) and saved.get("fold_sha256") == digest \
                and saved.get("frames_seen") == list(frames_seen):
            return saved
    record = {"fold": fold, "fold_sha256": digest, **early_curve(members, data, idx, card, frames_seen, batch_size)}
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(path, lambda target: target.write_text(text))
    return record


def gather(run_dir: Path, folds: Sequence[int], frames_seen: Sequence[int] = FRAMES_SEEN) -> dict[str, Any]:
    """Write ``run_dir/early.json`` from the per-fold records of ``folds``, in order.

    Returns
    -------
    dict
        ``{"frames_seen": [...], "per_fold": [record, ...]}``.
    """
    result = {"frames_seen": list(frames_seen),
              "per_fold": [json.loads(early_file(run_dir, fold).read_text()) for fold in folds]}
    write_atomically(run_dir / EARLY_FILE, lambda path: path.write_text(json.dumps(result, indent=2) + "\n"))
    return result


def score_run(run_dir: Path, catalog: str, frames_seen: Sequence[int] = FRAMES_SEEN, *,
              frames_cache: str | None = None, threads: int = 1) -> dict[str, Any]:
    """The early curve of every finished fold of the ``train.fit`` run in ``run_dir``.

    The run's own configuration (``config.json``) rebuilds its data, card and
    models (:mod:`train.runs`); a fold counts when all of its members are finished.
    Each fold's curve is written to ``run_dir/fold<k>.early.json`` as it is scored.

    Parameters
    ----------
    run_dir : Path
    catalog : str
        The run's catalog (its path may differ from the one recorded).
    frames_seen : sequence of int
    frames_cache : str, optional
        As ``train.fit``'s ``--frames-cache``.
    threads : int

    Returns
    -------
    dict
        ``{"per_fold": [curve, ...], "frames_seen": [...]}``, also written to
        ``run_dir/early.json``.
    """
    from train.fit import evaluation_subset
    from train.runs import finished_folds, open_run

    torch.set_num_threads(threads)
    config, prepared = open_run(run_dir, catalog, frames_cache=frames_cache)
    scored = []
    for fold in finished_folds(run_dir, config, prepared):
        log.info("%s fold %d", run_dir.name, fold.index)
        scores_file = run_dir / f"fold{fold.index}.json"
        fold_scores = json.loads(scores_file.read_text()) if scores_file.is_file() else None
        score_fold(run_dir, fold.index, fold.members, prepared.data, evaluation_subset(prepared.data, fold.held_out),
                   prepared.card, fold_scores, frames_seen=frames_seen, batch_size=config.eval_batch_size)
        scored.append(fold.index)
    return gather(run_dir, scored, frames_seen)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m train.early RUN_DIR... --catalog CATALOG``."""
    parser = run_parser("python -m train.early", __doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=list(FRAMES_SEEN),
                        help="frames seen at which to score (default: %(default)s)")
    options = parser.parse_args(argv)
    if min(options.frames) < 1:
        parser.error("--frames must be positive")

    def evaluate(run_dir: Path) -> dict[str, Any]:
        result = score_run(run_dir, options.catalog, options.frames, frames_cache=options.frames_cache,
                           threads=options.threads)
        return {"folds": len(result["per_fold"])}

    return evaluate_runs(options.run_dirs, evaluate)


if __name__ == "__main__":
    sys.exit(main())
