"""The model's domain on its card: what it was trained on, and below what its outputs carry little information.

A card's :class:`~convention_rt.model_card.Domain` is made of

* the training catalog's photometric contract (survey profile, pixel scale, flux
  unit and zero point, sky, stamp kind: :func:`catalog_photometry`) and the fewest
  and most frames per object it gave the model (:func:`frames_range`), which
  ``train.fit`` records in the provenance as ``training_domain``;
* the validated minimum of frames, chosen by :func:`min_frames_from_early` from
  the model's early-classification curve (``python -m train.early``: macro-F1
  against the first k frames) when the card's metrics hold one: **the smallest k
  whose macro-F1 is within** :data:`EARLY_MARGIN` **(0.05) of the macro-F1 at the
  largest k measured** (the full window).  Without a curve it is the fewest
  frames of a training object: the model never saw fewer (its frame drops aside).

Export adds it to every card (:func:`card_with_domain`).  For exports made
before cards carried a domain::

    python -m train.domain exports/convention-compact/1.1.0 --catalog /work/data/plasticc.fits \\
        [--early runs/compact-4class-1.1.0/early.json]

rewrites ``card.json`` and the card embedded in ``model.onnx`` with the domain
added (the graph is kept as it is; the card's ``sha256`` becomes the new file's),
after checking that the catalog is the one the card names (same header).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convention_rt.catalog import Catalog
from convention_rt.errors import ConventionError, ModelError
from convention_rt.model_card import Domain, ModelCard, sha256_of
from convention_rt.photometry import HEADER_KEYWORDS, Photometry
from train.data.plasticc import declared_photometry

__all__ = ["EARLY_MARGIN", "add_domain", "card_with_domain", "catalog_photometry", "early_curve", "frames_range",
           "main", "make_domain", "min_frames_from_early", "training_domain"]

log = logging.getLogger("train")

EARLY_MARGIN = 0.05
"""Largest shortfall of macro-F1 below the full window's that still counts as validated."""

#: Header keywords that describe how a catalog was made, compared with a card's ``training_data``.
_IDENTITY_KEYWORDS = ("SOURCE", "GENERATR", "SEED", "NOBJ", "WHEELSHA", "MAXEPO", "CLASSMAP")


def catalog_photometry(path: str | Path) -> Photometry:
    """The photometric contract of a training catalog.

    What its header declares; for a catalog written by ``train.data.plasticc``
    before the contract keywords existed, what that builder renders
    (:func:`train.data.plasticc.declared_photometry`) completes it.

    Raises
    ------
    ValueError
        The contract stays incomplete, or the header contradicts the builder's.
    """
    with Catalog(path) as catalog:
        declared, header = catalog.photometry, catalog.header
    if declared.complete:
        return declared
    builder = declared_photometry(header)
    if builder is None:
        raise ValueError(f"{path}: the catalog does not declare {', '.join(declared.undeclared())} of its "
                         f"photometric contract: add them to its primary header")
    values = {}
    for name in ("profile", "pixel_scale", "flux_unit", "zero_point", "sky_subtracted", "stamp_kind"):
        mine, theirs = getattr(declared, name), getattr(builder, name)
        if mine is not None and mine != theirs:
            raise ValueError(f"{path}: {HEADER_KEYWORDS[name]} = {mine!r}, but its builder renders {theirs!r}")
        values[name] = theirs
    return Photometry(**values)


def frames_range(path: str | Path, seq_len: int) -> tuple[int, int]:
    """Fewest and most frames per object of a catalog, the most capped at ``seq_len``."""
    with Catalog(path) as catalog:
        counts = catalog.epochs_per_object()
    counts = counts[counts > 0]
    if not counts.size:
        raise ValueError(f"{path}: no object has epochs")
    return int(min(counts.min(), seq_len)), int(min(counts.max(), seq_len))


def training_domain(path: str | Path, seq_len: int) -> dict[str, Any] | None:
    """What ``train.fit`` records of its catalog: ``{"photometry": ..., "frames_range": [low, high]}``.

    None (with a warning in the log) for a catalog whose photometric contract is
    incomplete: its model's card then declares no domain.
    """
    try:
        photometry = catalog_photometry(path)
    except ValueError as exc:
        log.warning("%s; the model's card will declare no domain", exc)
        return None
    return {"photometry": photometry.to_dict(), "frames_range": list(frames_range(path, seq_len))}


