"""The 3D-CNN stem: one feature map per window of K consecutive frames.

Windows share the stem's weights; they are folded into the batch dimension, so
the stem is one batched Conv3d stack over ``B * N`` windows.  :class:`Conv2dStem`
is the same stem written with Conv2d over time-stacked channels, for runtimes
whose Conv3d is slow (ONNX Runtime's CPU Conv3d is about 3x slower than
PyTorch's), and without the multiplications by the time padding;
:meth:`Conv3dStem.to_conv2d` converts one into the other exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from train.model.config import ModelConfig, StemLayer

__all__ = ["Conv2dStem", "Conv3dStem", "StemBlock", "TimeStackedBlock"]


class StemBlock(nn.Module):
    """Conv3d + BatchNorm3d + ReLU over a window's (time, height, width).

    Parameters
    ----------
    in_channels : int
        Input channels.
    layer : StemLayer
        Output channels and kernel geometry.
    """

    def __init__(self, in_channels: int, layer: StemLayer) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels,
            layer.channels,
            kernel_size=(layer.time_kernel, layer.kernel, layer.kernel),
            stride=(layer.time_stride, layer.stride, layer.stride),
            padding=(layer.time_padding, layer.padding, layer.padding),
        )
        self.norm = nn.BatchNorm3d(layer.channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(W, C_in, T, H, W)`` float32 -> ``(W, C_out, T', H', W')`` float32."""
        return torch.relu(self.norm(self.conv(x)))

    def time_out(self, time_in: int) -> int:
        """Output time steps for ``time_in`` input steps."""
        (k_t, *_), (s_t, *_), (p_t, *_) = self.conv.kernel_size, self.conv.stride, self.conv.padding
        return (time_in + 2 * p_t - k_t) // s_t + 1

    def time_stacked_weight(self, time_in: int) -> Tensor:
        """The Conv3d weight as one Conv2d weight over time-stacked channels (differentiable).

        Parameters
        ----------
        time_in : int
            Input time steps T_in.

        Returns
        -------
        Tensor
            ``(T_out * C_out, T_in * C_in, kh, kw)``: block ``(t_out, t_in)`` holds the
            tap ``t_in - (t_out * stride - padding)`` of the time kernel, zeros where
            that tap falls outside it.
        """
        weight = self.conv.weight
        k_t, s_t, p_t = weight.shape[2], self.conv.stride[0], self.conv.padding[0]
        zeros = weight[:, :, 0] * 0  # tied to the weight: a zero gradient even if no tap is read, as in Conv3d
        rows = []
        for t_out in range(self.time_out(time_in)):
            taps = (t_in - (t_out * s_t - p_t) for t_in in range(time_in))
            rows.append(torch.cat([weight[:, :, tap] if 0 <= tap < k_t else zeros for tap in taps], dim=1))
        return torch.cat(rows, dim=0)

    def forward_time_stacked(self, x: Tensor, time_in: int) -> Tensor:
        """This layer on time-stacked channels: the same function as :meth:`forward`, in training as in eval.

        One Conv2d with the weight of :meth:`time_stacked_weight`, then this
        block's own BatchNorm3d (running statistics and all) on a channels-last
        view whose spatial axes are (H', W', T'): the statistics per channel run
        over the same values as in :meth:`forward`.

        Parameters
        ----------
        x : Tensor
            ``(W, T_in * C_in, H, W)`` float32, channel ``t * C_in + c``, best in
            channels-last memory format.
        time_in : int
            Input time steps T_in.

        Returns
        -------
        Tensor
            ``(W, T_out * C_out, H', W')``, channel ``t * C_out + c``, channels-last.
        """
        time_out, channels = self.time_out(time_in), self.conv.out_channels
        y = nn.functional.conv2d(x, self.time_stacked_weight(time_in), self.conv.bias.repeat(time_out),
                                 stride=self.conv.stride[1:], padding=self.conv.padding[1:])
        rows = y.permute(0, 2, 3, 1).unflatten(3, (time_out, channels))  # (W, H', W', T', C)
        y = torch.relu(self.norm(rows.permute(0, 4, 1, 2, 3)))  # (W, C, H', W', T')
        return y.permute(0, 2, 3, 4, 1).flatten(3, 4).permute(0, 3, 1, 2)


