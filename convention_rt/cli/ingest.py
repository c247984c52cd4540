"""``convention-rt ingest ztf|rubin``: build a catalog from alert packets (a Typer sub-app).

Errors are raised as :mod:`convention_rt.errors` classes; :func:`convention_rt.cli.main`
turns them into one-line messages and exit codes (1 bad input, 2 usage).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from convention_rt.ingest import IngestReport, IngestWarning, ingest_rubin, ingest_ztf
from convention_rt.policies import OnInvalidAlert, StampKind

__all__ = ["app"]

app = typer.Typer(
    name="ingest",
    help="Build a catalog from alert packets (ZTF, Rubin). Needs the optional ingest extra (fastavro, pyarrow).",
    no_args_is_help=True,
    add_completion=False,
)

Inputs = Annotated[list[Path], typer.Argument(
    metavar="INPUT", show_default=False,
    help="Alert packet files: Avro container files (one or many alerts) or Parquet tables.")]
Out = Annotated[Path, typer.Option("--out", "-o", show_default=False, help="The catalog FITS file to write.")]
StampOption = Annotated[StampKind, typer.Option("--stamp", help="Which cut-out becomes the stamp.")]
OnInvalidOption = Annotated[OnInvalidAlert, typer.Option(
    "--on-invalid",
    help="Invalid alert (corrupt or missing cut-out, unknown band, missing field) or unreadable file: "
         "drop and count it (skip), drop it with a warning line (warn), or stop with exit code 1 (raise).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")]


@app.command("ztf")
def ztf(inputs: Inputs, out: Out, stamp: StampOption = StampKind.science,
        on_invalid: OnInvalidOption = OnInvalidAlert.skip, overwrite: Overwrite = False) -> None:
    """ZTF alert packets (Avro or Fink-style Parquet) to a catalog with bands g,r,i."""
    _run(ingest_ztf, inputs, out, stamp, on_invalid, overwrite)


@app.command("rubin")
def rubin(inputs: Inputs, out: Out, stamp: StampOption = StampKind.science,
          on_invalid: OnInvalidOption = OnInvalidAlert.skip, overwrite: Overwrite = False) -> None:
    """Rubin alert packets (Avro) to a catalog with bands u,g,r,i,z,y."""
    _run(ingest_rubin, inputs, out, stamp, on_invalid, overwrite)


def _run(ingest: Callable[..., IngestReport], inputs: list[Path], out: Path, stamp: StampKind,
         on_invalid: OnInvalidAlert, overwrite: bool) -> None:
    with warnings.catch_warnings():  # this sub-app also runs on its own (typer.testing), without main()
        warnings.simplefilter("always", IngestWarning)
        warnings.showwarning = _echo_warning
        report = ingest(inputs, out, stamp=stamp, on_invalid=on_invalid, overwrite=overwrite)
    typer.echo(f"wrote {report.summary()}")
    for line in report.notes():
        typer.echo(f"warning: {line}", err=True)


def _echo_warning(message: Warning | str, *_: object, **__: object) -> None:
    typer.echo(f"warning: {message}", err=True)
