"""Alert cut-outs: decode their FITS bytes and fit them to the catalog's stamp size.

ZTF cut-outs are gzip-compressed single-HDU FITS images (63 x 63, big-endian
float32).  Rubin cut-outs are plain FITS with an image, a variance and a mask
plane, written either as astropy ``CCDData`` (image in the primary HDU, then
``UNCERT`` and ``MASK``) or in the LSST ``Exposure`` layout (``IMAGE``,
``MASK``, ``VARIANCE`` extensions, mask bits named by ``MP_*`` keywords).
:func:`decode_image` reads either into a native float32 image with the pixels
flagged bad in the mask set to NaN; :func:`fit_stamp` centre-crops or pads it.
"""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError, VerifyWarning
from numpy.typing import ArrayLike, NDArray

from convention_rt.errors import BadInputError
from convention_rt.preprocess import MAX_PIXEL_MAGNITUDE

__all__ = [
    "BAD_MASK_PLANES",
    "STAMP_SIZE",
    "CutoutError",
    "decode_cutout",
    "decode_image",
    "fit_stamp",
    "gunzip",
]

STAMP_SIZE = 32
"""Side of the stamps in the catalogs ingest writes (the ConvEntion input size)."""

BAD_MASK_PLANES: tuple[str, ...] = ("BAD", "SAT", "CR", "EDGE", "NO_DATA", "SUSPECT")
"""Mask planes (``MP_<name>`` bits) whose pixels become NaN; interpolated pixels are kept."""

MAX_DECOMPRESSED_BYTES = 16 * 2**20
"""A cut-out that inflates past this is refused (a 63 x 63 stamp is about 20 kB)."""

GZIP_MAGIC = b"\x1f\x8b"

PadSide = Literal["low", "high", "centre"]

# ZTF writes ``SIMPLE  =  T`` outside the fixed-format columns; astropy reads it
# correctly and says so with this warning.  Every other warning is an error.
_HARMLESS_WARNING = "Found a SIMPLE card but its format doesn't respect the FITS Standard"
_FITS_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, VerifyError, Warning)


class CutoutError(BadInputError):
    """A cut-out whose bytes are not a usable image (the message says why)."""


