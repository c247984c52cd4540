"""Pixel offsets and distances from a stamp's centre, shared by every aperture the models measure."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["centred_offsets", "centred_radius"]


def centred_offsets(side: int) -> tuple[Tensor, Tensor]:
    """Row and column offsets of each pixel from the centre pixel ``side // 2``.

    Parameters
    ----------
    side : int
        Stamp side in pixels.

    Returns
    -------
    rows, columns : Tensor
        ``(side, side)`` float64 offsets (exact integers).
    """
    axis = torch.arange(side, dtype=torch.float64) - side // 2
    return axis[:, None].expand(side, side), axis[None, :].expand(side, side)


def centred_radius(side: int) -> Tensor:
    """``(side, side)`` float64 distance (pixels) of each pixel from the centre pixel ``side // 2``."""
    rows, columns = centred_offsets(side)
    return torch.sqrt(rows * rows + columns * columns)
