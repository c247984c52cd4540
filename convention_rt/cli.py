"""The ``convention-rt`` command line (Typer).  No logic of its own: it parses,
calls the library, prints, and maps errors to exit codes:
0 success, 1 bad input, 2 usage, 3 model or runtime error.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from convention_rt._version import __version__
from convention_rt.catalog import Catalog, CatalogSummary, summarise
from convention_rt.data import sample_catalog_path
from convention_rt.errors import ConventionError, UsageError
from convention_rt.ingest.cli import app as ingest_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="convention-rt",
    help="Classify astronomical objects from image time series (ConvEntion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(ingest_app, name="ingest")
_state = {"debug": False}
_out = Console(highlight=False)


class StampPolicy(str, Enum):
    error = "error"
    crop = "crop"
    pad = "pad"


class InvalidPolicy(str, Enum):
    flag = "flag"
    warn = "warn"
    raise_ = "raise"


def _version(value: bool) -> None:
    if value:
        _out.print(f"convention-rt {__version__}")
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
    _state["debug"] = debug


def _print_summary(summary: CatalogSummary) -> None:
    _out.print(summary.path, markup=False, soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    height, width = summary.stamp_shape
    table.add_row("layout", f"{summary.layout}, stamps {height}x{width}")
    table.add_row("objects", str(summary.n_objects))
    table.add_row("epochs", str(summary.n_epochs))
    table.add_row("frames", str(summary.n_frames) + "  (single-band, usable)")
    table.add_row("bands", ", ".join(f"{b}: {n}" for b, n in sorted(summary.frames_per_band.items())) or "-")
    table.add_row("classes", ", ".join(f"{c}: {n}" for c, n in sorted(summary.classes.items())) or "-")
    table.add_row("typing", ", ".join(f"{c}: {n}" for c, n in sorted(summary.typing.items())) or "-")
    table.add_row("bad pixels", f"{summary.bad_pixels} (NaN/inf, replaced by the stamp background)")
    _out.print(table)
    if not summary.invalid and not summary.notes:
        _out.print("problems: none")
        return
    _out.print("problems:")
    for counter, kind in ((summary.invalid, "flagged"), (summary.notes, "fixed")):
        for problem, count in sorted(counter.items()):
            examples = ", ".join(summary.examples.get(problem, []))
            _out.print(f"  {kind:7s} {problem}: {count} object(s), e.g. {examples}")


@app.command()
def validate(
    catalog: Annotated[Path, typer.Argument(help="Catalog FITS file.", show_default=False)],
    stamp_size: Annotated[int, typer.Option(help="Stamp side the model needs.", min=1)] = 32,
    stamp_policy: Annotated[
        StampPolicy, typer.Option(help="Stamps of another size: refuse, centre-crop or centre-pad.")
    ] = StampPolicy.error,
    on_invalid: Annotated[
        InvalidPolicy, typer.Option(help="Objects that cannot be classified: flag, warn, or stop.")
    ] = InvalidPolicy.flag,
) -> None:
    """Check a catalog and print a summary; exit 1 when objects are flagged."""
    with Catalog(catalog, stamp_size=stamp_size, stamp_policy=stamp_policy.value,
                 on_invalid=on_invalid.value) as opened:
        summary = summarise(opened)
    _print_summary(summary)
    if summary.n_invalid:
        typer.echo(f"{catalog}: {summary.n_invalid} object(s) cannot be classified (see problems)", err=True)
        raise typer.Exit(1)


@app.command()
def sample(
    out: Annotated[Path, typer.Argument(help="Where to write the copy.")] = Path("sample.fits"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a copy of the sample catalog that ships with the package."""
    if out.exists() and not overwrite:
        raise UsageError(f"{out}: exists already (add --overwrite to replace it)")
    source = sample_catalog_path()
    if not source.is_file():
        raise UsageError(f"{source}: the sample catalog is missing from this installation")
    temporary = out.with_name(f".{out.name}.part")
    try:
        temporary.write_bytes(source.read_bytes())
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)
    _out.print(f"wrote {out} ({source.stat().st_size / 1e6:.1f} MB)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    typer.echo(f"warning: {message}", err=True)


def main(args: list[str] | None = None) -> int:
    """Run the command line; returns (and, as a script, exits with) the exit code."""
    warnings.showwarning = _show_warning
    try:
        app(args=args, prog_name="convention-rt")  # standalone: always ends in SystemExit
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (ConventionError, OSError) as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo("error: " + " ".join(str(exc).split()), err=True)
        code = getattr(exc, "exit_code", 1)
    if args is None:
        sys.exit(code)
    return code
