"""``convention-rt validate``: check a catalog (for a model or none) and print what it holds."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from convention_rt.cli.options import CatalogArgument, OnInvalidOption, StampPolicyOption, console, warn
from convention_rt.policies import OnInvalid, StampPolicy
from convention_rt.validate import CatalogSummary, validate_catalog

__all__ = ["validate"]


def validate(
    catalog: CatalogArgument,
    model: Annotated[Optional[str], typer.Option(
        help="Also check the catalog against this model's contract (shipped NAME or NAME/VERSION, or a .onnx "
             "path): its stamp size, its training domain (photometry) and its validated minimum of frames; "
             "nothing is classified.", show_default=False)] = None,
    stamp_size: Annotated[Optional[int], typer.Option(
        help="Stamp side the model needs (default: the --model's, else 32).", min=1, show_default=False)] = None,
    stamp_policy: StampPolicyOption = StampPolicy.error,
    on_invalid: OnInvalidOption = OnInvalid.flag,
) -> None:
    """Check a catalog and print a summary; exit 1 when objects are flagged or the catalog has problems.

    With --model, objects the model could not classify meaningfully (out of its
    domain, fewer frames than its validated minimum) count as problems too.
    """
    summary = validate_catalog(catalog, model=model, stamp_size=stamp_size, stamp_policy=stamp_policy,
                               on_invalid=on_invalid)
    card = summary.card
    if card is not None and card.domain is None:
        warn(f"{card.name}/{card.version} declares no training domain: the catalog's photometry cannot be "
             f"checked against it")
    _print_summary(summary)
    if summary.n_invalid:
        typer.echo(f"{catalog}: {summary.n_invalid} object(s) cannot be classified (see problems)", err=True)
        raise typer.Exit(1)
    if not summary.ok:
        typer.echo(f"{catalog}: {len(summary.problems)} problem(s) of the catalog as a whole (see problems)",
                   err=True)
        raise typer.Exit(1)
    if summary.low_information:
        count = sum(summary.low_information.values())
        typer.echo(f"{catalog}: {count} object(s) have fewer frames than the model's validated minimum "
                   f"({card.domain.min_frames}): their classes would be low_information", err=True)
        raise typer.Exit(1)


def _print_summary(summary: CatalogSummary) -> None:
    console.print(summary.path, markup=False, soft_wrap=True)
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
    table.add_row("bad pixels", f"{summary.bad_pixels} (NaN, inf or out of range, replaced by the stamp "
                  f"background)")
    table.add_row("photometry", summary.photometry.describe())
    if summary.domain is not None:
        table.add_row("model domain", summary.domain.reason or "in the model's domain")
    console.print(table)
    if summary.ok and not summary.notes and not summary.low_information:
        console.print("problems: none")
        return
    console.print("problems:")
    for problem in summary.problems:
        console.print(f"  catalog {problem}", markup=False, soft_wrap=True)
    for counter, kind in ((summary.invalid, "flagged"), (summary.notes, "fixed")):
        for problem, count in sorted(counter.items()):
            examples = ", ".join(summary.examples.get(problem, []))
            console.print(f"  {kind:7s} {problem}: {count} object(s), e.g. {examples}", markup=False,
                          soft_wrap=True)
    for why, count in sorted(summary.low_information.items()):
        examples = ", ".join(summary.examples.get(f"low_information:{why}", []))
        console.print(f"  low-info low_information:{why}: {count} object(s), e.g. {examples}", markup=False,
                      soft_wrap=True)
