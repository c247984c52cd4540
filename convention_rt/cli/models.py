"""``convention-rt info`` and ``convention-rt models``: a model's card, and the models shipped."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Column, Table

from convention_rt.cli.options import console
from convention_rt.registry import DEFAULT_MODEL, list_models, open_card

__all__ = ["info", "models"]


def info(
    model: Annotated[Optional[str], typer.Argument(
        help=f"Shipped model NAME or NAME/VERSION, or path to a .onnx file (default: {DEFAULT_MODEL})",
        show_default=False)] = None,
) -> None:
    """Print a model's card: classes, bands, inputs, metrics and provenance."""
    entry, card = open_card(model)
    table = Table(show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # checksums and paths wrap instead of being cut
    table.add_row("model", f"{card.name} {card.version} (preset {card.preset}, {card.members} member(s))")
    table.add_row("file", str(entry.model_path))
    table.add_row("sha256", card.sha256)
    table.add_row("classes", ", ".join(card.classes))
    table.add_row("bands", ", ".join(card.bands))
    table.add_row("inputs", f"{card.seq_len} frames x {card.stamp_size}x{card.stamp_size}, window: "
                  f"{card.window}, time encoding: {'yes' if card.time_encoding else 'no'}")
    table.add_row("normalisation", ", ".join(f"{b}: {s.mean:.4g}±{s.std:.4g}" for b, s in card.normalisation.items()))
    domain = card.domain
    if domain is None:
        table.add_row("domain", "not declared (card format 1): catalogs are not checked against this model")
    else:
        table.add_row("domain", domain.photometry.describe())
        table.add_row("frames", f"{domain.frames_range[0]}-{domain.frames_range[1]} per object in training; "
                      f"low_information below {domain.min_frames} ({domain.min_frames_rule}) or within "
                      f"{domain.min_uniform_distance:g} of uniform probabilities")
    cv = card.metrics.get("cross_validation", {})
    if cv:
        table.add_row("metrics", f"accuracy {_score(cv['accuracy'], card.metrics)}, macro-F1 "
                      f"{_score(cv['macro_f1'], card.metrics)} "
                      f"({_folds_text(card.metrics)}, {card.metrics.get('evaluated_on', 'held-out data')})")
    early = card.metrics.get("early")
    if early:
        table.add_row("early", "macro-F1 on the first k frames: " + ", ".join(
            f"{k}: {v:.2f}" for k, v in zip(early["frames_seen"], early["macro_f1"]["mean"]))
            + f" ({early['folds']} folds)")
    calibration = card.metrics.get("calibration")
    if calibration:
        way = calibration["chosen"]
        text = f"temperature {calibration['temperature']:.3f}"
        if way != "none":
            text += (f" (fitted on {way.replace('_', ' ')}): held-out ECE {calibration['ece']['mean']:.3f} -> "
                     f"{calibration[way]['ece']['mean']:.3f}, NLL {calibration['nll']['mean']:.3f} -> "
                     f"{calibration[way]['nll']['mean']:.3f}")
        else:
            text += f" (none helped): held-out ECE {calibration['ece']['mean']:.3f}"
        table.add_row("calibration", text + f" ({calibration['folds']} folds)")
    provenance = card.provenance
    if "training_catalog" in provenance:
        data = provenance.get("training_data", {})
        made_by = ", ".join(str(data[k]) for k in ("SOURCE", "ORIGIN", "GENERATR") if k in data)
        table.add_row("training data", provenance["training_catalog"] + (f" ({made_by})" if made_by else ""))
    for key, label in (("catalog_sha256", "data sha256"), ("command", "command")):
        if key in provenance:
            table.add_row(label, str(provenance[key]))
    console.print(table)


def _score(value: dict, metrics: dict) -> str:
    """``mean ± std`` over folds; the value alone when there is one fold."""
    one_fold = metrics["cross_validation"].get("folds") == 1
    return f"{value['mean']:.4f}" if one_fold else f"{value['mean']:.4f} ± {value['std']:.4f}"


def _folds_text(metrics: dict) -> str:
    """``5-fold``, or ``2 of 5 folds`` while a cross-validation is incomplete."""
    done, planned = metrics["cross_validation"].get("folds", "?"), metrics.get("folds_planned")
    return f"{done}-fold" if planned in (None, done) else f"{done} of {planned} folds"


def models() -> None:
    """List the models shipped with the package."""
    entries = list_models()
    if not entries:
        console.print("no models are shipped with this installation")
        return
    table = Table(Column("name", no_wrap=True), "version", "preset", "classes", "held-out macro-F1")
    for entry in entries:
        card = entry.card()
        f1 = card.metrics.get("cross_validation", {}).get("macro_f1")
        table.add_row(entry.name, entry.version, card.preset, ", ".join(card.classes),
                      "-" if f1 is None else f"{_score(f1, card.metrics)} ({_folds_text(card.metrics)})")
    console.print(table)
