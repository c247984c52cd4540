"""The Typer app of ``convention-rt``: its global options (``--version``, ``--debug``) and its commands.

Each command lives in its own module of :mod:`convention_rt.cli`; :func:`convention_rt.cli.main` runs the app.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from convention_rt._version import __version__
from convention_rt.cli import classify, ingest, models, sample, spark, validate
from convention_rt.cli.options import console

__all__ = ["app", "state"]

app = typer.Typer(
    name="convention-rt",
    help="Classify astronomical objects from image time series (ConvEntion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: Global options of the run: ``debug`` shows the traceback of errors.
state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"convention-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """Classify astronomical objects from image time series (ConvEntion)."""
    state["debug"] = debug


app.add_typer(ingest.app, name="ingest")
app.command("spark-classify")(spark.spark_classify)
app.command("validate")(validate.validate)
app.command("classify")(classify.classify)
app.command("info")(models.info)
app.command("models")(models.models)
app.command("sample")(sample.sample)