class Conv3dStem(nn.Module):
    """The paper's stem: Conv3d blocks applied to every window of K frames.

    Parameters
    ----------
    config : ModelConfig
        Supplies the window length, frame channels and stem layers.

    Attributes
    ----------
    time_stacked : bool
        Compute every block with :meth:`StemBlock.forward_time_stacked` (Conv2d over
        time-stacked channels, channels-last; the same parameters and function, in
        training as in eval): oneDNN's Conv3d with few channels is slow on CPU.
        Set by :func:`train.model.convention.training_form` for ``train.fit``; off
        as built.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.window = config.stem_window
        channels = (config.frame_channels, *config.stem_channels)
        self.layers = nn.ModuleList(
            StemBlock(c_in, layer) for c_in, layer in zip(channels[:-1], config.stem)
        )
        self.time_stacked = False

    def forward(self, frames: Tensor) -> Tensor:
        """Encode every window.

        Parameters
        ----------
        frames : Tensor
            ``(B, M, C, H, W)`` float32 frames, M a multiple of the window K.

        Returns
        -------
        Tensor
            ``(B, N, D, h, w)`` float32, one map per window, N = M / K.
        """
        windows = frames.unflatten(1, (-1, self.window))  # (B, N, K, C, H, W)
        if self.time_stacked:
            x, time = windows.flatten(0, 1).flatten(1, 2).contiguous(memory_format=torch.channels_last), self.window
            for layer in self.layers:
                x, time = layer.forward_time_stacked(x, time), layer.time_out(time)
            x = x.contiguous()  # (B*N, T' * D, h, w) with T' = 1
        else:
            x = windows.flatten(0, 1).transpose(1, 2)  # (B*N, C, K, H, W)
            for layer in self.layers:
                x = layer(x)
            x = x.flatten(1, 2)
        return x.unflatten(0, (-1, frames.shape[1] // self.window))

    @torch.no_grad()
    def to_conv2d(self) -> Conv2dStem:
        """The same stem computed with Conv2d over time-stacked channels.

        Returns
        -------
        Conv2dStem
            In eval mode: its BatchNorm2d layers copy this stem's running
            statistics, so it equals this stem in eval mode only.
        """
        return Conv2dStem.from_conv3d(self)


class TimeStackedBlock(nn.Module):
    """One stem layer over time-stacked channels: Conv2d + BatchNorm2d + ReLU per group of output time steps.

    Output time step ``t`` of a Conv3d reads the input steps its time kernel
    reaches, ``[t * stride - padding, t * stride - padding + k_t)``, clipped to
    the window; the taps that fall on the time padding multiply zeros.  A group
    of consecutive output steps becomes one Conv2d over the channel slice of the
    input steps the group reads (channel ``(t_in - lo) * C_in + c``) to the
    group's ``steps * C_out`` channels, its weight holding each step's taps in a
    band pattern and zeros elsewhere.  The groups' outputs are concatenated
    time-major (channel ``t * C_out + c``).

    :meth:`from_conv3d` makes one group per output step, which computes no zero
    tap, when that removes at least a third of the layer's multiply-accumulates
    (every layer of the paper's stem with a time padding or more input steps
    than its time kernel), and one group of all steps otherwise: per-step
    convolutions have ``T_out`` times fewer output channels, which ONNX
    Runtime's blocked kernels use less well (split, the compact stem's first
    layer, 8 channels per step, saved 22 % of its multiply-accumulates but made
    the whole compact model 1.2-1.3x slower).

    Parameters
    ----------
    in_channels : int
        Channels ``C_in`` of one input time step.
    time_in, time_out : int
        Input and output time steps.
    spans : list of tuple of int
        ``(lo, hi)``: the input time steps read by each group.
    groups : nn.ModuleList
        One ``Sequential(Conv2d, BatchNorm2d, ReLU)`` per group, in time order.
    """

    def __init__(self, in_channels: int, time_in: int, time_out: int, spans: list[tuple[int, int]],
                 groups: nn.ModuleList) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.time_in = time_in
        self.time_out = time_out
        self.spans = spans
        self.groups = groups

    @classmethod
    @torch.no_grad()
    def from_conv3d(cls, block: StemBlock, time_in: int) -> TimeStackedBlock:
        """Convert a :class:`StemBlock` applied to ``time_in`` input time steps; the result is in eval mode."""
        conv3d, norm3d = block.conv, block.norm
        c_out, c_in, k_t = conv3d.weight.shape[:3]
        s_t, p_t = conv3d.stride[0], conv3d.padding[0]
        time_out = block.time_out(time_in)
        banded = block.time_stacked_weight(time_in)  # (T_out * C_out, T_in * C_in, kh, kw)

        def span(steps: list[int]) -> tuple[int, int]:
            # A group reaching no input (all taps on padding) keeps one input step and zero weights.
            lo = min(max(steps[0] * s_t - p_t, 0), time_in - 1)
            return lo, max(min(steps[-1] * s_t - p_t + k_t, time_in), lo + 1)

        def taps(partition: list[list[int]]) -> int:
            return sum(len(steps) * (span(steps)[1] - span(steps)[0]) for steps in partition)

        split, whole = [[t] for t in range(time_out)], [list(range(time_out))]
        spans, groups = [], nn.ModuleList()
        for steps in split if 3 * taps(split) <= 2 * taps(whole) else whole:
            lo, hi = span(steps)
            conv = nn.Conv2d((hi - lo) * c_in, len(steps) * c_out, kernel_size=conv3d.kernel_size[1:],
                             stride=conv3d.stride[1:], padding=conv3d.padding[1:])
            conv.weight.copy_(banded[steps[0] * c_out:(steps[-1] + 1) * c_out, lo * c_in:hi * c_in])
            conv.bias.copy_(conv3d.bias.repeat(len(steps)))
            norm = nn.BatchNorm2d(len(steps) * c_out, eps=norm3d.eps)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, name).copy_(getattr(norm3d, name).repeat(len(steps)))
            spans.append((lo, hi))
            groups.append(nn.Sequential(conv, norm, nn.ReLU()))
        return cls(c_in, time_in, time_out, spans, groups).eval()

    def forward(self, x: Tensor) -> Tensor:
        """``(W, T_in * C_in, H, W)`` float32 -> ``(W, T_out * C_out, H', W')`` float32."""
        outputs = []
        for (lo, hi), group in zip(self.spans, self.groups):
            whole = lo == 0 and hi == self.time_in
            outputs.append(group(x if whole else x[:, lo * self.in_channels:hi * self.in_channels]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)


class Conv2dStem(nn.Module):
    """A Conv3d stem rewritten as Conv2d over time-stacked channels.

    A window's ``T`` time steps of ``C`` channels are stacked into ``T * C``
    channels (time-major: channel ``t * C + c``), and each Conv3d layer becomes
    a :class:`TimeStackedBlock`.  Build it with :meth:`from_conv3d`.

    Where a block has one Conv2d per output time step, the taps on the time
    padding, which multiply zeros, are not computed: the paper's stem runs
    13.40 G multiply-accumulates per object instead of the 20.60 G its Conv3d
    layers count, with the same result up to rounding (the compact stem keeps
    its 42.6 M).
    """

    def __init__(self, window: int, layers: nn.ModuleList) -> None:
        super().__init__()
        self.window = window
        self.layers = layers

    @classmethod
    def from_conv3d(cls, stem: Conv3dStem) -> Conv2dStem:
        """Convert a :class:`Conv3dStem`; the result is in eval mode."""
        layers = nn.ModuleList()
        time_in = stem.window
        for block in stem.layers:
            layers.append(TimeStackedBlock.from_conv3d(block, time_in))
            time_in = layers[-1].time_out
        return cls(stem.window, layers).eval()

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, M, C, H, W)`` float32 frames -> ``(B, N, D, h, w)`` float32 maps."""
        x = frames.unflatten(1, (-1, self.window)).flatten(0, 1).flatten(1, 2)  # (B*N, K*C, H, W)
        for layer in self.layers:
            x = layer(x)
        return x.unflatten(0, (-1, frames.shape[1] // self.window))
