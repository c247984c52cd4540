"""The text records of finished work, copied from a run directory into a records folder.

A run directory (``runs/...``, ignored by git) holds a run's working state: weights,
resume states, logs, plots, and everything it needs to resume.  A records folder
(``results/...``, tracked) holds only the small text records that the results table
and the docs read, copied from the run directory as each fold finishes:

* ``config.json`` and ``architecture.json`` (what the run computes), ``metrics.json``
  (its last summary) and ``calibration.json`` (``python -m train.calibration``), when
  the run directory has them;
* :data:`FOLDS_DIGEST`: the sha256 of the run's ``folds.json``.  The split itself is
  kept once (``results/folds.json`` for the results table), not in every folder;
* per finished fold k: ``fold<k>.json`` (held-out scores), ``fold<k>.predictions.json``
  (held-out predictions), ``fold<k>.early.json`` (early-classification curve, when
  scored: :mod:`train.early`), ``fold<k>.calibration.json`` (what calibrating the
  fold needs: :func:`train.calibration.fold_record`), and the training record of each of its members,
  ``fold<k>.member<m>.json`` (the run directory's ``state/fold<k>_member<m>.best.json``:
  epochs, their seconds and precision, restarts), or of a boosting reference row,
  ``fold<k>.boosting.json`` (``state/fold<k>_boosting.json``).

``train.fit`` (``records_dir``) and the reference rows publish their records as they
go; ``python -m train.records RUN_DIR RECORDS_DIR`` publishes those of a run
directory after the fact (:func:`publish`).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from convention_rt.errors import ConventionError
from convention_rt.model_card import sha256_of
from train.calibration import fold_file as calibration_file
from train.command_line import OneLineParser, report_failure
from train.files import copy_atomically, write_atomically

__all__ = ["FOLDS_DIGEST", "RUN_RECORDS", "early_file", "fold_records", "main", "member_record", "publish",
           "publish_fold", "publish_run", "published_fold"]

#: Records of the whole run, copied when the run directory has them.
RUN_RECORDS: tuple[str, ...] = ("config.json", "architecture.json", "metrics.json", "calibration.json")
#: The record of which folds a run used: the sha256 of its ``folds.json``.
FOLDS_DIGEST = "folds.sha256"


def early_file(directory: Path, fold: int) -> Path:
    """The early-classification record of ``fold`` in a run directory or a records folder."""
    return directory / f"fold{fold}.early.json"


def fold_records(run_dir: Path, fold: int) -> list[tuple[Path, str]]:
    """The text records of one fold that ``run_dir`` holds, as (source, name in a records folder).

    The scores (``fold<k>.json``) come last: a records folder counts a fold as
    finished once its scores and predictions are there, so the rest is copied first.

    Parameters
    ----------
    run_dir : Path
        A run directory of ``train.fit`` or of a reference row.
    fold : int

    Returns
    -------
    list of (Path, str)
        Only the records that exist.
    """
    members = []
    for path in (run_dir / "state").glob(f"fold{fold}_member*.best.json"):
        member = re.fullmatch(rf"fold{fold}_member(\d+)\.best\.json", path.name)
        if member:
            members.append((int(member.group(1)), path))
    candidates = [(path, f"fold{fold}.member{member}.json") for member, path in sorted(members)]
    candidates += [(run_dir / "state" / f"fold{fold}_boosting.json", f"fold{fold}.boosting.json"),
                   (early_file(run_dir, fold), early_file(run_dir, fold).name),
                   (calibration_file(run_dir, fold), calibration_file(run_dir, fold).name),
                   (run_dir / f"fold{fold}.predictions.json", f"fold{fold}.predictions.json"),
                   (run_dir / f"fold{fold}.json", f"fold{fold}.json")]
    return [(source, name) for source, name in candidates if source.is_file()]


def member_record(records: Path, fold: int, member: int) -> Path:
    """The training record of one member in a records folder."""
    return records / f"fold{fold}.member{member}.json"


def published_fold(records: Path, fold: int, members: int, *, early: bool) -> list[Path] | None:
    """The records of a fold a run finished, on this machine or another, or None if they are not all there.

    A fold is published whole: each member's training record, the early curve (when
    the run scores it), the predictions, and last the scores.

    Parameters
    ----------
    records : Path
        The run's records folder.
    fold, members : int
    early : bool
        Whether the run scores early curves (then the fold's must be there too).

    Returns
    -------
    list of Path or None
        The scores, predictions and (with ``early``) early curve of the fold, in
        that order, and its calibration record when it has one, when every record
        is there.
    """
    needed = [records / f"fold{fold}.json", records / f"fold{fold}.predictions.json"]
    if early:
        needed.append(early_file(records, fold))
    members_there = all(member_record(records, fold, m).is_file() for m in range(members))
    if not (members_there and all(path.is_file() for path in needed)):
        return None
    calibration = calibration_file(records, fold)  # folds published before runs wrote one have none
    return needed + ([calibration] if calibration.is_file() else [])


def _copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` whole, unless ``target`` already holds the same bytes."""
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return
    copy_atomically(source, target)


def _write_text(target: Path, text: str) -> None:
    if not (target.is_file() and target.read_text() == text):
        write_atomically(target, lambda path: path.write_text(text))


def publish_run(run_dir: Path, records: Path) -> None:
    """Copy the run's records (:data:`RUN_RECORDS`) and write the digest of its folds into ``records``.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    records : Path
        The records folder (made if missing).  Files already holding the same bytes
        are left alone.
    """
    records.mkdir(parents=True, exist_ok=True)
    if (run_dir / "folds.json").is_file():
        _write_text(records / FOLDS_DIGEST, sha256_of(run_dir / "folds.json") + "\n")
    for name in RUN_RECORDS:
        if (run_dir / name).is_file():
            _copy(run_dir / name, records / name)


def publish_fold(run_dir: Path, records: Path, fold: int) -> None:
    """Copy the records of one finished fold (:func:`fold_records`) into ``records``."""
    records.mkdir(parents=True, exist_ok=True)
    for source, name in fold_records(run_dir, fold):
        _copy(source, records / name)


def publish(run_dir: Path, records: Path) -> list[int]:
    """Copy every record of ``run_dir`` into ``records``: the run's and those of each scored fold.

    Parameters
    ----------
    run_dir, records : Path

    Returns
    -------
    list of int
        The folds published (those with scores and predictions).

    Raises
    ------
    ValueError
        ``run_dir`` holds no run (no ``config.json``).
    """
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir}: not a run directory (no config.json)")
    publish_run(run_dir, records)
    folds = sorted(int(match.group(1)) for path in run_dir.glob("fold*.predictions.json")
                   if (match := re.fullmatch(r"fold(\d+)\.predictions\.json", path.name))
                   and (run_dir / f"fold{match.group(1)}.json").is_file())
    for fold in folds:
        publish_fold(run_dir, records, fold)
    return folds


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m train.records RUN_DIR RECORDS_DIR``; 0 done, 1 bad input, 2 usage."""
    parser = OneLineParser(prog="python -m train.records", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run directory (working state)")
    parser.add_argument("records", type=Path, metavar="RECORDS_DIR",
                        help="the records folder, e.g. results/standard/ROW")
    options = parser.parse_args(argv)
    try:
        folds = publish(options.run_dir, options.records)
    except (ConventionError, OSError, ValueError) as exc:
        return report_failure(exc)
    print(json.dumps({"run": str(options.run_dir), "records": str(options.records), "folds": folds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
