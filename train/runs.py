"""A ``train.fit`` run read back: its configuration, data and the members of each finished fold.

Used by the evaluations that run after training (:mod:`train.early`,
:mod:`train.calibration`): they rebuild exactly what the run trained and scored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convention_rt.errors import ConventionError
from train.command_line import OneLineParser, report_failure

__all__ = ["FinishedFold", "evaluate_runs", "finished_folds", "open_run", "run_parser"]


@dataclass(frozen=True)
class FinishedFold:
    """One finished fold of a run.

    Attributes
    ----------
    index : int
    members : list of nn.Module
        The fold's members in eval mode, their best weights loaded.
    train : ndarray, shape (t,), int64
        Objects the fold trained on (its inner validation objects included).
    held_out : ndarray, shape (h,), int64
        Objects the fold held out.
    """

    index: int
    members: list[nn.Module]
    train: np.ndarray
    held_out: np.ndarray


def open_run(run_dir: Path, catalog: str, *, frames_cache: str | None = None):  # -> (FitConfig, Prepared)
    """The run's configuration (its ``config.json``, with this ``catalog``) and its prepared data.

    Parameters
    ----------
    run_dir : Path
    catalog : str
        The run's catalog (its path may differ from the one recorded).
    frames_cache : str, optional
        As ``train.fit``'s ``--frames-cache``.

    Returns
    -------
    tuple of (train.fit.FitConfig, train.fit.Prepared)
    """
    from train.fit import FitConfig, prepare

    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{run_dir / 'config.json'}: not a run of train.fit ({exc})") from exc
    known = {f.name for f in dataclasses.fields(FitConfig)}
    config = FitConfig(**{**{k: v for k, v in saved.items() if k in known}, "catalog": catalog,
                          "run_dir": str(run_dir), "frames_cache": frames_cache, "export_out": None})
    return config, prepare(config)


def finished_folds(run_dir: Path, config, prepared) -> Iterator[FinishedFold]:
    """The leading folds of the run whose members are all finished, in order.

    A run with a tree head gives its members mixed with the fold's trees, as
    ``train.fit`` scored them; the trees model gives its trees alone, its one member
    (:func:`train.model.trees.with_trees`).

    Parameters
    ----------
    run_dir : Path
    config : train.fit.FitConfig
    prepared : train.fit.Prepared
        As :func:`open_run` returns them.

    Yields
    ------
    FinishedFold
    """
    from train.fit import load_weights
    from train.fit.resume import fold_members_finished
    from train.model import build_model
    from train.model.trees import with_trees

    data = prepared.data
    index_of = {str(i): k for k, i in enumerate(data.object_ids)}
    for fold, held_out_ids in enumerate(prepared.folds[:config.fold_limit]):
        trees_file = run_dir / "state" / f"fold{fold}_trees.pt"
        if not fold_members_finished(run_dir, fold, config) or (config.tree_head and not trees_file.exists()):
            return
        members = []
        for path in (run_dir / "state" / f"fold{fold}_member{m}.best.pt" for m in range(config.members)):
            model = build_model(prepared.model_config)
            load_weights(model, torch.load(path, map_location="cpu", weights_only=True), path)
            members.append(model.eval())
        if config.tree_head:
            trees = torch.load(trees_file, map_location="cpu", weights_only=True)
            members = with_trees(members, trees, prepared.model_config)
        held_out = np.array(sorted(index_of[i] for i in held_out_ids))
        yield FinishedFold(fold, members, np.setdiff1d(np.arange(len(data)), held_out), held_out)


def run_parser(prog: str, description: str) -> OneLineParser:
    """The command line shared by the evaluations of finished runs: ``RUN_DIR... --catalog C``.

    Parameters
    ----------
    prog, description : str

    Returns
    -------
    OneLineParser
        With ``run_dirs``, ``--catalog``, ``--frames-cache`` and ``--threads``; add the
        evaluation's own options to it.
    """
    parser = OneLineParser(prog=prog, description=description)
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--catalog", required=True, help="the runs' catalog")
    parser.add_argument("--frames-cache", default=None, help="as train.fit's --frames-cache")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def evaluate_runs(run_dirs: list[Path], evaluate: Callable[[Path], dict]) -> int:
    """Evaluate each run in turn, printing one JSON line per run; the exit code of the command.

    Parameters
    ----------
    run_dirs : list of Path
    evaluate : callable
        Evaluates one run directory; returns what to print for it.

    Returns
    -------
    int
        0; the error's exit code (one line on stderr) when a run cannot be evaluated;
        130 when interrupted (what is written so far stays; run the same command again).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        for run_dir in run_dirs:
            print(json.dumps({"run": str(run_dir), **evaluate(run_dir)}))
    except (ConventionError, OSError, ValueError) as exc:
        report_failure(exc)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted: run the same command again", file=sys.stderr)
        return 130
    return 0
