"""The photometric contract between data and a model: units, zero points, and what cannot be converted.

A model only means something on stamps like those it was trained on.  Both sides
declare what their stamps are, as a :class:`Photometry`:

* **survey profile** (``lsst``, ``ztf``, ...): the telescope, camera and filters;
* **pixel scale** in arcsec per pixel;
* **flux unit** and **zero point**: ``FLUXCAL`` (AB zero point 27.5), ``nJy``
  (AB zero point 31.4) or ``DN`` (detector counts, whose zero point is given per
  catalog or per epoch, as ZTF's ``magzpsci``);
* **sky**: whether the sky level was subtracted;
* **stamp kind**: ``science``, ``difference`` or ``template`` image.

The catalog carries its side in its primary header (:meth:`Photometry.header`);
the model card carries the model's (:class:`convention_rt.model_card.Domain`).

Units and zero points convert exactly: a flux ``f`` in a unit of zero point
``z1`` is ``f * 10**(0.4 * (z2 - z1))`` in a unit of zero point ``z2``
(:func:`flux_scale`), since an AB magnitude ``m`` is ``z - 2.5 log10(f)`` in
both.  The rest cannot be converted exactly (a pixel scale would need
resampling, a sky level an estimate, a difference image a reference), so
:func:`compare` names what differs: the object is then *out of the model's
domain* and is not classified.

>>> round(njy_to_fluxcal(1000.0), 4)   # 1000 nJy is AB 23.9, which is 27.54 FLUXCAL
27.5423
>>> round(counts_to_fluxcal(100.0, 26.0), 4)     # 100 counts at zero point 26 are AB 21.0
398.1072
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convention_rt.policies import StampKind
from convention_rt.status import Reason

__all__ = [
    "FIXED_ZERO_POINTS",
    "FLUXCAL_ZERO_POINT",
    "FLUX_UNITS",
    "HEADER_KEYWORDS",
    "NJY_ZERO_POINT",
    "PIXEL_SCALE_RTOL",
    "ZERO_POINT_RANGE",
    "STAMP_KINDS",
    "ZERO_POINT_COLUMN",
    "DomainCheck",
    "Photometry",
    "compare",
    "counts_to_fluxcal",
    "flux_scale",
    "fluxcal_to_njy",
    "njy_to_fluxcal",
]

FLUXCAL_ZERO_POINT = 27.5
"""AB magnitude of a flux of 1 FLUXCAL (the SNANA / PLAsTiCC unit)."""

NJY_ZERO_POINT = 31.4
"""AB magnitude of 1 nJy: ``-2.5 log10(1e-9 Jy / 10**(-48.6/2.5 + 23) Jy)`` = 31.4 exactly (AB's -48.60)."""

FLUX_UNITS: tuple[str, ...] = ("FLUXCAL", "nJy", "DN")
"""Flux units a catalog may declare: FLUXCAL, nanojansky, detector counts (data numbers)."""

FIXED_ZERO_POINTS: dict[str, float] = {"FLUXCAL": FLUXCAL_ZERO_POINT, "nJy": NJY_ZERO_POINT}
"""Units whose zero point is part of their definition; ``DN`` has none of its own."""

STAMP_KINDS: tuple[str, ...] = StampKind.values()

PIXEL_SCALE_RTOL = 0.02
"""Pixel scales within 2% of each other are the same; anything else would need resampling."""

#: The primary-header keywords of the contract, by field.  A per-epoch zero point is the
#: ``MAGZP`` column of ``EPOCHS`` instead of the ``MAGZP`` keyword.
HEADER_KEYWORDS: dict[str, str] = {
    "profile": "PROFILE", "pixel_scale": "PIXSCALE", "flux_unit": "FLUXUNIT", "zero_point": "MAGZP",
    "sky_subtracted": "SKYSUB", "stamp_kind": "CUTOUT",
}
ZERO_POINT_COLUMN = "MAGZP"

#: What :func:`compare` calls each field in an ``out_of_domain:<what>`` flag.
FLAG_NAMES: dict[str, str] = {
    "profile": "survey", "pixel_scale": "pixel_scale", "flux_unit": "flux_unit", "zero_point": "zero_point",
    "sky_subtracted": "sky", "stamp_kind": "stamp_kind",
}


#: Open range (AB mag) of plausible zero points of one unit of flux (a count, a nJy, a FLUXCAL unit...):
#: a per-epoch zero point outside it counts as missing (its object is flagged ``out_of_domain:zero_point``).
ZERO_POINT_RANGE: tuple[float, float] = (0.0, 50.0)


def flux_scale(from_zero_point: ArrayLike, to_zero_point: float) -> NDArray[np.float64] | float:
    """Factor that turns fluxes of zero point ``from_zero_point`` into fluxes of zero point ``to_zero_point``.

    Parameters
    ----------
    from_zero_point : float or array_like of float
        AB magnitude of one unit of the flux given (one value, or one per epoch).
    to_zero_point : float
        AB magnitude of one unit of the flux wanted.

    Returns
    -------
    float or ndarray of float64
        ``10**(0.4 * (to_zero_point - from_zero_point))``, the shape of ``from_zero_point``.
    """
    scale = np.power(10.0, 0.4 * (float(to_zero_point) - np.asarray(from_zero_point, dtype=np.float64)))
    return float(scale) if np.ndim(scale) == 0 else scale


def njy_to_fluxcal(flux: ArrayLike) -> NDArray[np.float64] | float:
    """Nanojansky to FLUXCAL: divide by ``10**(0.4 * (31.4 - 27.5))`` = 36.3078."""
    return _scaled(flux, flux_scale(NJY_ZERO_POINT, FLUXCAL_ZERO_POINT))


def fluxcal_to_njy(flux: ArrayLike) -> NDArray[np.float64] | float:
    """FLUXCAL to nanojansky: multiply by ``10**(0.4 * (31.4 - 27.5))`` = 36.3078."""
    return _scaled(flux, flux_scale(FLUXCAL_ZERO_POINT, NJY_ZERO_POINT))


def counts_to_fluxcal(counts: ArrayLike, zero_point: ArrayLike) -> NDArray[np.float64] | float:
    """Detector counts of AB zero point ``zero_point`` to FLUXCAL.

    Parameters
    ----------
    counts : float or array_like, shape (..., H, W) or (T,)
        Counts (DN); for stamps of shape (T, H, W), ``zero_point`` may hold one value per stamp.
    zero_point : float or array_like, shape (T,)
        AB magnitude of one count (ZTF ``magzpsci``).

    Returns
    -------
    float or ndarray of float64
    """
    scale = np.asarray(flux_scale(zero_point, FLUXCAL_ZERO_POINT))
    values = np.asarray(counts, dtype=np.float64)
    if scale.ndim == 1 and values.ndim == 3:
        scale = scale[:, None, None]
    return _scaled(values, scale)


def _scaled(flux: ArrayLike, scale: Any) -> NDArray[np.float64] | float:
    out = np.asarray(flux, dtype=np.float64) * scale
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class Photometry:
    """What a set of stamps is, photometrically: one side of the contract.

    A field is None when it is not declared (a catalog written before the
    contract existed): nothing can then be checked or converted about it.

    Attributes
    ----------
    profile : str or None
        Survey profile, lower case: ``lsst`` (Rubin, and the LSST simulations),
        ``ztf``, ``sdss_s82``, ...
    pixel_scale : float or None
        Arcsec per pixel.
    flux_unit : {"FLUXCAL", "nJy", "DN"} or None
    zero_point : float or None
        AB magnitude of one flux unit.  Fixed for FLUXCAL (27.5) and nJy (31.4);
        for DN the catalog's, or None when it varies per epoch
        (``zero_point_per_epoch``) or is unknown.
    zero_point_per_epoch : bool
        The zero point is given per epoch (the ``MAGZP`` column of ``EPOCHS``).
    sky_subtracted : bool or None
    stamp_kind : {"science", "difference", "template"} or None

    Raises
    ------
    ValueError
        A value outside its domain (the message names the field).
    """

    profile: str | None = None
    pixel_scale: float | None = None
    flux_unit: str | None = None
    zero_point: float | None = None
    zero_point_per_epoch: bool = False
    sky_subtracted: bool | None = None
    stamp_kind: str | None = None

    def __post_init__(self) -> None:
        if self.profile is not None:
            if not isinstance(self.profile, str) or not self.profile.strip() or not self.profile.isascii():
                raise ValueError(f"profile must be a survey name such as 'lsst' or 'ztf', got {self.profile!r}")
            object.__setattr__(self, "profile", self.profile.strip().lower())
        if self.pixel_scale is not None:
            if isinstance(self.pixel_scale, bool) or not isinstance(self.pixel_scale, (int, float)) \
                    or not (math.isfinite(self.pixel_scale) and self.pixel_scale > 0):
                raise ValueError(f"pixel_scale must be a positive number of arcsec per pixel, got "
                                 f"{self.pixel_scale!r}")
            object.__setattr__(self, "pixel_scale", float(self.pixel_scale))
        if self.flux_unit is not None:
            unit = {u.lower(): u for u in FLUX_UNITS}.get(str(self.flux_unit).strip().lower())
            if unit is None:
                raise ValueError(f"flux_unit must be one of {', '.join(FLUX_UNITS)}, got {self.flux_unit!r}")
            object.__setattr__(self, "flux_unit", unit)
        if self.zero_point is not None:
            if isinstance(self.zero_point, bool) or not isinstance(self.zero_point, (int, float)) \
                    or not math.isfinite(self.zero_point):
                raise ValueError(f"zero_point must be a finite AB magnitude, got {self.zero_point!r}")
            object.__setattr__(self, "zero_point", float(self.zero_point))
        fixed = FIXED_ZERO_POINTS.get(self.flux_unit or "")
        if fixed is not None:
            if self.zero_point_per_epoch:
                raise ValueError(f"zero_point: {self.flux_unit} has a fixed zero point ({fixed:g}): no zero point "
                                 f"per epoch")
            if self.zero_point is not None and not math.isclose(self.zero_point, fixed, abs_tol=1e-9):
                raise ValueError(f"zero_point: {self.flux_unit} has the zero point {fixed:g}, got "
                                 f"{self.zero_point:g}")
            object.__setattr__(self, "zero_point", fixed)
        if self.zero_point_per_epoch and self.zero_point is not None:
            raise ValueError("zero_point: give one zero point for all epochs or one per epoch, not both")
        if self.sky_subtracted is not None and not isinstance(self.sky_subtracted, (bool, np.bool_)):
            raise ValueError(f"sky_subtracted must be True or False, got {self.sky_subtracted!r}")
        if self.sky_subtracted is not None:
            object.__setattr__(self, "sky_subtracted", bool(self.sky_subtracted))
        if self.stamp_kind is not None:
            kind = str(self.stamp_kind).strip().lower()
            if kind not in STAMP_KINDS:
                raise ValueError(f"stamp_kind must be one of {', '.join(STAMP_KINDS)}, got {self.stamp_kind!r}")
            object.__setattr__(self, "stamp_kind", kind)

    @property
    def convertible(self) -> bool:
        """Whether fluxes can be converted exactly: a known unit with a known zero point (or one per epoch)."""
        return self.flux_unit is not None and (self.zero_point is not None or self.zero_point_per_epoch)

    def undeclared(self) -> list[str]:
        """Header keywords of the fields that are not declared (``MAGZP`` for a DN unit without zero point)."""
        missing = [HEADER_KEYWORDS[name] for name in ("profile", "pixel_scale", "flux_unit")
                   if getattr(self, name) is None]
        if self.flux_unit == "DN" and self.zero_point is None and not self.zero_point_per_epoch:
            missing.append(HEADER_KEYWORDS["zero_point"])
        missing += [HEADER_KEYWORDS[name] for name in ("sky_subtracted", "stamp_kind") if getattr(self, name) is None]
        return missing

    @property
    def complete(self) -> bool:
        """Every field declared and fluxes convertible."""
        return not self.undeclared()

    def describe(self) -> str:
        """One line: ``lsst, 0.2"/px, FLUXCAL (zero point 27.5), sky-subtracted, science stamps``."""
        unknown = "?"
        zero_point = ("zero point per epoch" if self.zero_point_per_epoch else
                      f"zero point {self.zero_point:g}" if self.zero_point is not None else f"zero point {unknown}")
        sky = "sky ?" if self.sky_subtracted is None else (
            "sky-subtracted" if self.sky_subtracted else "not sky-subtracted")
        return (f"{self.profile or unknown}, {_format(self.pixel_scale)}\"/px, {self.flux_unit or unknown} "
                f"({zero_point}), {sky}, {self.stamp_kind or unknown} stamps")

    def header(self) -> dict[str, tuple[Any, str]]:
        """Primary-header keywords ``{keyword: (value, comment)}`` of the declared fields.

        ``MAGZP`` is written only for a DN unit with one zero point (it is
        implied by FLUXCAL and nJy, and a ``MAGZP`` column when it varies per epoch).
        """
        cards: dict[str, tuple[Any, str]] = {}
        if self.profile is not None:
            cards["PROFILE"] = (self.profile, "survey profile")
        if self.pixel_scale is not None:
            cards["PIXSCALE"] = (self.pixel_scale, "arcsec per pixel")
        if self.flux_unit is not None:
            comment = {"FLUXCAL": "flux of AB mag m is 10**(-0.4(m-27.5))",
                       "nJy": "nanojansky: AB mag m is 10**(-0.4(m-31.4))",
                       "DN": "detector counts; zero point MAGZP"}[self.flux_unit]
            if self.flux_unit == "DN" and self.zero_point_per_epoch:
                comment = "detector counts; zero point in EPOCHS.MAGZP"
            cards["FLUXUNIT"] = (self.flux_unit, comment)
        if self.flux_unit == "DN" and self.zero_point is not None:
            cards["MAGZP"] = (self.zero_point, "AB magnitude of one count")
        if self.sky_subtracted is not None:
            cards["SKYSUB"] = (self.sky_subtracted, "stamps are sky-subtracted")
        if self.stamp_kind is not None:
            cards["CUTOUT"] = (self.stamp_kind, "stamp kind: science, difference or template")
        return cards

    @classmethod
    def from_header(cls, header: Mapping[str, Any], *, zero_point_column: bool = False) -> Photometry:
        """The contract a catalog's primary header declares (absent keywords: None).

        Parameters
        ----------
        header : mapping
            The primary header (an ``astropy.io.fits.Header`` or a dict).
        zero_point_column : bool
            ``EPOCHS`` has a ``MAGZP`` column: the zero point varies per epoch.

        Raises
        ------
        ValueError
            A keyword whose value is not valid; the message starts with the keyword.
        """
        values: dict[str, Any] = {}
        for name, keyword in HEADER_KEYWORDS.items():
            if keyword in header and header[keyword] is not None and str(header[keyword]).strip() != "":
                values[name] = header[keyword]
        if "stamp_kind" in values:
            values["stamp_kind"] = str(values["stamp_kind"])
        if "profile" in values:
            values["profile"] = str(values["profile"])
        for name in ("pixel_scale", "zero_point"):
            if name in values and isinstance(values[name], str):
                raise ValueError(f"{HEADER_KEYWORDS[name]}: must be a number, got {values[name]!r}")
        if "sky_subtracted" in values and not isinstance(values["sky_subtracted"], (bool, np.bool_)):
            raise ValueError(f"SKYSUB: must be T or F, got {values['sky_subtracted']!r}")
        if zero_point_column:
            if "zero_point" in values:
                raise ValueError("MAGZP: given both as a keyword and as the EPOCHS column; keep one")
            values["zero_point_per_epoch"] = True
        try:
            return cls(**values)
        except ValueError as exc:
            field = next((name for name in HEADER_KEYWORDS if str(exc).startswith(name)), "")
            message = str(exc).removeprefix(f"{field}: ") if field else str(exc)
            raise ValueError(f"{HEADER_KEYWORDS[field] + ': ' if field else ''}{message}") from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary (the model card's ``domain.photometry``)."""
        return {"profile": self.profile, "pixel_scale": self.pixel_scale, "flux_unit": self.flux_unit,
                "zero_point": self.zero_point, "zero_point_per_epoch": self.zero_point_per_epoch,
                "sky_subtracted": self.sky_subtracted, "stamp_kind": self.stamp_kind}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Photometry:
        """Inverse of :meth:`to_dict`; unknown keys are refused."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown photometry fields {sorted(unknown)}")
        return cls(**data)


def _format(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


@dataclass(frozen=True)
class DomainCheck:
    """How data relate to a model's photometric domain (:func:`compare`).

    Attributes
    ----------
    differs : tuple of str
        Flag names of what is declared and cannot be brought to the model's
        domain: ``survey``, ``pixel_scale``, ``flux_unit``, ``sky``, ``stamp_kind``.
    unknown : tuple of str
        Flag names of what the data do not declare.
    scale : float or None
        Factor that converts the data's fluxes to the model's unit, when one zero
        point holds for all epochs; None when it varies per epoch (see
        :meth:`epoch_scale`) or fluxes cannot be converted.
    details : tuple of str
        One phrase per difference or unknown, with both values.
    """

    differs: tuple[str, ...]
    unknown: tuple[str, ...]
    scale: float | None
    target_zero_point: float
    details: tuple[str, ...]

    @property
    def in_domain(self) -> bool:
        """Nothing differs and nothing is unknown."""
        return not self.differs and not self.unknown

    @property
    def flag(self) -> tuple[Reason, str] | None:
        """The flag objects get, with the fields at fault: ``(out_of_domain, "survey,sky")``,
        ``(domain_unknown, "<what>...")``, or None when in the domain."""
        if self.differs:
            return Reason.out_of_domain, ",".join(self.differs)
        if self.unknown:
            return Reason.domain_unknown, ",".join(self.unknown)
        return None

    @property
    def reason(self) -> str:
        """:attr:`flag` as text, for messages: ``out_of_domain:<what>[,...]``, ``domain_unknown:<what>...`` or ""."""
        return ":".join(self.flag) if self.flag is not None else ""

    @property
    def note(self) -> str:
        """A status note for what is unknown when something also differs (the flag names the difference)."""
        return f"domain_unknown={'/'.join(self.unknown)}" if self.differs and self.unknown else ""

    def epoch_scale(self, zero_points: ArrayLike) -> NDArray[np.float64]:
        """Per-epoch conversion factors from per-epoch zero points.

        NaN (a missing zero point) where a zero point is not finite or outside
        :data:`ZERO_POINT_RANGE` (AB mag): such a value is a placeholder or an
        error, and would scale the stamp to 0 or to inf.
        """
        zero_points = np.asarray(zero_points, dtype=np.float64)
        low, high = ZERO_POINT_RANGE
        with np.errstate(invalid="ignore"):
            plausible = (zero_points > low) & (zero_points < high)
        scale = np.full(zero_points.shape, np.nan)
        scale[plausible] = flux_scale(zero_points[plausible], self.target_zero_point)
        return scale

    def summary(self) -> str:
        """One line for people: what differs or is unknown, with both values."""
        return "; ".join(self.details) if self.details else "in the model's domain"


def compare(data: Photometry, model: Photometry) -> DomainCheck:
    """Compare the data's contract with the model's.

    Parameters
    ----------
    data : Photometry
        What the stamps are (from a catalog header, or declared by a caller).
    model : Photometry
        The model's training domain; must be :attr:`~Photometry.complete`.

    Returns
    -------
    DomainCheck
        Flux units and zero points convert exactly (``scale``); a survey profile,
        a pixel scale (beyond :data:`PIXEL_SCALE_RTOL`), a sky treatment or a
        stamp kind other than the model's cannot, and a unit without a known zero
        point cannot be converted either: those are in ``differs``.

    Raises
    ------
    ValueError
        When ``model`` does not declare every field.
    """
    if not model.complete or model.zero_point is None:
        raise ValueError(f"the model's domain must declare every field with one zero point, got "
                         f"{model.describe()}")
    differs: list[str] = []
    unknown: list[str] = []
    details: list[str] = []

    def check(name: str, same: bool, shown: tuple[Any, Any]) -> None:
        flag = FLAG_NAMES[name]
        if getattr(data, name) is None:
            unknown.append(flag)
            details.append(f"{flag} not declared ({HEADER_KEYWORDS[name]}; model: {shown[1]})")
        elif not same:
            differs.append(flag)
            details.append(f"{flag} {shown[0]} (model: {shown[1]})")

    check("profile", data.profile == model.profile, (data.profile, model.profile))
    check("pixel_scale", data.pixel_scale is not None and math.isclose(
        data.pixel_scale, model.pixel_scale, rel_tol=PIXEL_SCALE_RTOL), (f"{_format(data.pixel_scale)}\"/px",
                                                                         f"{_format(model.pixel_scale)}\"/px"))
    scale: float | None = None
    if data.flux_unit is None:
        unknown.append("flux_unit")
        details.append(f"flux_unit not declared (FLUXUNIT; model: {model.flux_unit})")
    elif not data.convertible:
        differs.append("flux_unit")
        details.append(f"flux_unit {data.flux_unit} without a zero point (MAGZP keyword or EPOCHS.MAGZP column): "
                       f"cannot be converted to {model.flux_unit}")
    elif data.zero_point is not None:
        scale = float(flux_scale(data.zero_point, model.zero_point))
    check("sky_subtracted", data.sky_subtracted == model.sky_subtracted,
          tuple("subtracted" if v else "not subtracted" for v in (data.sky_subtracted, model.sky_subtracted)))
    check("stamp_kind", data.stamp_kind == model.stamp_kind, (data.stamp_kind, model.stamp_kind))
    return DomainCheck(differs=tuple(differs), unknown=tuple(unknown), scale=scale,
                       target_zero_point=float(model.zero_point), details=tuple(details))
