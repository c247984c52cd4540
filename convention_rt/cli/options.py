"""What the commands share: their options (each policy's values come from :mod:`convention_rt.policies`)
and the console they print to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from convention_rt.policies import OnInvalid, StampPolicy
from convention_rt.registry import DEFAULT_MODEL

__all__ = ["CatalogArgument", "ModelOption", "OnInvalidOption", "StampPolicyOption", "console", "warn"]

#: Standard output of the commands (no colouring of numbers and paths).
console = Console(highlight=False)

CatalogArgument = Annotated[Path, typer.Argument(help="Catalog FITS file.", show_default=False, metavar="CATALOG")]
ModelOption = Annotated[Optional[str], typer.Option(
    help=f"Shipped model NAME or NAME/VERSION, or path to a .onnx file (default: {DEFAULT_MODEL})",
    show_default=False)]
StampPolicyOption = Annotated[
    StampPolicy, typer.Option(help="Stamps of another size: refuse, centre-crop or centre-pad.")]
OnInvalidOption = Annotated[
    OnInvalid, typer.Option(help="Objects that cannot be classified: flag, warn, or stop.")]


def warn(line: str) -> None:
    """One ``warning: ...`` line on standard error."""
    typer.echo(f"warning: {line}", err=True)


def warn_about_domain(model: str, domain_declared: bool, domain_problem: str, on_invalid: OnInvalid) -> None:
    """The warnings of a classification about the model's domain: none declared, or the catalog outside it.

    Under ``on_invalid="warn"`` the catalog reader has said the second already.
    """
    if not domain_declared:
        warn(f"{model} declares no training domain: the catalog's photometry was not checked against it, nor the "
             "information of its results")
    if domain_problem and on_invalid == OnInvalid.flag:
        warn(domain_problem)
