"""Training draws and model inputs: class-balanced draw weights, augmentation, input tensors of objects."""

from __future__ import annotations

import numpy as np
import torch

from convention_rt.model_card import ModelCard
from convention_rt.transform import to_inputs
from train.data.dataset import LabelledObjects
from train.early import random_prefixes

__all__ = ["augment", "balanced_weights", "event_jitter", "model_inputs"]


def balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Draw probabilities ``(n,)`` float64 of objects with class indices ``labels``: 1 / class frequency, normalised.

    Drawn with replacement, every class present comes up equally often.
    """
    counts = np.bincount(labels).astype(float)
    weights = 1.0 / counts[labels]
    return weights / weights.sum()


def augment(stamps: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation by k x 90 degrees and flips, one draw per object: (B, M, H, W)."""
    turns = torch.randint(0, 4, (stamps.shape[0],), generator=generator)
    flips = torch.randint(0, 2, (stamps.shape[0], 2), generator=generator).bool()
    out = stamps.clone()
    for k in range(1, 4):
        chosen = turns == k
        if chosen.any():
            out[chosen] = torch.rot90(out[chosen], k, dims=(-2, -1))
    out = torch.where(flips[:, 0, None, None, None], out.flip(-1), out)
    return torch.where(flips[:, 1, None, None, None], out.flip(-2), out)


def event_jitter(seq_len: int) -> int:
    """Largest shift (frames) of a training draw's event window: a sixth of the sequence."""
    return seq_len // 6


def model_inputs(data: LabelledObjects, indices: np.ndarray, card: ModelCard, *,
                 rng: np.random.Generator | None = None, frame_drop: float = 0.0,
                 prefix_truncation: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the objects ``indices``: training draws when ``rng`` is given, else the card's window.

    Training draws follow the card's inference window: random runs of frames for
    ``"latest"``, event windows moved by up to :func:`event_jitter` frames for ``"event"``.

    With ``prefix_truncation`` > 0 (training only), that share of the objects is first
    cut to a random prefix of its frames (:func:`train.early.random_prefixes`).
    """
    chunk = data.chunk(indices)
    if rng is not None and prefix_truncation > 0:  # no draw otherwise: earlier runs resume unchanged
        chunk = random_prefixes(chunk, rng, prefix_truncation)
    if rng is None:
        inputs = to_inputs(chunk, card)
    else:
        seeds = rng.integers(0, 2**63, size=len(indices), dtype=np.uint64)
        event = card.window == "event"
        inputs = to_inputs(chunk, card, mode="event" if event else "random", seeds=seeds, drop_prob=frame_drop,
                           jitter=event_jitter(card.seq_len) if event else 0)
    seq = inputs.sequences
    return torch.from_numpy(seq.stamps), torch.from_numpy(seq.band_ids), torch.from_numpy(inputs.times)