def gunzip(data: bytes, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Inflate a gzip stream, refusing truncated or oversized ones.

    Parameters
    ----------
    data : bytes
        A gzip member (starts with ``1f 8b``).
    limit : int
        Most bytes the result may have.

    Returns
    -------
    bytes

    Raises
    ------
    CutoutError
        Corrupt or truncated stream, or one larger than ``limit``.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise CutoutError(f"corrupt gzip stream ({exc})") from exc
    if inflater.unconsumed_tail:
        raise CutoutError(f"gzip stream inflates to more than {limit} bytes")
    if not inflater.eof:
        raise CutoutError(f"truncated gzip stream ({len(data)} bytes)")
    return out


def decode_image(data: bytes, *, bad_planes: Sequence[str] = BAD_MASK_PLANES) -> tuple[NDArray[np.float32], int]:
    """Read a cut-out's image plane, with its bad pixels set to NaN.

    :func:`decode_cutout` without the unit; same parameters, returns and errors.
    """
    image, n_masked, _ = decode_cutout(data, bad_planes=bad_planes)
    return image, n_masked


def decode_cutout(data: bytes, *, bad_planes: Sequence[str] = BAD_MASK_PLANES) -> tuple[
        NDArray[np.float32], int, str | None]:
    """Read a cut-out's image plane, with its bad pixels set to NaN, and the unit of its pixels.

    Parameters
    ----------
    data : bytes
        FITS bytes, optionally gzip-compressed.
    bad_planes : sequence of str
        Mask planes whose pixels are bad, when the mask names its planes with
        ``MP_<name>`` keywords.  A mask without such keywords flags every
        non-zero pixel.

    Returns
    -------
    image : ndarray, shape (H, W), float32, native byte order
        The image; NaN pixels of the file stay NaN.
    n_masked : int
        Pixels set to NaN from the mask (0 without a ``MASK`` HDU).
    unit : str or None
        The image's ``BUNIT`` keyword (of its HDU, else the primary's), None without one.

    Raises
    ------
    CutoutError
        Not (gzipped) FITS, no 2-D image, or a mask of another shape.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CutoutError(f"must be bytes, got {type(data).__name__}")
    if not data:
        raise CutoutError("empty cut-out")
    data = bytes(data)
    raw = gunzip(data) if data[:2] == GZIP_MAGIC else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.filterwarnings("ignore", message=_HARMLESS_WARNING, category=VerifyWarning)
            with fits.open(io.BytesIO(raw), memmap=False, lazy_load_hdus=False) as hdul:
                image_hdu = _image_hdu(hdul)
                image = np.array(image_hdu.data, dtype=np.float32)  # native-endian copy
                unit = image_hdu.header.get("BUNIT", hdul[0].header.get("BUNIT"))
                unit = str(unit).strip() if unit is not None and str(unit).strip() else None
                mask_hdu = _named(hdul, "MASK")
                mask = None if mask_hdu is None else (np.array(mask_hdu.data), mask_hdu.header)
    except CutoutError:
        raise
    except _FITS_ERRORS as exc:
        raise CutoutError(f"not a readable FITS image ({exc})") from exc
    if mask is None:
        return image, 0, unit
    bad = _bad_pixels(*mask, bad_planes)
    if bad.shape != image.shape:
        raise CutoutError(f"MASK plane has shape {bad.shape}, the image {image.shape}")
    image[bad] = np.nan
    return image, int(np.count_nonzero(bad)), unit


def _named(hdul: fits.HDUList, name: str) -> fits.ImageHDU | None:
    for hdu in hdul:
        if hdu.name.upper() == name and hdu.data is not None:
            return hdu
    return None


def _image_hdu(hdul: fits.HDUList) -> fits.ImageHDU:
    """The ``IMAGE`` extension if any, else the first image HDU with data; it must be 2-D."""
    hdu = _named(hdul, "IMAGE")
    if hdu is None:
        hdu = next((h for h in hdul if h.is_image and h.data is not None), None)
    if hdu is None:
        raise CutoutError("no image HDU")
    if hdu.data.ndim != 2 or 0 in hdu.data.shape:
        raise CutoutError(f"image must be 2-D, got shape {hdu.data.shape}")
    return hdu


def _bad_pixels(mask: NDArray, header: fits.Header, bad_planes: Sequence[str]) -> NDArray[np.bool_]:
    """Pixels flagged bad: the ``MP_*`` bits of ``bad_planes``, or any non-zero value."""
    planes = {key[3:]: value for key, value in header.items()
              if key.startswith("MP_") and isinstance(value, int) and 0 <= value < 63}
    if not planes or mask.dtype.kind not in "iu":
        return mask != 0
    bits = 0
    for name in bad_planes:
        if name in planes:
            bits |= 1 << planes[name]
    return (mask.astype(np.int64) & bits) != 0


def fit_stamp(
    image: ArrayLike,
    size: int = STAMP_SIZE,
    *,
    nominal: int | None = None,
    pad_side: tuple[PadSide, PadSide] = ("centre", "centre"),
) -> tuple[NDArray[np.float32], bool]:
    """Centre-crop a cut-out to ``size x size``, padding it first when it is short.

    An axis shorter than ``max(nominal, size)`` is padded to that length with
    the cut-out's median finite pixel (NaN if it has none) on the side where
    pixels are missing; then the centre ``size x size`` is kept.  Cropping
    starts at ``(n - size) // 2``, so a 63-pixel axis keeps pixels 15..46.

    Parameters
    ----------
    image : array_like, shape (H, W)
        The cut-out; converted to native float32.
    size : int
        Side of the stamp.
    nominal : int, optional
        Side of a complete cut-out (63 for ZTF); shorter ones were cut by a chip
        edge.  None: only pad what is shorter than ``size``.
    pad_side : (str, str)
        For rows and columns: ``"low"`` when the missing pixels are before the
        first one (source near the low edge of the chip), ``"high"`` after the
        last one, ``"centre"`` when unknown (split evenly).

    Returns
    -------
    stamp : ndarray, shape (size, size), float32, C-contiguous
    padded : bool
        True when any pixel of the stamp was padded in.

    Raises
    ------
    CutoutError
        If ``image`` is not a non-empty 2-D array.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or 0 in image.shape:
        raise CutoutError(f"image must be 2-D and non-empty, got shape {image.shape}")
    pads = []
    for n, side in zip(image.shape, pad_side, strict=True):
        missing = max(n, size, nominal or 0) - n
        before = {"low": missing, "high": 0}.get(side, missing // 2)
        pads.append((before, missing - before))
    padded = any(before or after for before, after in pads)
    if padded:
        image = np.pad(image, pads, mode="constant", constant_values=_background(image))
    top, left = ((n - size) // 2 for n in image.shape)
    return np.ascontiguousarray(image[top:top + size, left:left + size]), padded


def _background(image: NDArray[np.float32]) -> np.float32:
    """Median of the good pixels (not NaN, inf or beyond ``MAX_PIXEL_MAGNITUDE``); NaN if none."""
    good = image[np.abs(image) <= MAX_PIXEL_MAGNITUDE]
    return np.float32(np.median(good)) if good.size else np.float32(np.nan)
