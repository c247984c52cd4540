"""``convention-rt classify``: classify every object of a catalog into a result file.

:func:`classify_catalog` is the library call of the command: it checks the
output, finds the model and loads its card once, opens the catalog for it,
classifies it chunk by chunk and writes one row per object (FITS, CSV or
Parquet, published whole), and returns a :class:`ClassifyReport` saying what
was written.
"""

from __future__ import annotations

import errno
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from convention_rt.errors import UsageError
from convention_rt.policies import Device, OnInvalid, StampPolicy
from convention_rt.predictions import FORMATS, PredictionWriter
from convention_rt.publish import output_error, output_path
from convention_rt.status import format_head

__all__ = ["ClassifyReport", "check_output", "classify_catalog", "default_output", "flag_summary"]


@dataclass
class ClassifyReport:
    """What :func:`classify_catalog` wrote.

    Attributes
    ----------
    output : Path
        The result file.
    rows : int
        Objects written (one row each).
    seconds : float
        Wall time, model loading included.
    model : str
        ``name/version`` of the model.
    device : str
        Where it ran (``cpu`` or ``cuda``).
    classes : tuple of str
        The model's classes.
    predicted : Counter
        Objects per predicted class.
    flagged : int
        Objects not classified.
    heads : Counter
        Objects per head of their status, as values
        (:attr:`ObjectStatus.head_values <convention_rt.status.ObjectStatus.head_values>`: flag, detail,
        reasons of low information).
    domain_declared : bool
        Whether the model's card declares a training domain (else nothing was checked against it).
    domain_problem : str
        How the catalog is out of the model's domain ("" when it is not).
    on_invalid : OnInvalid
        The policy the run applied.
    """

    output: Path
    model: str
    device: str
    classes: tuple[str, ...]
    domain_declared: bool
    on_invalid: OnInvalid
    domain_problem: str = ""
    rows: int = 0
    seconds: float = 0.0
    flagged: int = 0
    predicted: Counter = field(default_factory=Counter)
    heads: Counter = field(default_factory=Counter)

    @property
    def not_ok(self) -> str:
        """One line counting the objects that are not plain ``ok`` ("" when none): see :func:`flag_summary`."""
        return flag_summary(self.heads, self.rows)


def flag_summary(heads: Counter, total: int) -> str:
    """One line counting the objects that are not plain ``ok``, by the head of their status ("" when none).

    ``heads`` counts objects by :attr:`ObjectStatus.head_values <convention_rt.status.ObjectStatus.head_values>`.
    """
    others = {head: count for head, count in heads.items() if head[0] is not None or head[2]}
    if not others:
        return ""
    listed = ", ".join(f"{format_head(head)} x{count}"
                       for head, count in sorted(others.items(), key=lambda item: -item[1]))
    kinds: set[str] = set()
    for flag, _, low_information in others:
        kinds.update(["flagged"] if flag is not None else map(str, low_information))
    meanings = [meaning for kind, meaning in (
        ("flagged", "flagged: not classified"),
        ("few_frames", "few_frames: classified, on fewer frames than the model's validated minimum"),
        ("near_uniform", "near_uniform: classified, but its probabilities are close to uniform"),
    ) if kind in kinds]
    return (f"{sum(others.values())} of {total} object(s) not ok: {listed} ("
            + "; ".join(meanings + ["see the status column and docs/usage.md"]) + ")")


def default_output(catalog: str | Path) -> Path:
    """Where the results of ``catalog`` go when no output is named: ``CATALOG.predictions.fits`` beside it."""
    catalog = Path(catalog)
    return catalog.with_name(f"{catalog.stem}.predictions.fits")


