"""Convolutional multi-head attention over the N window maps (paper section 2.4).

Two forms, chosen by ``ModelConfig.attention``:

* ``"published"`` (:class:`ConvAttention`): the paper's logits, described below;
* ``"dot"`` (:class:`ConvDotAttention`): a query-dependent alternative, a per-pixel
  scaled dot product between a convolved query and the key.

For query position n and key position m, the logits are one map per head,
``H(n, m) = Conv2d(D -> T, k x k)(Q_n + K_m)``, normalised by a softmax over m
at every pixel and head.  The convolution is linear, so

    conv(Q_n + K_m) = conv(Q_n) + conv_without_bias(K_m)

and all N x N pairs cost 2N convolutions and one broadcast sum, exactly
(``train.model.loops.loop_attention`` is the per-pair loop it is tested
against).

Consequence of that linearity: inside the softmax over m, ``conv(Q_n)`` is a
constant and cancels, so the attention weights, and the attention output, are
the same for every query n.  The paper's attention therefore acts as a learnt,
key-weighted pooling over positions whose result is added to every position.
By default this module computes the formula as published (all N x N pairs);
with ``once_per_sequence`` set it computes ``softmax_m(conv(K_m))``, the
weighted sum and the merge once per sequence and broadcasts the result to the
N positions: the same output with N times less work in the pair stage (set by
:func:`train.model.convention.attend_once_per_sequence`, for training and for
export; see docs/performance.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvAttention", "ConvDotAttention"]


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

    Attributes
    ----------
    once_per_sequence : bool
        False (default): every (query, key) pair, as published.  True: the
        query-independent form, computed once per sequence; equal up to rounding.
    """

    def __init__(self, *, channels: int, heads: int, logit_kernel: int = 5) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.logits = nn.Conv2d(channels, heads, kernel_size=logit_kernel, padding=logit_kernel // 2)
        self.merge = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.once_per_sequence = False

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
            ``(B, N, D, h, w)`` float32 (an expanded view of one map per
            sequence when ``once_per_sequence`` is set).
        """
        if self.once_per_sequence:
            return self._attend_once(x, valid)
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

    def _attend_once(self, x: Tensor, valid: Tensor) -> Tensor:
        """The attention output without the query term, which cancels in the softmax over keys."""
        n, d = x.shape[1], x.shape[2]
        keys_values = F.conv2d(x.flatten(0, 1), self.qkv.weight[d:], self.qkv.bias[d:])  # (B*N, 2D, h, w)
        k, v = keys_values.chunk(2, dim=1)
        # The logit bias is constant over the keys and cancels like the query term; kept, it
        # leaves every parameter in the graph (data-parallel training requires it).
        logits = self.logits(k).unflatten(0, (-1, n))  # (B, N, T, h, w)
        key_padding = ~valid[:, :, None, None, None]
        weights = logits.masked_fill(key_padding, torch.finfo(logits.dtype).min).softmax(dim=1)
        values = v.unflatten(1, (self.heads, -1)).unflatten(0, (-1, n))  # (B, N, T, D/T, h, w)
        mixed = (weights.unsqueeze(3) * values).sum(dim=1)  # (B, T, D/T, h, w)
        return self.merge(mixed.flatten(1, 2)).unsqueeze(1).expand(-1, n, -1, -1, -1)

    def functional_macs(self, x: Tensor) -> int:
        """Multiply-accumulates per sequence outside the child modules' calls.

        All pairs: the key logits (the logit convolution without bias on the N
        key maps) and the weighted sum of values over all N x N pairs.  Once per
        sequence: the K and V projections (the ``qkv`` weights are sliced, so
        its hook does not see them) and one weighted sum over N.

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
        if self.once_per_sequence:  # the key logits run through the logits module: its hook counts them
            return int(n * 2 * d * h * w * d + n * d * h * w)
        return int(key_logits + n * n * d * h * w)


class ConvDotAttention(nn.Module):
    """Multi-head convolutional dot-product attention: weights that depend on the query.

    Q, K, V come from one 1x1 convolution D -> 3D, as in :class:`ConvAttention`.
    The query maps then pass through a depthwise k x k convolution, so each
    pixel's query sees its neighbourhood.  For head t (channels ``c`` of its
    group, ``D / T`` of them), pixel p, query n and key m the logit is

        H_t(n, m)[p] = sum_c conv(Q_n)[c, p] * K_m[c, p] / sqrt(D / T)

    normalised by a softmax over the valid keys m at every pixel and head; the
    output is the weighted sum of V over m per head, and the heads are merged by
    a 3x3 convolution.  Unlike the published form, the weights differ between
    queries.  Its cost grows with N^2 D h w (about 2 x 1.1 M multiply-accumulates
    for N = 33, D = 16 and 8 x 8 maps), against N T h w D k^2 for the published
    form's key logits.

    Parameters
    ----------
    channels : int
        Channels D of each position's map.
    heads : int
        Heads T; D must be divisible by T.
    query_kernel : int
        Odd kernel size of the depthwise query convolution.
    """

    def __init__(self, *, channels: int, heads: int, query_kernel: int = 3) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels {channels} is not divisible by heads {heads}")
        if query_kernel % 2 == 0:
            raise ValueError(f"query_kernel must be odd to keep the map size, got {query_kernel}")
        self.heads = heads
        self.scale = (channels // heads) ** -0.5
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.query = nn.Conv2d(channels, channels, kernel_size=query_kernel, padding=query_kernel // 2,
                               groups=channels)
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
        q = self.query(q)

        def by_head(t: Tensor) -> Tensor:  # (B*N, D, h, w) -> (B, T, h, w, N, D/T)
            return t.unflatten(1, (self.heads, -1)).unflatten(0, (-1, n)).permute(0, 2, 4, 5, 1, 3)

        logits = (by_head(q) * self.scale) @ by_head(k).transpose(-1, -2)  # (B, T, h, w, Nq, Nk)
        key_padding = ~valid[:, None, None, None, None, :]
        weights = logits.masked_fill(key_padding, torch.finfo(logits.dtype).min).softmax(dim=-1)
        mixed = (weights @ by_head(v)).permute(0, 4, 1, 5, 2, 3)  # (B, N, T, D/T, h, w)
        return self.merge(mixed.flatten(0, 1).flatten(1, 2)).unflatten(0, (-1, n))

    def functional_macs(self, x: Tensor) -> int:
        """Multiply-accumulates per sequence outside the child modules' calls.

        The logits and the weighted sum over all N x N pairs: ``2 N^2 D h w``.

        Parameters
        ----------
        x : Tensor
            The ``(B, N, D, h, w)`` input of :meth:`forward` (only its shape is read).

        Returns
        -------
        int
        """
        _, n, d, h, w = x.shape
        return int(2 * n * n * d * h * w)
