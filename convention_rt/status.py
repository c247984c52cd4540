"""What happened to each object on its way to the model: a typed status, formatted to text in one place.

An :class:`ObjectStatus` holds

* a flag (a :class:`Reason`, with the fields of the photometric contract at fault
  for ``out_of_domain`` and ``domain_unknown``): the object cannot be classified;
* the reasons of low information (``few_frames``, ``near_uniform``): the object
  is classified, but its class carries little information;
* counters (a :class:`Note` each): what was fixed or dropped on the way (epochs
  sorted, bad pixels, frames of unknown bands, ...), with the band names they
  concern.

Each stage adds to it: the catalog reader (:mod:`convention_rt.catalog`), the
transform stage (:mod:`convention_rt.transform`) and the classifier.
:func:`format_status` is the only place that turns it into the text of the
``status`` column (``ok``, ``low_information:<why>`` or ``flagged:<why>``, then
the notes, ``;``-separated), for the result tables their writers write
(:func:`format_head`, the text of its head alone, for summaries that count objects by it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from convention_rt.policies import Choice

__all__ = ["Head", "Note", "ObjectStatus", "Reason", "format_head", "format_status"]

STATUS_OK = "ok"


class Reason(Choice):
    """Why an object is flagged (not classified), or of low information (classified)."""

    # found by the catalog reader, or in objects given in memory
    duplicate_id = "duplicate_id"
    epoch_rows_out_of_range = "epoch_rows_out_of_range"
    no_epochs = "no_epochs"
    epoch_rows_belong_to_another_object = "epoch_rows_belong_to_another_object"
    non_finite_mjd = "non_finite_mjd"
    mjd_out_of_range = "mjd_out_of_range"
    out_of_domain = "out_of_domain"  # with the fields at fault: out_of_domain:survey,sky
    domain_unknown = "domain_unknown"  # with the fields not declared
    # found by the transform stage
    no_usable_frames = "no_usable_frames"
    all_frames_mostly_bad = "all_frames_mostly_bad"
    no_frames_in_model_bands = "no_frames_in_model_bands"
    # found by the classifier
    non_finite_output = "non_finite_output"
    few_frames = "few_frames"  # low information
    near_uniform = "near_uniform"  # low information


class Note(Choice):
    """What was fixed or dropped on the way: each a counter; in the order the status lists them."""

    domain_unknown = "domain_unknown"  # fields not declared, when others differ (names only)
    epochs_without_zero_point = "epochs_without_zero_point"
    unknown_band_frames = "unknown_band_frames"  # frames of bands the catalog does not declare (dropped)
    epochs_sorted_by_time = "epochs_sorted_by_time"  # (no count)
    bad_pixels = "bad_pixels"
    mostly_bad_frames_dropped = "mostly_bad_frames_dropped"
    bands_unknown_to_model = "bands_unknown_to_model"  # frames of bands the model does not know (dropped)


_NOTE_ORDER = {note: k for k, note in enumerate(Note)}

#: The head of a status as values, hashable (to count objects by it): (flag or None, its detail,
#: reasons of low information).  :func:`format_head` is its text.
Head = tuple[Reason | None, str, tuple[Reason, ...]]


@dataclass
class ObjectStatus:
    """The status of one object (mutable: each stage adds to it).

    Attributes
    ----------
    flag : Reason or None
        Why the object cannot be classified; None when it can.
    detail : str
        For ``out_of_domain`` and ``domain_unknown``: the fields, comma-separated.
    low_information : tuple of Reason
        ``few_frames`` and/or ``near_uniform``, once classified.
    counts : dict of Note to int
        What was fixed or dropped, and how many (frames, pixels, epochs).
    names : dict of Note to str
        The band (or field) names a note is about, ``/``-separated.
    """

    flag: Reason | None = None
    detail: str = ""
    low_information: tuple[Reason, ...] = ()
    counts: dict[Note, int] = field(default_factory=dict)
    names: dict[Note, str] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        """The object cannot be classified."""
        return self.flag is not None

    @property
    def flag_text(self) -> str:
        """``<reason>`` or ``<reason>:<detail>``; "" when not flagged."""
        if self.flag is None:
            return ""
        return f"{self.flag}:{self.detail}" if self.detail else str(self.flag)

    @property
    def head_values(self) -> Head:
        """The head of the status as values: ``(flag, detail, low_information)``."""
        return self.flag, self.detail, tuple(self.low_information)

    @property
    def head(self) -> str:
        """The first item of the status: ``ok``, ``flagged:<why>`` or ``low_information:<why>``."""
        return format_head(self.head_values)

    def flag_as(self, reason: Reason, detail: str = "") -> bool:
        """Flag the object unless it is flagged already (the first reason stays); True when it was flagged here.

        ``detail``: for ``out_of_domain`` and ``domain_unknown``, the fields at fault, comma-separated.
        """
        if self.flag is not None:
            return False
        self.flag, self.detail = Reason(reason), detail
        return True

    def note(self, kind: Note, count: int = 0, names: str = "") -> None:
        """Count ``count`` more of ``kind`` (with the names it concerns)."""
        self.counts[kind] = self.counts.get(kind, 0) + int(count)
        if names:
            self.names[kind] = names

    def copy(self) -> ObjectStatus:
        """An independent copy."""
        return ObjectStatus(self.flag, self.detail, self.low_information, dict(self.counts), dict(self.names))

    def notes(self) -> list[str]:
        """The notes as the status lists them, e.g. ``["epochs_sorted_by_time", "bad_pixels=3"]``."""
        items = []
        for kind in sorted(self.counts, key=_NOTE_ORDER.__getitem__):
            count, names = self.counts[kind], self.names.get(kind, "")
            if kind is Note.epochs_sorted_by_time:
                items.append(str(kind))
            elif kind is Note.domain_unknown:
                items.append(f"{kind}={names}")
            else:
                items.append(f"{kind}={count}" + (f"({names})" if names else ""))
        return items

    def __str__(self) -> str:
        return format_status(self)


def format_head(head: Head) -> str:
    """The text of the head of a status: ``ok``, ``flagged:<reason>[:<detail>]`` or ``low_information:<why>``."""
    flag, detail, low_information = head
    if flag is not None:
        return f"flagged:{flag}:{detail}" if detail else f"flagged:{flag}"
    if low_information:
        return "low_information:" + ",".join(low_information)
    return STATUS_OK


def format_status(status: ObjectStatus) -> str:
    """The text of a status: its head (``ok``, ``flagged:<why>``, ``low_information:<why>``), then its notes.

    The only place a status becomes text: the ``status`` column of every result table.
    """
    return ";".join([status.head, *status.notes()])
