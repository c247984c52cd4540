"""``convention-rt ingest ztf|rubin``: the Typer sub-app the main CLI mounts as ``ingest``.

Errors are raised as :mod:`convention_rt.errors` classes; the main CLI turns
them into one-line messages and exit codes (1 bad input, 2 usage).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from convention_rt.ingest import IngestReport, IngestWarning, ingest_rubin, ingest_ztf
from convention_rt.ingest.build import refuse_input_as_output

__all__ = ["app"]

app = typer.Typer(
    name="ingest",
    help="Build a catalog from alert packets (ZTF, Rubin). Needs the optional ingest extra (fastavro, pyarrow).",
    no_args_is_help=True,
    add_completion=False,
)


class Stamp(str, Enum):
    """Cut-out kind used as stamps."""

    science = "science"
    difference = "difference"
    template = "template"


class InvalidPolicy(str, Enum):
    """What to do with invalid input (alerts here; objects in the main commands)."""

    flag = "flag"
    warn = "warn"
    raise_ = "raise"


Inputs = Annotated[list[Path], typer.Argument(
    metavar="INPUT", show_default=False,
    help="Alert packet files: Avro container files (one or many alerts) or Parquet tables.")]
Out = Annotated[Path, typer.Option("--out", "-o", show_default=False, help="The catalog FITS file to write.")]
StampOption = Annotated[Stamp, typer.Option("--stamp", help="Which cut-out becomes the stamp.")]
OnInvalidOption = Annotated[InvalidPolicy, typer.Option(
    "--on-invalid",
    help="Invalid alert (corrupt or missing cut-out, unknown band, missing field) or unreadable file: "
         "skip and count it (flag), skip it with a warning line (warn), or stop with exit code 1 (raise).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")]


@app.command("ztf")
def ztf(inputs: Inputs, out: Out, stamp: StampOption = Stamp.science,
        on_invalid: OnInvalidOption = InvalidPolicy.flag, overwrite: Overwrite = False) -> None:
    """ZTF alert packets (Avro or Fink-style Parquet) to a catalog with bands g,r,i."""
    _run(ingest_ztf, inputs, out, stamp, on_invalid, overwrite)


@app.command("rubin")
def rubin(inputs: Inputs, out: Out, stamp: StampOption = Stamp.science,
          on_invalid: OnInvalidOption = InvalidPolicy.flag, overwrite: Overwrite = False) -> None:
    """Rubin alert packets (Avro) to a catalog with bands u,g,r,i,z,y."""
    _run(ingest_rubin, inputs, out, stamp, on_invalid, overwrite)


def _run(ingest: Callable[..., IngestReport], inputs: list[Path], out: Path, stamp: Stamp,
         on_invalid: InvalidPolicy, overwrite: bool) -> None:
    refuse_input_as_output(inputs, out)
    with warnings.catch_warnings():
        warnings.simplefilter("always", IngestWarning)
        warnings.showwarning = _echo_warning
        report = ingest(inputs, out, stamp=stamp.value, on_invalid=on_invalid.value, overwrite=overwrite)
    typer.echo(f"wrote {report.summary()}")
    for line in report.notes():
        typer.echo(f"warning: {line}", err=True)


def _echo_warning(message: Warning | str, *_: object, **__: object) -> None:
    typer.echo(f"warning: {message}", err=True)