def min_frames_from_early(frames_seen: Sequence[int], macro_f1: Sequence[float],
                          margin: float = EARLY_MARGIN) -> tuple[int, str]:
    """The smallest k whose macro-F1 is within ``margin`` of the macro-F1 at the largest k.

    Parameters
    ----------
    frames_seen : sequence of int
        k, increasing (e.g. 1, 2, 3, 5, 10, 20, 50, 99).
    macro_f1 : sequence of float
        Macro-F1 at each k (mean over folds).
    margin : float

    Returns
    -------
    (int, str)
        k, and the rule with its numbers, for the card.
    """
    frames = [int(k) for k in frames_seen]
    scores = [float(f) for f in macro_f1]
    if not frames or len(frames) != len(scores) or frames != sorted(set(frames)):
        raise ValueError(f"an early-classification curve needs increasing frames_seen and one macro-F1 each, got "
                         f"{frames_seen} and {macro_f1}")
    full = scores[-1]
    k, score = next((k, f) for k, f in zip(frames, scores) if f >= full - margin)
    return k, (f"smallest k of the early-classification curve whose macro-F1 ({score:.3f}) is within {margin:g} "
               f"of the full window's ({full:.3f} at k={frames[-1]})")


def early_curve(source: Mapping[str, Any]) -> tuple[list[int], list[float]] | None:
    """(frames_seen, mean macro-F1) of a card's ``metrics["early"]`` or of an ``early.json``; None without one."""
    if "per_fold" in source:  # early.json, as train.early writes it
        folds = source["per_fold"]
        if not folds:
            return None
        return [int(k) for k in source["frames_seen"]], np.mean([f["macro_f1"] for f in folds], axis=0).tolist()
    early = source.get("early") if "early" in source else None
    if not early:
        return None
    return [int(k) for k in early["frames_seen"]], [float(v) for v in early["macro_f1"]["mean"]]


def make_domain(training: Mapping[str, Any], early: tuple[Sequence[int], Sequence[float]] | None) -> Domain:
    """The :class:`Domain` of a model from its ``training_domain`` record and its early curve (or None)."""
    photometry = Photometry.from_dict(training["photometry"])
    low, high = (int(v) for v in training["frames_range"])
    if early is not None:
        min_frames, rule = min_frames_from_early(*early)
    else:
        min_frames, rule = low, "fewest frames of a training object (no early-classification curve measured)"
    return Domain(photometry=photometry, frames_range=(low, high), min_frames=min_frames, min_frames_rule=rule)


def card_with_domain(card: ModelCard) -> ModelCard:
    """``card`` with its domain, from its provenance (and its early curve, if its metrics have one).

    The training catalog's record is ``provenance["training_domain"]`` (written
    by ``train.fit``); for older provenances, the catalog of
    ``provenance["config"]["catalog"]`` when it still exists and its header is
    the one ``provenance["training_data"]`` recorded.  Without either, the card
    is returned unchanged (it declares no domain).
    """
    training = card.provenance.get("training_domain")
    if training is None:
        catalog = card.provenance.get("config", {}).get("catalog")
        if catalog and Path(catalog).is_file() and _same_catalog(Path(catalog), card) is None:
            training = training_domain(catalog, card.seq_len)
    if training is None:
        return card
    return dataclasses.replace(card, domain=make_domain(training, early_curve(card.metrics)))


def _same_catalog(path: Path, card: ModelCard) -> str | None:
    """Why ``path`` is not the catalog ``card`` was trained on (None when its header matches the record)."""
    recorded = card.provenance.get("training_data", {})
    with Catalog(path) as catalog:
        header = catalog.header
    for keyword in _IDENTITY_KEYWORDS:
        if keyword in recorded and header.get(keyword) != recorded[keyword]:
            return f"{keyword} = {header.get(keyword)!r}, the card's training data had {recorded[keyword]!r}"
    # the benchmark's scene: catalogs written before the keyword existed are standard ones
    scene, recorded_scene = header.get("SCENE", "standard"), recorded.get("SCENE", "standard")
    if scene != recorded_scene:
        return f"SCENE = {scene!r}, the card's training data had {recorded_scene!r}"
    if not any(keyword in recorded for keyword in _IDENTITY_KEYWORDS):
        return "the card records no header of its training catalog to compare with"
    return None


