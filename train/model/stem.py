"""The 3D-CNN stem: one feature map per window of K consecutive frames.

Windows share the stem's weights; they are folded into the batch dimension, so
the stem is one batched Conv3d stack over ``B * N`` windows.  :class:`Conv2dStem`
is the same stem written with Conv2d over time-stacked channels, for runtimes
whose Conv3d is slow (ONNX Runtime's CPU Conv3d is about 3x slower than
PyTorch's); :meth:`Conv3dStem.to_conv2d` converts one into the other exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from train.model.config import ModelConfig, StemLayer

__all__ = ["Conv2dStem", "Conv3dStem", "StemBlock"]


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


class Conv3dStem(nn.Module):
    """The paper's stem: Conv3d blocks applied to every window of K frames.

    Parameters
    ----------
    config : ModelConfig
        Supplies the window length, frame channels and stem layers.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.window = config.stem_window
        channels = (config.frame_channels, *config.stem_channels)
        self.layers = nn.ModuleList(
            StemBlock(c_in, layer) for c_in, layer in zip(channels[:-1], config.stem)
        )

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
        x = windows.flatten(0, 1).transpose(1, 2)  # (B*N, C, K, H, W)
        for layer in self.layers:
            x = layer(x)
        return x.flatten(1, 2).unflatten(0, (-1, frames.shape[1] // self.window))

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


class Conv2dStem(nn.Module):
    """A Conv3d stem rewritten as Conv2d over time-stacked channels.

    A window's ``T`` time steps of ``C`` channels are stacked into ``T * C``
    channels (time-major: channel ``t * C + c``).  A Conv3d with time kernel
    ``k_t`` then equals a Conv2d from ``T_in * C_in`` to ``T_out * C_out``
    channels whose weight holds the 3D kernel's time taps in a band pattern
    (tap ``t_in - (t_out * stride - padding)``) and zeros elsewhere, zeros that
    stand for the time padding.  Build it with :meth:`from_conv3d`.

    The Conv2d multiplies the zeros too: layers whose input time length exceeds
    their time kernel cost ``T_in / k_t`` times the Conv3d's multiply-accumulates
    (5/3 for the paper's third layer, +8.6 % for the paper's stem in total).
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
            conv3d, norm3d = block.conv, block.norm
            c_out, c_in, k_t = conv3d.weight.shape[:3]
            s_t, p_t = conv3d.stride[0], conv3d.padding[0]
            time_out = (time_in + 2 * p_t - k_t) // s_t + 1
            conv = nn.Conv2d(time_in * c_in, time_out * c_out, kernel_size=conv3d.kernel_size[1:],
                             stride=conv3d.stride[1:], padding=conv3d.padding[1:])
            weight = conv3d.weight.new_zeros(time_out, c_out, time_in, c_in, *conv3d.kernel_size[1:])
            for t_out in range(time_out):
                for tap in range(k_t):
                    t_in = t_out * s_t - p_t + tap
                    if 0 <= t_in < time_in:
                        weight[t_out, :, t_in] = conv3d.weight[:, :, tap]
            conv.weight.copy_(weight.flatten(2, 3).flatten(0, 1))
            conv.bias.copy_(conv3d.bias.repeat(time_out))
            norm = nn.BatchNorm2d(time_out * c_out, eps=norm3d.eps)
            norm.weight.copy_(norm3d.weight.repeat(time_out))
            norm.bias.copy_(norm3d.bias.repeat(time_out))
            norm.running_mean.copy_(norm3d.running_mean.repeat(time_out))
            norm.running_var.copy_(norm3d.running_var.repeat(time_out))
            layers.append(nn.Sequential(conv, norm, nn.ReLU()))
            time_in = time_out
        return cls(stem.window, layers).eval()

    def forward(self, frames: Tensor) -> Tensor:
        """``(B, M, C, H, W)`` float32 frames -> ``(B, N, D, h, w)`` float32 maps."""
        x = frames.unflatten(1, (-1, self.window)).flatten(0, 1).flatten(1, 2)  # (B*N, K*C, H, W)
        for layer in self.layers:
            x = layer(x)
        return x.unflatten(0, (-1, frames.shape[1] // self.window))
