"""The choices a caller makes, each an enum defined once, for the Python API and the command line alike.

* :class:`OnInvalid`: what to do with an object that cannot be classified
  (``flag`` keeps it with a reason, ``warn`` also warns, ``raise`` stops);
* :class:`OnInvalidAlert`: what ``ingest`` does with an alert that cannot
  become an epoch (``skip`` drops and counts it, ``warn`` also warns,
  ``raise`` stops): an alert is never kept, so there is no ``flag`` here;
* :class:`StampPolicy`: stamps of another size than the model's (refuse,
  centre-crop, centre-pad);
* :class:`Device`: where ONNX Runtime runs;
* :class:`StampKind`: which cut-out of an alert is the stamp.

Every member is also its value (a ``str``), so ``OnInvalid.flag == "flag"``;
:meth:`Choice.parse` turns a caller's value into a member, or raises a
:class:`~convention_rt.errors.UsageError` naming the argument and the choices.

:func:`apply_on_invalid` applies an :class:`OnInvalid` policy to a batch of
objects once every check has run on them (after reading and transforming them
when they are only read, after classifying them otherwise), for catalogs and
objects in memory alike.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from convention_rt.errors import BadInputError, CatalogError, UsageError

if TYPE_CHECKING:
    from convention_rt.status import ObjectStatus, Reason

__all__ = ["Choice", "Device", "InvalidObjectWarning", "OnInvalid", "OnInvalidAlert", "StampKind", "StampPolicy",
           "apply_on_invalid"]

_C = TypeVar("_C", bound="Choice")


class Choice(str, Enum):
    """A member of a set of choices; its text is its value."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The accepted values, in order."""
        return tuple(member.value for member in cls)

    @classmethod
    def parse(cls: type[_C], value: object, name: str) -> _C:
        """``value`` as a member; a :class:`UsageError` naming ``name`` and the choices otherwise.

        Parameters
        ----------
        value : str or member
        name : str
            How the error names the argument, e.g. ``"on_invalid"``.
        """
        try:
            return cls(value)
        except ValueError:
            hint = cls._hint(value)
            raise UsageError(f"{name} must be one of {', '.join(cls.values())}, got {value!r}"
                             + (f" ({hint})" if hint else "")) from None

    @classmethod
    def _hint(cls, value: object) -> str:
        return ""


class OnInvalid(Choice):
    """An object that cannot be classified (or of low information): keep it flagged, also warn, or stop."""

    flag = "flag"
    warn = "warn"
    raise_ = "raise"


class OnInvalidAlert(Choice):
    """An alert (or an input file) that cannot become an epoch: drop and count it, also warn, or stop."""

    skip = "skip"
    warn = "warn"
    raise_ = "raise"

    @classmethod
    def _hint(cls, value: object) -> str:
        if value == "flag":
            return "an invalid alert cannot be kept in a catalog: 'skip' drops and counts it"
        return ""


class StampPolicy(Choice):
    """Stamps of another size than the model's: refuse them, centre-crop larger ones, centre-pad smaller ones."""

    error = "error"
    crop = "crop"
    pad = "pad"


class Device(Choice):
    """Where ONNX Runtime runs: CUDA when usable else the CPU (``auto``), the CPU, or CUDA."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class StampKind(Choice):
    """Which cut-out of an alert becomes the stamp (also the catalog's ``CUTOUT`` keyword)."""

    science = "science"
    difference = "difference"
    template = "template"


class InvalidObjectWarning(UserWarning):
    """An object flagged, or of low information, under ``on_invalid="warn"``."""


def apply_on_invalid(policy: OnInvalid | str, statuses: Sequence[ObjectStatus], object_ids: Sequence[Any], *,
                     source: str | Path | None = None, said: tuple[Reason, str] | None = None,
                     low_information: Callable[[int], str] | None = None) -> None:
    """Apply ``policy`` to the objects flagged (or of low information) in a batch whose checks are all done.

    ``flag`` does nothing (the statuses say it); ``warn`` gives one
    :class:`InvalidObjectWarning` per object; ``raise`` stops at the first one.
    The message names the source and the object: ``SOURCE: OBJECTS: object ID:
    what`` (``object ID: what`` for objects in memory).

    Parameters
    ----------
    policy : OnInvalid or str
    statuses : sequence of ObjectStatus
    object_ids : sequence
        The objects' ids, in the order of ``statuses``.
    source : str or Path, optional
        The catalog the objects come from.
    said : (Reason, str), optional
        A flag (reason, detail) said already for the whole source (out of the
        model's domain), skipped here.
    low_information : callable, optional
        ``low_information(i)``: why object ``i`` is of low information, in words;
        None: objects of low information are not objects to act on (not classified yet).

    Raises
    ------
    CatalogError
        Under ``raise``, for the first object, when there is a ``source``.
    BadInputError
        Under ``raise``, for the first object of objects in memory.
    """
    policy = OnInvalid.parse(policy, "on_invalid")
    if policy == OnInvalid.flag:
        return
    for i, status in enumerate(statuses):
        if status.flagged:
            if said is not None and (status.flag, status.detail) == said:
                continue
            what = status.flag_text.replace("_", " ")
        elif status.low_information and low_information is not None:
            what = f"low information ({', '.join(status.low_information)}): {low_information(i)}"
        else:
            continue
        object_id = object_ids[i]
        if policy == OnInvalid.raise_:
            if source is not None:
                raise CatalogError(str(source), what, hdu="OBJECTS", object_id=object_id)
            raise BadInputError(f"object {object_id}: {what}")
        where = f"{source}: OBJECTS: " if source is not None else ""
        warnings.warn(f"{where}object {object_id}: {what}", InvalidObjectWarning, stacklevel=3)