def check_output(output: Path, catalog: Path, overwrite: bool) -> None:
    """Errors about the output file, before any work: usage (exit 2), an unwritable folder (exit 3)."""
    output_path(output)  # a name too long for a file
    if output.suffix.lower() not in FORMATS:
        raise UsageError(f"{output}: output must end in .fits, .csv or .parquet")
    if not output.parent.is_dir():
        raise UsageError(f"{output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise UsageError(f"{output}: is a folder; choose a file name")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise output_error(output, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    if output.exists():
        if catalog.exists() and output.samefile(catalog):
            raise UsageError(f"{output}: is the input catalog; choose another output")
        if not overwrite:
            raise UsageError(f"{output}: exists already (add --overwrite to replace it)")


def classify_catalog(
    catalog: str | Path,
    output: str | Path | None = None,
    *,
    model: str | Path | None = None,
    device: Device | str = Device.auto,
    batch_size: int = 64,
    threads: int | None = None,
    chunk_size: int = 256,
    stamp_policy: StampPolicy | str = StampPolicy.error,
    on_invalid: OnInvalid | str = OnInvalid.flag,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ClassifyReport:
    """Classify every object of a catalog; one output row per object.

    Parameters
    ----------
    catalog : str or Path
        The catalog file.
    output : str or Path, optional
        ``.fits``, ``.csv`` or ``.parquet`` (default: :func:`default_output`).
    model : str or Path, optional
        Shipped ``NAME`` or ``NAME/VERSION``, or a ``.onnx`` path (default: the package's default model).
    device, batch_size, threads
        As for :class:`~convention_rt.classifier.Classifier`.
    chunk_size : int
        Objects read per chunk (bounds memory).
    stamp_policy, on_invalid
        As for :class:`~convention_rt.catalog.Catalog`; ``on_invalid`` applies to every flag.
    overwrite : bool
        Replace an existing output.
    progress : callable, optional
        Called as ``progress(rows_written, n_objects)`` once the model and the
        catalog are open (0 rows), then after each chunk.

    Returns
    -------
    ClassifyReport

    Raises
    ------
    UsageError
        A bad option or output (before any work).
    ModelError
        No such model, or a runtime that cannot serve it.
    CatalogError
        A catalog that breaks the format; under ``on_invalid="raise"``, the first
        object that cannot be classified.  No output is left behind.
    """
    from convention_rt.catalog import Catalog
    from convention_rt.classifier import Classifier
    from convention_rt.registry import resolve_model
    from convention_rt.session import check_threads, load_card

    catalog = Path(catalog)
    output = default_output(catalog) if output is None else output_path(output)
    on_invalid = OnInvalid.parse(on_invalid, "on_invalid")
    stamp_policy = StampPolicy.parse(stamp_policy, "stamp_policy")
    check_threads(threads, "--threads")
    check_output(output, catalog, overwrite)
    started = time.perf_counter()
    # The catalog is checked before the model is loaded; the card it is checked with is read, not yet
    # checked against the model: the Classifier's session does that, so the model is opened once.
    entry = resolve_model(model)
    card = load_card(entry.model_path, verify=False)
    target = card.domain.photometry if card.domain is not None else None  # None: said once, by the caller
    with Catalog(catalog, stamp_size=card.stamp_size, stamp_policy=stamp_policy, on_invalid=on_invalid,
                 target=target) as opened:
        # the card as its file (or the model's metadata) says, so that a card not the model's is named
        classifier = Classifier(entry, device=device, threads=threads, batch_size=batch_size)
        card = classifier.card
        report = ClassifyReport(output=output, model=classifier.model, device=classifier.session.device,
                                classes=card.classes, domain_declared=card.domain is not None,
                                on_invalid=on_invalid, domain_problem=opened.domain_problem)
        with PredictionWriter(output, card.classes, id_width=opened.id_width, overwrite=overwrite,
                              provenance=classifier.provenance(catalog)) as writer:
            if progress is not None:
                progress(0, opened.n_objects)
            for predictions in classifier.predict_opened(opened, chunk_objects=chunk_size):
                writer.write(predictions)
                report.predicted.update(c for c in predictions.predicted if c)
                report.heads.update(status.head_values for status in predictions.statuses)
                report.flagged += int((~predictions.ok).sum())
                report.rows = writer.rows_written
                if progress is not None:
                    progress(writer.rows_written, opened.n_objects)
    report.seconds = time.perf_counter() - started
    return report
