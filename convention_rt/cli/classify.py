"""``convention-rt classify``: classify every object of a catalog into a result file, with a progress bar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from convention_rt.classify import classify_catalog
from convention_rt.cli.options import (CatalogArgument, ModelOption, OnInvalidOption, StampPolicyOption, console,
                                       warn, warn_about_domain)
from convention_rt.policies import Device, OnInvalid, StampPolicy

__all__ = ["classify"]


def classify(
    catalog: CatalogArgument,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Result file: .fits, .csv or .parquet (default: CATALOG.predictions.fits)",
        show_default=False)] = None,
    model: ModelOption = None,
    device: Annotated[Device, typer.Option(help="auto: CUDA when usable, else CPU.")] = Device.auto,
    batch_size: Annotated[int, typer.Option(help="Objects per inference call.", min=1)] = 64,
    threads: Annotated[Optional[int], typer.Option(
        help="ONNX Runtime threads, at most the CPUs available (default: all of them).", min=1,
        show_default=False)] = None,
    chunk_size: Annotated[int, typer.Option(help="Objects read per chunk (bounds memory).", min=1)] = 256,
    stamp_policy: StampPolicyOption = StampPolicy.error,
    on_invalid: OnInvalidOption = OnInvalid.flag,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Classify every object of a catalog; one output row per object."""
    started = time.perf_counter()
    progress = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} objects/s"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    task = progress.add_task("classify", total=None, rate="-")

    def advance(done: int, total: int) -> None:  # the bar shows once the model and the catalog are open
        if not progress.live.is_started:
            progress.start()
        rate = f"{done / (time.perf_counter() - started):,.0f}" if done else "-"
        progress.update(task, completed=done, total=total, rate=rate)

    try:
        report = classify_catalog(catalog, output, model=model, device=device, batch_size=batch_size,
                                  threads=threads, chunk_size=chunk_size, stamp_policy=stamp_policy,
                                  on_invalid=on_invalid, overwrite=overwrite, progress=advance)
    finally:
        if progress.live.is_started:
            progress.stop()
    console.print(f"wrote {report.output}: {report.rows} objects in {report.seconds:.1f} s "
                  f"({report.rows / report.seconds:,.0f} objects/s) with {report.model} on {report.device}",
                  markup=False, soft_wrap=True)
    console.print("classes: " + (", ".join(f"{c}: {report.predicted[c]}" for c in report.classes))
                  + f"; flagged: {report.flagged}")
    warn_about_domain(report.model, report.domain_declared, report.domain_problem, report.on_invalid)
    if report.not_ok:
        warn(report.not_ok)
