"""Convolutional multi-head attention over the N window maps (paper section 2.4).

For query position n and key position m, the logits are one map per head,
``H(n, m) = Conv2d(D -> T, k x k)(Q_n + K_m)``, normalised by a softmax over m
at every pixel and head.  The convolution is linear, so

    conv(Q_n + K_m) = conv(Q_n) + conv_without_bias(K_m)

and all N x N pairs cost 2N convolutions and one broadcast sum, exactly
(``train.model.reference.loop_attention`` is the per-pair loop it is tested
against).

Consequence of that linearity: inside the softmax over m, ``conv(Q_n)`` is a
constant and cancels, so the attention weights, and the attention output, are
the same for every query n.  The paper's attention therefore acts as a learnt,
key-weighted pooling over positions whose result is added to every position.
This module computes the formula as published; see docs/model.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvAttention"]


class ConvAttention(nn.Module):
    """Multi-head convolutional attention between all positions of a sequence.

    Parameters
    ----------
    channels : int
        Channels D of each position's map.
    heads : int
        Heads T; V is split into T groups of D / T channels.
    logit_kernel : int
        Odd kernel size of the logit convolution (5 in the paper).
    """

    def __init__(self, *, channels: int, heads: int, logit_kernel: int = 5) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.logits = nn.Conv2d(channels, heads, kernel_size=logit_kernel, padding=logit_kernel // 2)
        self.merge = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """Attend from every position to every valid position.

        Parameters
        ----------
        x : Tensor
            ``(B, N, D, h, w)`` float32 position maps.
        valid : Tensor
            ``(B, N)`` bool, False for padding positions, which are excluded as
            keys.  If no position is valid the weights are uniform (finite).

        Returns
        -------
        Tensor
            ``(B, N, D, h, w)`` float32.
        """
        n = x.shape[1]
        q, k, v = self.qkv(x.flatten(0, 1)).chunk(3, dim=1)  # each (B*N, D, h, w)
        # Pairs are laid out (B, T, h, w, N_query, N_key): the softmax runs over the
        # last axis and the weighted sum is one batched matmul.
        query_logits = self.logits(q).unflatten(0, (-1, n)).permute(0, 2, 3, 4, 1)  # (B, T, h, w, N)
        key_logits = F.conv2d(k, self.logits.weight, None, padding=self.logits.padding)
        key_logits = key_logits.unflatten(0, (-1, n)).permute(0, 2, 3, 4, 1)
        logits = query_logits.unsqueeze(-1) + key_logits.unsqueeze(-2)  # (B, T, h, w, Nq, Nk)
        key_padding = ~valid[:, None, None, None, None, :]
        weights = logits.masked_fill(key_padding, torch.finfo(logits.dtype).min).softmax(dim=-1)
        values = v.unflatten(1, (self.heads, -1)).unflatten(0, (-1, n))  # (B, N, T, D/T, h, w)
        mixed = weights @ values.permute(0, 2, 4, 5, 1, 3)  # (B, T, h, w, N, D/T)
        mixed = mixed.permute(0, 4, 1, 5, 2, 3)  # (B, N, T, D/T, h, w)
        return self.merge(mixed.flatten(0, 1).flatten(1, 2)).unflatten(0, (-1, n))

    def functional_macs(self, x: Tensor) -> int:
        """Multiply-accumulates per sequence outside the child modules' calls.

        The key logits (the logit convolution without bias on the N key maps)
        and the weighted sum of values over all N x N pairs.

        Parameters
        ----------
        x : Tensor
            The ``(B, N, D, h, w)`` input of :meth:`forward` (only its shape is read).

        Returns
        -------
        int
        """
        _, n, d, h, w = x.shape
        kernel = self.logits.kernel_size[0] * self.logits.kernel_size[1]
        key_logits = n * self.heads * h * w * d * kernel
        mixing = n * n * d * h * w
        return int(key_logits + mixing)
