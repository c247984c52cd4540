"""``convention-rt sample``: a copy of the sample catalog that ships with the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from convention_rt.cli.options import console
from convention_rt.data import write_sample_catalog

__all__ = ["sample"]


def sample(
    out: Annotated[Path, typer.Argument(help="Where to write the copy.")] = Path("sample.fits"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a copy of the sample catalog that ships with the package."""
    written = write_sample_catalog(out, overwrite=overwrite)
    console.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False, soft_wrap=True)