def add_domain(export_dir: str | Path, catalog: str | Path, *, early: str | Path | None = None) -> ModelCard:
    """Write the domain into an export's ``card.json`` and the card embedded in its ``model.onnx``.

    The graph is kept; every other field of both cards is kept; the card's
    ``sha256`` becomes the new model file's.  The folder is replaced as a whole
    (``model.onnx`` and ``card.json`` together), so a reader never sees one
    without the other.

    Parameters
    ----------
    export_dir : str or Path
        A folder holding ``model.onnx`` and ``card.json``.
    catalog : str or Path
        The training catalog (its header must match the card's ``training_data``).
    early : str or Path, optional
        An ``early.json`` of the model's run; by default the card's ``metrics["early"]``, if any.

    Returns
    -------
    ModelCard
        The new ``card.json``.

    Raises
    ------
    ModelError
        The export is damaged (the model's sha256 is not the card's), has no
        embedded card, or ``catalog`` is not its training catalog.
    """
    import onnx

    from convention_rt.session import CARD_METADATA_KEY
    from train.export import (  # train.export imports this module
        _install,
        _save_with_card,
    )

    export_dir, catalog = Path(export_dir), Path(catalog)
    card_file, model_file = export_dir / "card.json", export_dir / "model.onnx"
    card = ModelCard.load(card_file)
    if card.sha256 and sha256_of(model_file) != card.sha256:
        raise ModelError(f"{model_file}: sha256 differs from {card_file}'s: not an intact export")
    why = _same_catalog(catalog, card)
    if why is not None:
        raise ModelError(f"{catalog}: not the training catalog of {card_file} ({why})")
    training = training_domain(catalog, card.seq_len)
    if training is None:
        raise ModelError(f"{catalog}: its photometric contract is incomplete; declare it in its header first")
    if early is not None:
        curve = early_curve(json.loads(Path(early).read_text()))
        if curve is None:
            raise ModelError(f"{early}: no finished fold in this early-classification curve")
    else:
        curve = early_curve(card.metrics)
    domain = make_domain(training, curve)
    proto = onnx.load(str(model_file))
    text = next((p.value for p in proto.metadata_props if p.key == CARD_METADATA_KEY), None)
    if text is None:
        raise ModelError(f"{model_file}: no card embedded in its metadata")
    embedded = ModelCard.from_json(text, f"{model_file} (metadata)")
    version = max(embedded.format_version, 2)
    with tempfile.TemporaryDirectory(dir=export_dir.parent, prefix=f".{export_dir.name}.") as scratch:
        built = Path(scratch) / "with-domain"
        built.mkdir()
        _save_with_card(proto, dataclasses.replace(embedded, domain=domain, format_version=version),
                        built / "model.onnx")
        final = dataclasses.replace(card, domain=domain, format_version=version, sha256=sha256_of(built / "model.onnx"))
        (built / "card.json").write_text(final.to_json(), encoding="utf-8")
        _install(built, export_dir, overwrite=True)
    return final


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m train.domain EXPORT_DIR... --catalog CATALOG [--early EARLY_JSON]``."""
    parser = argparse.ArgumentParser(prog="python -m train.domain", description=__doc__.split("\n")[0])
    parser.add_argument("exports", type=Path, nargs="+", metavar="EXPORT_DIR")
    parser.add_argument("--catalog", type=Path, required=True, help="the training catalog")
    parser.add_argument("--early", type=Path, default=None, help="early.json of the model's run")
    options = parser.parse_args(argv)
    try:
        for folder in options.exports:
            card = add_domain(folder, options.catalog, early=options.early)
            domain = card.domain
            print(f"{folder}: {domain.photometry.describe()}; frames {domain.frames_range[0]}-"
                  f"{domain.frames_range[1]}; min_frames {domain.min_frames} ({domain.min_frames_rule}); "
                  f"sha256 {card.sha256}")
    except (ConventionError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
