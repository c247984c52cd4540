"""Plain loop versions of the ConvEntion computations: the references the batched model must equal.

They follow the authors' structure: the stem runs window by window, and the
attention computes ``conv(Q_n + K_m)`` for each query n and each key m.  They
reuse the model's own modules (weights, norms, head), so any difference from
:meth:`ConvEntion.forward` comes from the batched formulation alone.  Slow by
design: for tests and benchmarks, never for training or export.
"""

from __future__ import annotations

import torch
from torch import Tensor

from train.model.attention import ConvAttention
from train.model.convention import ConvEntion, masked_max

__all__ = ["loop_attention", "loop_forward"]


def loop_attention(attention: ConvAttention, x: Tensor, valid: Tensor) -> Tensor:
    """Attention with one logit convolution per (query, key) pair.

    Parameters
    ----------
    attention : ConvAttention
        Supplies the weights.
    x : Tensor
        ``(B, N, D, h, w)`` float32 position maps.
    valid : Tensor
        ``(B, N)`` bool, False for padding positions (masked keys).

    Returns
    -------
    Tensor
        ``(B, N, D, h, w)`` float32, what ``attention(x, valid)`` must return.
    """
    n_positions = x.shape[1]
    projections = [attention.qkv(x[:, n]).chunk(3, dim=1) for n in range(n_positions)]
    outputs = []
    for n in range(n_positions):
        q_n = projections[n][0]
        logits, values = [], []
        for m in range(n_positions):
            _, k_m, v_m = projections[m]
            logits.append(attention.logits(q_n + k_m))  # (B, T, h, w)
            values.append(v_m.unflatten(1, (attention.heads, -1)))  # (B, T, D/T, h, w)
        logit = torch.stack(logits, dim=1)  # (B, N, T, h, w)
        logit = logit.masked_fill(~valid[:, :, None, None, None], torch.finfo(logit.dtype).min)
        weights = logit.softmax(dim=1)
        mixed = (weights.unsqueeze(3) * torch.stack(values, dim=1)).sum(dim=1)  # (B, T, D/T, h, w)
        outputs.append(attention.merge(mixed.flatten(1, 2)))
    return torch.stack(outputs, dim=1)


def loop_forward(model: ConvEntion, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
    """ConvEntion logits with the stem looped over windows and :func:`loop_attention`.

    Parameters
    ----------
    model : ConvEntion
        Supplies every module.
    stamps, band_ids, times : Tensor
        As for :meth:`ConvEntion.forward`.

    Returns
    -------
    Tensor
        ``(B, classes)`` float32 logits, what ``model(stamps, band_ids, times)`` must return
        in eval mode (in training mode BatchNorm takes its statistics from what it
        is given, one window here and all windows in the model).
    """
    window = model.config.stem_window
    real = band_ids != 0
    valid = model.window_valid(band_ids)
    frames = model.frames(stamps, band_ids)
    maps = [model.stem(frames[:, start:start + window]) for start in range(0, frames.shape[1], window)]
    x = model.positional_encoding(torch.cat(maps, dim=1), times, real)
    for block in model.blocks:
        x = x + loop_attention(block.attention, block.norm1(x, valid), valid)
        x = x + block.ffn(block.norm2(x, valid))
    return model.forward_head(masked_max(x, valid), model.summary(x, times, real, valid, frames, band_ids))
