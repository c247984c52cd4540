"""``convention-rt validate``: read a whole catalog and count what it holds, for a model or none.

:func:`validate_catalog` is the library call of the command: it finds the
model (if any), opens the catalog for it and returns a :class:`CatalogSummary`;
:func:`summarise` counts an opened catalog.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convention_rt.catalog import Catalog
from convention_rt.errors import UsageError
from convention_rt.model_card import ModelCard
from convention_rt.photometry import DomainCheck, Photometry
from convention_rt.policies import OnInvalid, StampPolicy, apply_on_invalid
from convention_rt.preprocess import Sequences, allocate_sequences
from convention_rt.status import Note, Reason
from convention_rt.transform import to_frames, to_inputs

__all__ = ["CatalogSummary", "summarise", "validate_catalog"]

#: Stamp side read when neither a model nor a size is given (that of the ConvEntion models).
DEFAULT_STAMP_SIZE = 32
#: Objects per chunk when the model's inputs are built (as ``classify`` reads them): bounds memory.
MODEL_CHUNK_OBJECTS = 256
#: Object ids kept as examples of each problem.
EXAMPLES_PER_PROBLEM = 5


@dataclass
class CatalogSummary:
    """What :func:`summarise` found in a catalog.

    ``invalid`` and ``notes`` count objects per problem; ``problems`` holds one
    line per problem of the catalog as a whole (:attr:`Catalog.problems`).
    Read for a model (``summarise(..., card=...)``), ``low_information`` counts
    the objects the model would see fewer frames of than its validated minimum,
    and ``domain`` says how the catalog's photometry relates to the model's
    (``card``, None when read for no model).
    """

    path: str
    layout: str
    stamp_shape: tuple[int, int]
    n_objects: int = 0
    n_epochs: int = 0
    n_frames: int = 0
    frames_per_band: Counter = field(default_factory=Counter)
    classes: Counter = field(default_factory=Counter)
    typing: Counter = field(default_factory=Counter)
    invalid: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    bad_pixels: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    photometry: Photometry = field(default_factory=Photometry)
    domain: DomainCheck | None = None
    low_information: Counter = field(default_factory=Counter)
    card: ModelCard | None = None

    @property
    def n_invalid(self) -> int:
        """Objects that cannot be classified."""
        return sum(self.invalid.values())

    @property
    def ok(self) -> bool:
        """No object is flagged and the catalog as a whole has no problem."""
        return not self.n_invalid and not self.problems


def summarise(catalog: Catalog, max_objects: int = 1024, *, card: ModelCard | None = None) -> CatalogSummary:
    """Read a whole catalog, chunk by chunk, and count what it holds.

    Each chunk goes through the transform stage as it would to be classified:
    :func:`~convention_rt.transform.to_frames`, then, for a model,
    :func:`~convention_rt.transform.to_inputs` (its bands: objects with no frame
    in them are flagged ``no_frames_in_model_bands``) and its domain's
    ``min_frames`` (``low_information:few_frames``).  The catalog's
    ``on_invalid`` policy applies once per chunk, after the last check, as
    ``classify`` applies it (nothing is classified, so ``near_uniform`` is not known).

    Parameters
    ----------
    catalog : Catalog
        Opened with ``target=card.domain.photometry`` to check it against a model's domain.
    max_objects : int
        Objects per chunk (at most :data:`MODEL_CHUNK_OBJECTS` with a ``card``: the model's inputs are built).
    card : ModelCard, optional
        The model the catalog is meant for: objects of which the model would see
        fewer frames (in its bands, at most its ``seq_len``) than its domain's
        ``min_frames`` are counted in ``low_information["few_frames"]``.

    Returns
    -------
    CatalogSummary

    Raises
    ------
    CatalogError
        Under ``on_invalid="raise"``, at the first object flagged (or, for a
        model, of low information).
    """
    summary = CatalogSummary(path=str(catalog.path), layout=catalog.layout,
                             stamp_shape=catalog.stamp_shape,
                             n_objects=catalog.n_objects, n_epochs=catalog.n_epochs,
                             problems=list(catalog.problems), photometry=catalog.photometry,
                             domain=catalog.domain, card=card)
    domain = card.domain if card is not None else None
    if card is not None:
        max_objects = min(max_objects, MODEL_CHUNK_OBJECTS)
    buffers: Sequences | None = None
    for epochs in catalog.iter_epochs(max_objects=max_objects):
        chunk = to_frames(epochs)
        del epochs  # at most one chunk's stamps in two copies
        statuses = chunk.statuses
        inputs = None
        if card is not None:
            if buffers is None or buffers.stamps.shape[0] != len(chunk):
                buffers = allocate_sequences(len(chunk), card.seq_len, card.stamp_size, card.stamp_size)
            inputs = to_inputs(chunk, card, out=buffers)
            statuses = inputs.statuses
            if domain is not None:
                few = domain.few_frames(inputs.sequences.n_frames) & inputs.valid
                inputs.low_information = [(Reason.few_frames,) if f else () for f in few]
        apply_on_invalid(catalog.on_invalid, statuses, chunk.object_ids, source=catalog.path,
                         said=catalog.domain_flag,
                         low_information=None if inputs is None else
                         (lambda i, inputs=inputs: inputs.why_low_information(i, domain)))
        summary.n_frames += chunk.frames.shape[0]
        summary.bad_pixels += int(chunk.n_bad.sum())
        for index, frames in zip(*np.unique(chunk.band, return_counts=True)):
            summary.frames_per_band[catalog.bands[index]] += int(frames)
        if chunk.labels is not None:
            summary.classes.update(str(label) or "(none)" for label in chunk.labels)
        if chunk.typing is not None:
            summary.typing.update(str(kind) or "(none)" for kind in chunk.typing)
        for i, status in enumerate(statuses):
            if status.flagged:
                summary.invalid[status.flag_text] += 1
                _example(summary, status.flag_text, chunk.object_ids[i])
            for why in status.low_information:
                summary.low_information[why.value] += 1
                _example(summary, f"low_information:{why}", chunk.object_ids[i])
            for note in sorted(status.counts, key=list(Note).index):
                summary.notes[note.value] += 1
                _example(summary, note.value, chunk.object_ids[i])
    return summary


def _example(summary: CatalogSummary, problem: str, object_id: object) -> None:
    """Keep ``object_id`` as an example of ``problem`` (the first few only)."""
    examples = summary.examples.setdefault(problem, [])
    if len(examples) < EXAMPLES_PER_PROBLEM:
        examples.append(str(object_id))


def validate_catalog(path: str | Path, *, model: str | Path | None = None, stamp_size: int | None = None,
                     stamp_policy: StampPolicy | str = StampPolicy.error,
                     on_invalid: OnInvalid | str = OnInvalid.flag) -> CatalogSummary:
    """Check a catalog, for a model or none, and count what it holds.

    Parameters
    ----------
    path : str or Path
        The catalog.
    model : str or Path, optional
        A shipped model (``NAME`` or ``NAME/VERSION``) or a ``.onnx`` path: the
        catalog is read at its stamp size, checked against its training domain
        (photometry), and objects it would see fewer frames of than its
        validated minimum are counted (``low_information``).  Nothing is classified.
    stamp_size : int, optional
        Stamp side to read (default: the model's, else 32); with ``model`` it
        must be the model's.
    stamp_policy, on_invalid : str
        As for :class:`~convention_rt.catalog.Catalog`.

    Returns
    -------
    CatalogSummary

    Raises
    ------
    UsageError
        ``stamp_size`` other than the model's.
    ModelError
        No such model.
    CatalogError
        A file that breaks the catalog format (and, under ``on_invalid="raise"``,
        the first object that cannot be classified).
    """
    card = None
    if model is not None:
        from convention_rt.registry import resolve_model
        from convention_rt.session import load_card

        card = load_card(resolve_model(model).model_path)
    if card is not None and stamp_size is not None and stamp_size != card.stamp_size:
        raise UsageError(f"--stamp-size {stamp_size} differs from the model's {card.stamp_size}; leave it out")
    size = card.stamp_size if card is not None else (stamp_size or DEFAULT_STAMP_SIZE)
    target = card.domain.photometry if card is not None and card.domain is not None else None
    with Catalog(path, stamp_size=size, stamp_policy=stamp_policy, on_invalid=on_invalid, target=target) as opened:
        return summarise(opened, card=card)
