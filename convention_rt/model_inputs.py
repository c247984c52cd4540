"""From catalog chunks to model inputs, driven by the model card.

Catalog band names are mapped to the model's band ids (frames in bands the
model does not know are dropped and counted), then the frames are windowed and
normalised with the card's statistics in one compiled pass.  Training and
serving both go through :func:`chunk_to_inputs`, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from convention_rt.catalog import ObjectChunk
from convention_rt.model_card import ModelCard
from convention_rt.preprocess import Sequences, WindowMode, prepare_sequences

__all__ = ["ModelInputs", "chunk_to_inputs", "relative_times"]


@dataclass
class ModelInputs:
    """Model inputs of one chunk, with what happened to each object.

    Attributes
    ----------
    sequences : Sequences
        stamps (n, M, H, W) float32, band_ids (n, M) int64, mjd (n, M) float64,
        mask (n, M) bool, n_bad (n, M) int32.
    times : ndarray, shape (n, M), float32
        Days since each object's first frame in its window, 0 on padding.
    invalid : list of str
        Per object: "" when it can be classified, else why not.
    notes : list of list of str
        Per object: the chunk's notes plus those added here.
    bands_used : list of str
        Per object: the bands present in its window, comma-separated.
    low_information : list of str
        Per object: "" or why its classification carries little information
        (:meth:`convention_rt.model_card.Domain.low_information`), filled in once
        it is classified; empty before.
    """

    sequences: Sequences
    times: NDArray[np.float32]
    invalid: list[str]
    notes: list[list[str]]
    bands_used: list[str]
    low_information: list[str] = field(default_factory=list)

    @property
    def valid(self) -> NDArray[np.bool_]:
        """Objects that can be classified, shape (n,), bool."""
        return np.array([not reason for reason in self.invalid], dtype=bool)

    def status(self, i: int) -> str:
        """``ok``, ``low_information:<why>`` or ``flagged:<why>``, then the notes, ``;``-separated."""
        low = self.low_information[i] if self.low_information else ""
        head = f"flagged:{self.invalid[i]}" if self.invalid[i] else f"low_information:{low}" if low else "ok"
        return ";".join([head, *self.notes[i]])


def relative_times(mjd: ArrayLike, mask: ArrayLike) -> NDArray[np.float32]:
    """Days since the first real frame of each row; 0 on padding.

    Parameters
    ----------
    mjd : array_like, shape (n, M), float64
    mask : array_like, shape (n, M), bool

    Returns
    -------
    ndarray, shape (n, M), float32
    """
    mjd = np.asarray(mjd, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    first = np.where(mask.any(axis=1), mjd[:, 0], 0.0)  # real frames fill the leading slots
    return np.where(mask, mjd - first[:, None], 0.0).astype(np.float32)


def chunk_to_inputs(
    chunk: ObjectChunk,
    card: ModelCard,
    *,
    mode: WindowMode = "latest",
    seeds: ArrayLike | None = None,
    drop_prob: float = 0.0,
    out: Sequences | None = None,
) -> ModelInputs:
    """Turn a catalog chunk into the model's inputs.

    Parameters
    ----------
    chunk : ObjectChunk
        Frames of n objects as read from a catalog.
    card : ModelCard
        Gives the band order, normalisation statistics and sequence length.
    mode, seeds, drop_prob
        Windowing, see :func:`convention_rt.preprocess.select_frames`
        (inference uses the default, the latest frames).
    out : Sequences, optional
        Reusable output buffers sized for this chunk.

    Returns
    -------
    ModelInputs
    """
    n = len(chunk)
    invalid = list(chunk.invalid)
    notes = [list(items) for items in chunk.notes]
    lookup = np.array([card.band_id(band) for band in chunk.bands], dtype=np.int64)
    band_ids = lookup[chunk.band] if chunk.band.size else np.zeros(0, dtype=np.int64)
    frames, mjd, offsets = chunk.frames, chunk.mjd, chunk.offsets

    unknown = band_ids == 0
    if unknown.any():
        names = "/".join(sorted(band for band, model_id in zip(chunk.bands, lookup) if model_id == 0))
        kept_before = np.zeros(unknown.size + 1, dtype=np.int64)
        np.cumsum(~unknown, out=kept_before[1:])
        for i in range(n):
            dropped = int(unknown[offsets[i]:offsets[i + 1]].sum())
            if dropped:
                notes[i].append(f"bands_unknown_to_model={dropped}({names})")
                if dropped == offsets[i + 1] - offsets[i] and not invalid[i]:
                    invalid[i] = "no_frames_in_model_bands"
        keep = ~unknown
        frames, band_ids, mjd = frames[keep], band_ids[keep], mjd[keep]
        offsets = kept_before[offsets]

    mean, std = card.stats_arrays()
    sequences = prepare_sequences(frames, band_ids, mjd, offsets, mean, std, card.seq_len,
                                  mode=mode, seeds=seeds, drop_prob=drop_prob, out=out)
    present = np.zeros((n, card.n_band_ids), dtype=bool)
    rows = np.repeat(np.arange(n), card.seq_len)
    present[rows, sequences.band_ids.reshape(-1)] = True
    bands_used = [",".join(b for b, used in zip(card.bands, present[i, 1:]) if used) for i in range(n)]
    return ModelInputs(sequences=sequences, times=relative_times(sequences.mjd, sequences.mask),
                       invalid=invalid, notes=notes, bands_used=bands_used)
