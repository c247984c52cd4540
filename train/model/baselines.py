"""Baselines of the paper's results table, with ConvEntion's inputs and outputs.

- ``cnn_gru``: a per-frame CNN, then a GRU, in the style of Gomez et al. (2020);
  1,994,420 parameters (the paper's table: 1.993M).
- ``cnn_lstm``: the same per-frame CNN, then an LSTM, in the style of
  Carrasco-Davis et al. (2019); 2,189,060 parameters (table: 2.190M).
- ``lc_lstm``: an LSTM over light curves; each frame's flux is measured from its
  stamp by aperture photometry inside the model; 59,652 parameters (table: 60K).

They are architectures of those families sized to the table, not reproductions
of the cited papers' code.  All take ``(stamps, band_ids, times)`` like
:class:`train.model.convention.ConvEntion` and return ``(B, classes)`` logits.

Every recurrent step sees, besides the frame's image or flux, a learnt embedding
of its band id and ``log1p`` of the days since the previous real frame.

Padding: real frames (band id != 0) are first moved, in order, to the front of
the sequence (a gather with the permutation that sorts padding last), the
recurrent layer runs over all M steps, and the output at the last real frame is
taken.  Trailing padding cannot reach that output, so padding may sit anywhere
in the input.  This avoids ``pack_padded_sequence`` and exports to ONNX with a
dynamic batch axis.  A sequence without real frames gives a finite output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from train.model.config import INFERENCE_WINDOWS, INPUT_STRETCHES, SDSS_CLASSES
from train.model.convention import check_inputs, stretch_stamps
from train.model.stamp_geometry import centred_radius

__all__ = [
    "BASELINES",
    "AperturePhotometry",
    "BaselineConfig",
    "FrameRNNClassifier",
    "LightCurveLSTM",
    "build_baseline",
    "get_baseline",
]

BaselineKind = Literal["cnn_gru", "cnn_lstm", "lc_lstm"]


@dataclass(frozen=True, kw_only=True)
class BaselineConfig:
    """Shape and hyper-parameters of a baseline.

    Attributes
    ----------
    kind : {"cnn_gru", "cnn_lstm", "lc_lstm"}
        Architecture.
    stamp_size, seq_len, n_band_ids, classes
        Input geometry and outputs, as in :class:`train.model.config.ModelConfig`.
    conv_channels : tuple of int
        Per-frame CNN (image baselines): one 3x3 Conv2d + ReLU + 2x2 MaxPool per entry.
    frame_features : int
        Width of the Linear + ReLU after the CNN (image baselines).
    band_features : int
        Size of the band-id embedding appended to each step's input.
    hidden_size : int
        Recurrent state size.
    rnn_layers : int
        Stacked recurrent layers.
    dropout : float
        Dropout before the output layer (and between recurrent layers).
    aperture_radius : float
        Radius in pixels of the photometric aperture centred on the stamp (``lc_lstm``).
    annulus : tuple of float
        Inner and outer radius in pixels of the background annulus (``lc_lstm``).
    window : {"latest", "event"}
        Which frames of a longer series the model reads, as in
        :class:`train.model.config.ModelConfig`.
    input_stretch : {"linear", "asinh"}
        What the per-frame CNN reads of the stamps, as in
        :class:`train.model.config.ModelConfig` (image baselines; ``lc_lstm``'s
        photometry needs ``"linear"``).
    """

    kind: BaselineKind
    stamp_size: int = 32
    seq_len: int = 99
    n_band_ids: int = 10
    classes: tuple[str, ...] = SDSS_CLASSES
    conv_channels: tuple[int, ...] = (16, 32, 64)
    frame_features: int = 512
    band_features: int = 8
    hidden_size: int
    rnn_layers: int = 1
    dropout: float = 0.3
    aperture_radius: float = 3.0
    annulus: tuple[float, float] = (6.0, 10.0)
    window: str = "latest"
    input_stretch: str = "linear"

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise ValueError(f"BaselineConfig({self.kind!r}): {message}")

        if self.kind not in ("cnn_gru", "cnn_lstm", "lc_lstm"):
            fail("kind must be 'cnn_gru', 'cnn_lstm' or 'lc_lstm'")
        sizes = (self.stamp_size, self.seq_len, self.frame_features, self.band_features,
                 self.hidden_size, self.rnn_layers, *self.conv_channels)
        if min(sizes) < 1:
            fail("sizes must be positive")
        if self.n_band_ids < 2 or len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            fail("n_band_ids must be at least 2 and classes at least two distinct names")
        if not 0.0 <= self.dropout < 1.0:
            fail(f"dropout must be in [0, 1), got {self.dropout}")
        if self.window not in INFERENCE_WINDOWS:
            fail(f"window must be 'latest' or 'event', got {self.window!r}")
        if self.input_stretch not in INPUT_STRETCHES:
            fail(f"input_stretch must be 'linear' or 'asinh', got {self.input_stretch!r}")
        if self.kind == "lc_lstm" and self.input_stretch != "linear":
            fail("lc_lstm measures aperture fluxes, which need linear stamps: input_stretch='linear'")
        if self.kind != "lc_lstm" and self.stamp_size >> len(self.conv_channels) < 1:
            fail(f"{len(self.conv_channels)} 2x2 poolings leave nothing of {self.stamp_size}-pixel stamps")
        inner, outer = self.annulus
        if not 0 < self.aperture_radius < inner < outer <= self.stamp_size / 2:
            fail(f"need 0 < aperture_radius < annulus inner < outer <= stamp_size / 2, "
                 f"got {self.aperture_radius}, {self.annulus}")

    @property
    def stamp_channels(self) -> int:
        """Channels per frame in ``stamps``: always 1 (band-separated frames)."""
        return 1


def _gather_real_first(real: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
    """Reorder along M so that real frames come first, in their order, then padding.

    Parameters
    ----------
    real : Tensor
        ``(B, M)`` bool.
    *tensors : Tensor
        ``(B, M, ...)`` tensors to reorder.

    Returns
    -------
    tuple of Tensor
        The reordered tensors, same shapes.
    """
    m = real.shape[1]
    key = (~real).to(torch.int64) * m + torch.arange(m, device=real.device)
    order = key.argsort(dim=1)
    gathered = []
    for tensor in tensors:
        index = order[(...,) + (None,) * (tensor.ndim - 2)].expand(-1, -1, *tensor.shape[2:])
        gathered.append(torch.gather(tensor, 1, index))
    return tuple(gathered)


def _step_context(times: Tensor, real: Tensor) -> Tensor:
    """``(B, M, 1)`` float32: log1p of the days since the previous real frame (0 for the first)."""
    gap = torch.diff(times, dim=1, prepend=times[:, :1]).clamp(min=0.0)
    return torch.log1p(gap.masked_fill(~real, 0.0)).unsqueeze(-1)


def _last_real(outputs: Tensor, real: Tensor) -> Tensor:
    """``(B, M, F)`` outputs of real-first sequences -> ``(B, F)`` output at the last real frame."""
    last = (real.sum(dim=1) - 1).clamp(min=0)
    return torch.gather(outputs, 1, last[:, None, None].expand(-1, 1, outputs.shape[2]))[:, 0]


class FrameRNNClassifier(nn.Module):
    """Per-frame CNN, then a GRU (``cnn_gru``) or an LSTM (``cnn_lstm``).

    Each frame's stamp ``(1, H, W)`` goes through ``len(conv_channels)`` blocks of
    3x3 Conv2d + 2x2 MaxPool + ReLU (the same function as Conv2d + ReLU + MaxPool) and a
    Linear + ReLU to ``frame_features``;
    the band embedding and the time gap are appended; the recurrent layer's
    state at the last real frame feeds Dropout + Linear -> classes.

    Parameters
    ----------
    config : BaselineConfig
        With ``kind`` ``"cnn_gru"`` or ``"cnn_lstm"``.
    """

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        if config.kind not in ("cnn_gru", "cnn_lstm"):
            raise ValueError(f"FrameRNNClassifier builds cnn_gru or cnn_lstm, not {config.kind!r}")
        self.config = config
        layers: list[nn.Module] = []
        channels = 1
        for out in config.conv_channels:
            # max-pooling before the ReLU gives the same values and gradients (both are monotone)
            # on a quarter of the pixels
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.MaxPool2d(2), nn.ReLU()]
            channels = out
        # channels-last convolutions and pooling run 1.5-2x faster on CPU: the same function, rounding aside
        self.cnn = nn.Sequential(*layers, nn.Flatten()).to(memory_format=torch.channels_last)
        side = config.stamp_size >> len(config.conv_channels)
        self.frame_dense = nn.Sequential(nn.Linear(channels * side * side, config.frame_features), nn.ReLU())
        self.band_embedding = nn.Embedding(config.n_band_ids, config.band_features, padding_idx=0)
        rnn = nn.GRU if config.kind == "cnn_gru" else nn.LSTM
        self.rnn = rnn(config.frame_features + config.band_features + 1, config.hidden_size,
                       num_layers=config.rnn_layers, batch_first=True,
                       dropout=config.dropout if config.rnn_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden_size, len(config.classes)))

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, M, H, W)`` float32, ``(B, M)`` int64, ``(B, M)`` float32 -> ``(B, classes)`` float32."""
        return self.forward_head(self.forward_features(stamps, band_ids, times))

    def forward_features(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """Recurrent state at the last real frame, ``(B, hidden_size)`` float32."""
        if not torch.jit.is_tracing():
            check_inputs(self.config, stamps, band_ids, times)
        real = band_ids != 0
        stamps, band_ids, times, real = _gather_real_first(real, stamps, band_ids, times, real)
        stamps = stretch_stamps(stamps, self.config.input_stretch)
        frame_stamps = stamps.flatten(0, 1).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        frames = self.frame_dense(self.cnn(frame_stamps))
        steps = torch.cat([frames.unflatten(0, (-1, stamps.shape[1])), self.band_embedding(band_ids),
                           _step_context(times, real)], dim=-1)
        outputs, _ = self.rnn(steps)
        return _last_real(outputs, real)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, hidden_size)`` float32 -> ``(B, classes)`` float32 logits."""
        return self.head(features)

    def cost_stages(self) -> dict[str, list[nn.Module]]:
        """Modules of each reporting stage, for :mod:`train.model.summary`."""
        return {"frame_cnn": [self.cnn], "frame_dense": [self.frame_dense],
                "band_embedding": [self.band_embedding], "rnn": [self.rnn], "head": [self.head]}


class AperturePhotometry(nn.Module):
    """Background-subtracted aperture flux of each stamp, computed in torch.

    The flux is the sum of the pixels whose centre lies within ``radius`` of the
    centre of pixel ``(stamp_size // 2, stamp_size // 2)``, where the catalog
    puts the object, minus the mean of the pixels in the annulus ``inner <= r <
    outer`` times the number of aperture pixels.  Both are linear, so they are
    one weight plane.  On stamps normalised per band, ``(x - mean_b) / std_b``,
    the background term removes ``mean_b`` and the flux is in units of ``std_b``.

    Parameters
    ----------
    stamp_size : int
        H = W.
    radius : float
        Aperture radius in pixels.
    annulus : tuple of float
        Inner and outer background radius in pixels.
    """

    def __init__(self, stamp_size: int, radius: float, annulus: tuple[float, float]) -> None:
        super().__init__()
        distance = centred_radius(stamp_size)
        aperture = (distance <= radius).double()
        ring = ((distance >= annulus[0]) & (distance < annulus[1])).double()
        plane = aperture - ring * aperture.sum() / ring.sum()
        self.register_buffer("weights", plane.float(), persistent=False)

    def forward(self, stamps: Tensor) -> Tensor:
        """``(B, M, H, W)`` float32 -> ``(B, M)`` float32 fluxes."""
        return (stamps * self.weights).sum(dim=(-2, -1))

    def functional_macs(self, stamps: Tensor) -> int:
        """Multiply-accumulates per sequence: one per pixel (read from ``stamps``' shape)."""
        return math.prod(stamps.shape[1:])


class LightCurveLSTM(nn.Module):
    """LSTM over aperture-photometry light curves (``lc_lstm``).

    Each step's input is ``asinh`` of the frame's aperture flux, the band
    embedding and the time gap; the LSTM state at the last real frame feeds
    Dropout + Linear -> classes.

    Parameters
    ----------
    config : BaselineConfig
        With ``kind`` ``"lc_lstm"``.
    """

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        if config.kind != "lc_lstm":
            raise ValueError(f"LightCurveLSTM builds lc_lstm, not {config.kind!r}")
        self.config = config
        self.photometry = AperturePhotometry(config.stamp_size, config.aperture_radius, config.annulus)
        self.band_embedding = nn.Embedding(config.n_band_ids, config.band_features, padding_idx=0)
        self.rnn = nn.LSTM(1 + config.band_features + 1, config.hidden_size, num_layers=config.rnn_layers,
                           batch_first=True, dropout=config.dropout if config.rnn_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden_size, len(config.classes)))

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, M, H, W)`` float32, ``(B, M)`` int64, ``(B, M)`` float32 -> ``(B, classes)`` float32."""
        return self.forward_head(self.forward_features(stamps, band_ids, times))

    def forward_features(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """LSTM state at the last real frame, ``(B, hidden_size)`` float32."""
        if not torch.jit.is_tracing():
            check_inputs(self.config, stamps, band_ids, times)
        real = band_ids != 0
        flux = torch.asinh(self.photometry(stamps)).masked_fill(~real, 0.0)
        flux, band_ids, times, real = _gather_real_first(real, flux, band_ids, times, real)
        steps = torch.cat([flux.unsqueeze(-1), self.band_embedding(band_ids),
                           _step_context(times, real)], dim=-1)
        outputs, _ = self.rnn(steps)
        return _last_real(outputs, real)

    def forward_head(self, features: Tensor) -> Tensor:
        """``(B, hidden_size)`` float32 -> ``(B, classes)`` float32 logits."""
        return self.head(features)

    def cost_stages(self) -> dict[str, list[nn.Module]]:
        """Modules of each reporting stage, for :mod:`train.model.summary`."""
        return {"photometry": [self.photometry], "band_embedding": [self.band_embedding],
                "rnn": [self.rnn], "head": [self.head]}


_BASELINES = {
    "cnn_gru": lambda: BaselineConfig(kind="cnn_gru", hidden_size=480),
    "cnn_lstm": lambda: BaselineConfig(kind="cnn_lstm", hidden_size=430),
    "lc_lstm": lambda: BaselineConfig(kind="lc_lstm", hidden_size=68, rnn_layers=2),
}

#: Names accepted by :func:`get_baseline`.
BASELINES: tuple[str, ...] = tuple(_BASELINES)


def get_baseline(name: str) -> BaselineConfig:
    """Configuration of the baseline registered under ``name`` (one of :data:`BASELINES`).

    Raises
    ------
    KeyError
        If ``name`` is unknown; the message lists the available ones.
    """
    try:
        return _BASELINES[name]()
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; available: {', '.join(BASELINES)}") from None


def build_baseline(config: BaselineConfig) -> FrameRNNClassifier | LightCurveLSTM:
    """The baseline model described by ``config``."""
    if config.kind == "lc_lstm":
        return LightCurveLSTM(config)
    return FrameRNNClassifier(config)
