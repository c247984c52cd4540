"""The ConvEntion model (Bairouk et al. 2023): band embedding, 3D-CNN stem,
convolutional-attention transformer and classification head.

Data flow for a batch of B sequences of M frames (N = M / K windows):

    stamps (B, M, H, W), band_ids (B, M), times (B, M)
      -> frames (B, M, 2, H, W): [stamp, band plane]
         (B, M, 3, H, W): [stamp, stamp - band reference, band plane] with difference_channel
      -> stem over windows of K frames -> (B, N, D, h, w)
      -> + positional encoding
      -> L x [x + Attn(LN(x)); x + FFN(LN(x))]
      -> max over valid positions -> (B, D, h, w)        (end of forward_features)
         [and R recency-weighted means over the windows -> (B, R) with recency_summary = R]
         [and S features of the per-band coadds -> (B, S) with scene_summary = S]
         [and L features of the difference light curve -> (B, L) with lightcurve_summary = L]
      -> [FeatureNorm,] flatten, [concat summaries,] Dropout, Linear, ReLU, Dropout, Linear -> (B, classes)

Padding: frames with band id 0 are padding; their stamps are zeroed.  A window
is valid if any of its frames is real.  Invalid windows are excluded from the
LayerNorm statistics, from the attention keys and from the final max, so in
eval mode the logits do not depend on what padding windows contain.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from train.model.attention import ConvAttention, ConvDotAttention
from train.model.config import ModelConfig, NormAffine
from train.model.stamp_geometry import centred_radius
from train.model.stem import Conv2dStem, Conv3dStem

__all__ = [
    "MEAN_FLUX_STEP",
    "NARROW_STEM_CHANNELS",
    "BandReference",
    "ClassifierHead",
    "ConvEntion",
    "FeatureNorm",
    "FeedForward",
    "MaskedLayerNorm",
    "PositionalEncoding",
    "TransformerBlock",
    "RecencySummary",
    "SceneSummary",
    "LightCurveSummary",
    "attend_once_per_sequence",
    "check_inputs",
    "initial_apertures",
    "lightcurve_features",
    "masked_max",
    "stretch_stamps",
    "to_conv2d_stem",
    "training_form",
]


def _sinusoid(position: Tensor, frequencies: Tensor, odd: Tensor) -> Tensor:
    """``(...)`` positions -> ``(..., D)``: sin(p f_c) on even channels, cos(p f_c) on odd ones."""
    angle = position.unsqueeze(-1) * frequencies
    return torch.where(odd, torch.cos(angle), torch.sin(angle))


class PositionalEncoding(nn.Module):
    """Sinusoidal encoding of the window index or of the window's time, added to every pixel.

    Channel ``c = 2i`` receives ``sin(p / 10000^(2i/D))`` and ``c = 2i + 1``
    receives ``cos(p / 10000^(2i/D))``, where ``p`` is the window index n
    (``"sinusoidal"``, paper eq. 4-6) or, for ``"time"``, the mean MJD of the
    window's real frames minus the MJD of the sequence's first real frame, in
    days.  ``"none"`` adds nothing.

    Parameters
    ----------
    config : ModelConfig
        Supplies the kind, D, N and K.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.kind = config.positional_encoding
        self.window = config.stem_window
        channel = torch.arange(config.d_model)
        frequencies = 10000.0 ** (-(channel // 2 * 2).double() / config.d_model)
        odd = channel % 2 == 1
        positions = torch.arange(config.n_positions, dtype=torch.float64)
        self.register_buffer("frequencies", frequencies.float(), persistent=False)
        self.register_buffer("odd", odd, persistent=False)
        self.register_buffer("table", _sinusoid(positions, frequencies, odd).float(), persistent=False)

    def forward(self, x: Tensor, times: Tensor, real: Tensor) -> Tensor:
        """Add the encoding.

        Parameters
        ----------
        x : Tensor
            ``(B, N, D, h, w)`` float32 window maps.
        times : Tensor
            ``(B, M)`` float32 MJD of each frame (read by ``"time"`` only).
        real : Tensor
            ``(B, M)`` bool, False on padding frames.

        Returns
        -------
        Tensor
            ``(B, N, D, h, w)`` float32.
        """
        if self.kind == "none":
            return x
        if self.kind == "sinusoidal":
            return x + self.table[: x.shape[1], :, None, None]
        encoding = _sinusoid(self.window_times(times, real), self.frequencies, self.odd)
        return x + encoding[..., None, None]

    def window_times(self, times: Tensor, real: Tensor) -> Tensor:
        """Mean time of each window's real frames relative to the first real frame.

        Parameters
        ----------
        times : Tensor
            ``(B, M)`` float32 MJD.
        real : Tensor
            ``(B, M)`` bool.

        Returns
        -------
        Tensor
            ``(B, N)`` float32 days; 0 for windows without real frames.
        """
        start = times.masked_fill(~real, math.inf).amin(dim=1, keepdim=True)
        relative = (times - start).masked_fill(~real, 0.0).unflatten(1, (-1, self.window))
        weight = real.to(times.dtype).unflatten(1, (-1, self.window))
        return relative.sum(-1) / weight.sum(-1).clamp(min=1.0)


class MaskedLayerNorm(nn.Module):
    """LayerNorm over (N, D, h, w) jointly, with statistics from valid positions only.

    The authors normalise each sequence's whole (D, 9, 9, N) block.  Here the
    mean and variance are taken over the valid positions only, so padding does
    not shift them; with no padding this is exactly ``nn.LayerNorm((N, D, h, w))``.
    Outputs at invalid positions are set to zero.

    Parameters
    ----------
    shape : tuple of int
        ``(N, D, h, w)``.
    affine : {"element", "channel"}
        Scale and shift per element of ``shape`` (as the authors) or per channel D.
    eps : float
        Added to the variance.
    """

    def __init__(self, shape: tuple[int, int, int, int], affine: str = "element", eps: float = 1e-5) -> None:
        super().__init__()
        n, d, h, w = shape
        param_shape = (n, d, h, w) if affine == "element" else (d, 1, 1)
        self.weight = nn.Parameter(torch.ones(param_shape))
        self.bias = nn.Parameter(torch.zeros(param_shape))
        self.eps = eps

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """``(B, N, D, h, w)`` float32 and ``(B, N)`` bool -> ``(B, N, D, h, w)`` float32."""
        mask = valid.to(x.dtype)[:, :, None, None, None]
        dims = (1, 2, 3, 4)
        count = mask.sum(dims, keepdim=True).clamp(min=1.0) * (x.shape[2] * x.shape[3] * x.shape[4])
        mean = (x * mask).sum(dims, keepdim=True) / count
        centred = (x - mean) * mask
        variance = centred.square().sum(dims, keepdim=True) / count
        weight, bias = self.weight, self.bias
        if weight.ndim == 4:  # per element: the first N' positions of a shorter sequence
            weight, bias = weight[: x.shape[1]], bias[: x.shape[1]]
        return (centred * torch.rsqrt(variance + self.eps) * weight + bias) * mask


class FeedForward(nn.Module):
    """Per-position FFN: Conv2d 3x3 D -> F, ReLU, BN, Conv2d 3x3 F -> D, ReLU, BN.

    Parameters
    ----------
    channels : int
        D.
    hidden : int
        F (2D in the paper).
    """

    def __init__(self, *, channels: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, N, D, h, w)`` float32 -> ``(B, N, D, h, w)`` float32."""
        return self.layers(x.flatten(0, 1)).unflatten(0, (-1, x.shape[1]))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: ``x + Attn(LN(x))`` then ``x + FFN(LN(x))``.

    Parameters
    ----------
    config : ModelConfig
        Supplies D, heads, FFN width, logit kernel, map size and norm affine.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        shape = (config.n_positions, config.d_model, config.map_size, config.map_size)
        self.norm1 = MaskedLayerNorm(shape, config.norm_affine)
        self.attention: ConvAttention | ConvDotAttention
        if config.attention == "dot":
            self.attention = ConvDotAttention(
                channels=config.d_model, heads=config.heads, query_kernel=config.logit_kernel
            )
        else:
            self.attention = ConvAttention(
                channels=config.d_model, heads=config.heads, logit_kernel=config.logit_kernel
            )
        self.norm2 = MaskedLayerNorm(shape, config.norm_affine)
        self.ffn = FeedForward(channels=config.d_model, hidden=config.ffn_channels)

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        """``(B, N, D, h, w)`` float32 and ``(B, N)`` bool -> ``(B, N, D, h, w)`` float32."""
        x = x + self.attention(self.norm1(x, valid), valid)
        return x + self.ffn(self.norm2(x, valid))


def check_inputs(config: Any, stamps: Tensor, band_ids: Tensor, times: Tensor) -> None:
    """Check the shapes and dtypes of a model's inputs against its configuration.

    Parameters
    ----------
    config : ModelConfig or BaselineConfig
        Supplies ``seq_len``, ``stamp_size`` and ``stamp_channels``.
    stamps, band_ids, times : Tensor
        As for :meth:`ConvEntion.forward`.

    Raises
    ------
    ValueError
        On a shape mismatch, naming the expected shape.
    TypeError
        On a wrong dtype, saying how to cast.
    """
    side = config.stamp_size
    frame = (side, side) if config.stamp_channels == 1 else (config.stamp_channels, side, side)
    window = getattr(config, "stem_window", None)
    length = stamps.shape[1] if stamps.ndim == 2 + len(frame) else -1
    shorter_ok = window is not None and 0 < length <= config.seq_len and length % window == 0
    if stamps.ndim != 2 + len(frame) or tuple(stamps.shape[2:]) != frame or not (
            length == config.seq_len or shorter_ok):
        whole = f" or a shorter whole number of windows of {window}" if window else ""
        raise ValueError(
            f"stamps must have shape (B, {config.seq_len}, {', '.join(map(str, frame))}), "
            f"got {tuple(stamps.shape)}; pad or cut sequences to seq_len={config.seq_len}{whole}"
        )
    if tuple(band_ids.shape) != tuple(stamps.shape[:2]) or tuple(times.shape) != tuple(stamps.shape[:2]):
        raise ValueError(
            f"band_ids {tuple(band_ids.shape)} and times {tuple(times.shape)} must have "
            f"shape (B, M) = {tuple(stamps.shape[:2])}"
        )
    if band_ids.dtype != torch.int64:
        raise TypeError(f"band_ids must be int64, got {band_ids.dtype}; cast with .long()")
    if not (stamps.is_floating_point() and times.is_floating_point()):
        raise TypeError(f"stamps and times must be floating point, got {stamps.dtype} and {times.dtype}")


def stretch_stamps(stamps: Tensor, stretch: str) -> Tensor:
    """What a network reads of band-normalised stamps (``ModelConfig.input_stretch``).

    Parameters
    ----------
    stamps : Tensor
        float32 of any shape; padding frames are 0 and stay 0.
    stretch : {"linear", "asinh"}

    Returns
    -------
    Tensor
        ``stamps`` itself, or their elementwise asinh (same shape and dtype).
    """
    return torch.asinh(stamps) if stretch == "asinh" else stamps


def stack_bands_by_night(stamps: Tensor, band_ids: Tensor, times: Tensor,
                         n_bands: int) -> tuple[Tensor, Tensor, Tensor]:
    """Regroup band-separated frames into zero-filled multi-band frames, one per night.

    Consecutive real frames less than half a day apart form a night; each night
    becomes one step with a channel per band (the mean when a band was observed
    twice that night, zero when not at all).  Nights fill the leading steps.

    Parameters
    ----------
    stamps : Tensor
        ``(B, M, H, W)`` float32, band-separated.
    band_ids : Tensor
        ``(B, M)`` int64, 0 = padding, ``1 .. n_bands``; real frames first, in time order.
    times : Tensor
        ``(B, M)`` float32 days.
    n_bands : int
        Channels C of the stacked frames.

    Returns
    -------
    stamps : Tensor
        ``(B, M, C, H, W)`` float32.
    band_ids : Tensor
        ``(B, M)`` int64: 1 on the steps holding a night, 0 on padding.
    times : Tensor
        ``(B, M)`` float32: the time of each night's first frame, 0 on padding.
    """
    batch, length = band_ids.shape
    side = stamps.shape[2:]
    real = band_ids != 0
    new_night = torch.diff(times, dim=1, prepend=times[:, :1]) > 0.5
    # night of each frame; padding goes to a spare slot (index `length`) dropped at the end
    night = torch.cumsum((new_night & real).long(), dim=1).masked_fill(~real, length)
    slot = night * n_bands + (band_ids - 1).clamp(min=0)  # (B, M) in [0, (M + 1) * C)
    pixels = stamps.flatten(2)
    sums = pixels.new_zeros(batch, (length + 1) * n_bands, pixels.shape[2])
    sums = sums.scatter_add(1, slot[..., None].expand_as(pixels), pixels)
    counts = pixels.new_zeros(batch, (length + 1) * n_bands).scatter_add(1, slot, real.to(pixels.dtype))
    stacked = (sums / counts.clamp(min=1)[..., None]).unflatten(1, (length + 1, n_bands))[:, :length]
    present = counts.unflatten(1, (length + 1, n_bands))[:, :length].sum(dim=2) > 0
    first_time = times.new_full((batch, length + 1), float("inf"))
    first_time = first_time.scatter_reduce(1, night, times.masked_fill(~real, float("inf")), reduce="amin")
    first_time = torch.where(present, first_time[:, :length], torch.zeros_like(first_time[:, :length]))
    return stacked.unflatten(-1, side), present.long(), first_time


def masked_max(x: Tensor, valid: Tensor) -> Tensor:
    """Maximum over valid positions.

    Parameters
    ----------
    x : Tensor
        ``(B, N, D, h, w)`` float32.
    valid : Tensor
        ``(B, N)`` bool.

    Returns
    -------
    Tensor
        ``(B, D, h, w)`` float32; zeros for sequences without a valid position.
    """
    invalid = ~valid[:, :, None, None, None]
    pooled = x.masked_fill(invalid, torch.finfo(x.dtype).min).amax(dim=1)
    return pooled * valid.any(dim=1).to(x.dtype)[:, None, None, None]


class FeatureNorm(nn.Module):
    """LayerNorm of each object's pooled features ``(D, h, w)`` jointly.

    Parameters
    ----------
    shape : tuple of int
        ``(D, h, w)``.
    affine : {"element", "channel"}
        Scale and shift per element of ``shape`` or per channel D.
    eps : float
        Added to the variance.
    """

    def __init__(self, shape: tuple[int, int, int], affine: NormAffine = "element", eps: float = 1e-5) -> None:
        super().__init__()
        d = shape[0]
        param_shape = shape if affine == "element" else (d, 1, 1)
        self.weight = nn.Parameter(torch.ones(param_shape))
        self.bias = nn.Parameter(torch.zeros(param_shape))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """``(B, D, h, w)`` float32 -> ``(B, D, h, w)`` float32."""
        x = x.float()  # statistics in float32 under bf16 autocast
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        centred = x - mean
        variance = centred.square().mean(dim=(1, 2, 3), keepdim=True)
        return centred * torch.rsqrt(variance + self.eps) * self.weight + self.bias


class RecencySummary(nn.Module):
    """R features of the windows, each a mean weighted by how recent the window is.

    Each window gives ``u = tanh(Linear([map mean, map max, log1p(days since the
    previous window)]))``, ``(R,)``; feature r is the mean of ``u_r`` over the valid
    windows weighted by ``exp(-(t_last - t) / tau_r)``, where ``t`` is the window's
    time, ``t_last`` the latest valid window's and ``tau_r`` a learnt time scale
    (initialised from 1 to 300 days, log-spaced).  Short and long scales side by side
    tell the head what the object does now against what it did before, which the
    max over windows cannot.  Sums over valid windows only, with no loop and no
    data-dependent shape: exact when a sequence is cut after its last valid window,
    and exported with a dynamic sequence axis.

    Parameters
    ----------
    config : ModelConfig
        Supplies D and the width R (``recency_summary``).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        width = config.recency_summary
        self.project = nn.Linear(2 * config.d_model + 1, width)
        self.log_scale = nn.Parameter(torch.linspace(0.0, math.log(300.0), width))

    def forward(self, x: Tensor, window_times: Tensor, valid: Tensor) -> Tensor:
        """Summarise the sequence.

        Parameters
        ----------
        x : Tensor
            ``(B, N, D, h, w)`` float32 transformer output.
        window_times : Tensor
            ``(B, N)`` float32 days of each window since the first real frame.
        valid : Tensor
            ``(B, N)`` bool.

        Returns
        -------
        Tensor
            ``(B, R)`` float32; zeros for sequences without a valid window.
        """
        window_times = window_times.float()
        gap = torch.diff(window_times, dim=1, prepend=window_times[:, :1]).clamp(min=0.0)
        steps = torch.cat([x.float().mean(dim=(3, 4)), x.float().amax(dim=(3, 4)),
                           torch.log1p(gap.masked_fill(~valid, 0.0)).unsqueeze(-1)], dim=-1)
        values = torch.tanh(self.project(steps))  # (B, N, R)
        latest = window_times.masked_fill(~valid, -math.inf).amax(dim=1, keepdim=True)  # (B, 1)
        age = (latest - window_times).masked_fill(~valid, 0.0).clamp(min=0.0)  # (B, N) days before the latest
        weights = torch.exp(-age.unsqueeze(-1) / torch.exp(self.log_scale)) * valid.unsqueeze(-1).float()
        return (weights * values).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-12)


class ClassifierHead(nn.Module):
    """[FeatureNorm,] Flatten, [concat the summaries,] Dropout, Linear -> width, ReLU, Dropout, Linear -> classes.

    Parameters
    ----------
    config : ModelConfig
        Supplies D, the map size, the width, the dropout, the classes,
        whether the features are normalised first (``head_norm``) and the widths
        of the recency, scene and light-curve summaries joined to them.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        features = (config.d_model * config.map_size**2 + config.recency_summary + config.scene_summary
                    + config.lightcurve_summary)
        shape = (config.d_model, config.map_size, config.map_size)
        self.norm = FeatureNorm(shape, config.norm_affine) if config.head_norm else nn.Identity()
        self.layers = nn.Sequential(  # the Flatten is a no-op on the joined (B, F) features; kept for the weights' names
            nn.Flatten(),
            nn.Dropout(config.dropout),
            nn.Linear(features, config.head_width),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_width, len(config.classes)),
        )

    def forward(self, features: Tensor, summary: Tensor | None = None) -> Tensor:
        """``(B, D, h, w)`` float32 features [and ``(B, R + S + L)`` float32 summaries] -> ``(B, classes)`` float32 logits."""
        flat = self.norm(features).flatten(1)
        if summary is not None:
            flat = torch.cat([flat, summary.to(flat.dtype)], dim=1)
        return self.layers(flat)


class BandReference(nn.Module):
    """Each frame minus the mean of the object's real frames in the same band.

    An in-graph difference image against the object's own per-band reference:
    ``d_m = x_m - mean{x_j : band_j = band_m, j real}``, zero on padding frames.
    Two batched matrix products with the one-hot band matrix (no loop, no
    data-dependent shape), in float32 even under bf16 autocast (a bf16 reference
    would round away differences of a few per mille of a bright host).  Padding
    frames enter no mean, so cutting a sequence after its last real window
    leaves every difference unchanged.

    Parameters
    ----------
    n_band_ids : int
        Band vocabulary size including padding id 0.
    """

    def __init__(self, n_band_ids: int) -> None:
        super().__init__()
        self.register_buffer("bands", torch.arange(1, n_band_ids), persistent=False)

    def means(self, stamps: Tensor, band_ids: Tensor,
              dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
        """The object's mean stamp in each band (its coadd), in float32 (or ``dtype``).

        Parameters
        ----------
        stamps : Tensor
            ``(B, M, H, W)`` float32, zero on padding frames.
        band_ids : Tensor
            ``(B, M)`` int64, 0 on padding.

        Returns
        -------
        means : Tensor
            ``(B, bands, H*W)`` float32, bands = ``n_band_ids - 1``; zero for a band
            without a real frame.
        counts : Tensor
            ``(B, bands)`` float32 real frames per band.
        one_hot : Tensor
            ``(B, M, bands)`` float32 band of each frame (all zero on padding).
        """
        device_type = stamps.device.type if stamps.device.type in ("cpu", "cuda") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            flat = stamps.to(dtype).flatten(2)  # (B, M, H*W)
            one_hot = (band_ids.unsqueeze(-1) == self.bands).to(dtype)  # (B, M, bands)
            counts = one_hot.sum(dim=1)  # (B, bands)
            means = torch.matmul(one_hot.transpose(1, 2), flat) / counts.clamp(min=1.0).unsqueeze(-1)
            return means, counts, one_hot

    def forward(self, stamps: Tensor, band_ids: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(B, M, H, W)`` float32 stamps zeroed on padding, ``(B, M)`` int64 band ids -> ``(B, M, H, W)``
        float32 (or ``dtype``)."""
        device_type = stamps.device.type if stamps.device.type in ("cpu", "cuda") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            means, _, one_hot = self.means(stamps, band_ids, dtype)
            reference = torch.matmul(one_hot, means)  # (B, M, H*W); 0 on padding
            return (stamps.to(dtype).flatten(2) - reference).view_as(stamps)

    def functional_macs(self, stamps: Tensor) -> int:
        """MACs of one call for ``(B, M, H, W)`` stamps: the two band-matrix products."""
        return 2 * stamps.numel() * self.bands.numel()


class SceneSummary(nn.Module):
    """S features of the object's static scene: a small CNN over its per-band coadds.

    The coadds are the mean stamps of each band's real frames
    (:meth:`BandReference.means`), ``(bands, H, W)`` with a zero plane for a band
    the object lacks.  Three 3x3 convolutions with ReLU (16 channels; the last two
    of stride 2) bring them to ``(16, H/4, W/4)``, which is flattened (so where the
    light sits relative to the centre is kept) and joined by the share of the
    object's frames in each band; ``tanh(Linear(.))`` gives the S features.  Only
    real frames enter a coadd, so cutting a sequence after its last real window
    leaves the features unchanged, and the graph has no loop or data-dependent
    shape.  No BatchNorm: the features of one object do not depend on the batch
    in training either.

    Parameters
    ----------
    config : ModelConfig
        Supplies the stamp size, the band vocabulary and the width S (``scene_summary``).
    """

    channels = 16

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        bands = config.n_band_ids - 1
        self.coadds = BandReference(config.n_band_ids)
        self.convolutions = nn.Sequential(
            nn.Conv2d(bands, self.channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(self.channels, self.channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(self.channels, self.channels, 3, stride=2, padding=1), nn.ReLU(),
        )
        side = config.stamp_size // 4
        self.project = nn.Linear(self.channels * side * side + bands, config.scene_summary)

    def forward(self, stamps: Tensor, band_ids: Tensor) -> Tensor:
        """``(B, M, H, W)`` float32 stamps zeroed on padding, ``(B, M)`` int64 band ids -> ``(B, S)`` float32."""
        means, counts, _ = self.coadds.means(stamps, band_ids)
        coadds = means.unflatten(-1, stamps.shape[-2:])  # (B, bands, H, W)
        share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0)
        features = self.convolutions(coadds).flatten(1)
        return torch.tanh(self.project(torch.cat([features, share.to(features.dtype)], dim=1))).float()

    def functional_macs(self, stamps: Tensor) -> int:
        """MACs of the coadds for ``(B, M, H, W)`` stamps (the layers count their own)."""
        return stamps.numel() * self.coadds.bands.numel()


def initial_apertures(side: int) -> Tensor:
    """``(4, side, side)`` float32 aperture planes of unit sum around the stamp's centre: discs of
    radius 1.5, 3 and 5 pixels and an annulus of 6-10 pixels."""
    radius = centred_radius(side)
    planes = torch.stack([radius <= 1.5, radius <= 3.0, radius <= 5.0, (radius >= 6.0) & (radius <= 10.0)]).float()
    return planes / planes.sum(dim=(1, 2), keepdim=True)


#: Resolution of a band's mean asinh flux under ``lightcurve_features(..., rounding_guard=True)`` (2^-30, about
#: 1e-9 in normalised units).
MEAN_FLUX_STEP = 2.0 ** -30


def lightcurve_features(stamps: Tensor, band_ids: Tensor, times: Tensor, aperture: Tensor,
                        reference: BandReference, day_scale: float = 100.0,
                        dtype: torch.dtype = torch.float32, rounding_guard: bool = False) -> Tensor:
    """The light-curve features :class:`LightCurveSummary` projects (see its notes), in float32 (or ``dtype``).

    Parameters
    ----------
    stamps : Tensor
        ``(B, M, H, W)`` float32 (float64 for ``dtype=torch.float64``), zero on padding frames.
    band_ids : Tensor
        ``(B, M)`` int64, 0 on padding.
    times : Tensor
        ``(B, M)`` MJD, float32 or float64.
    aperture : Tensor
        ``(A, H, W)`` aperture planes.
    reference : BandReference
        The object's per-band means, subtracted from each frame.
    day_scale : float
        Days are divided by this.
    dtype : torch.dtype
        Arithmetic of the features: float32, or float64 (asinh then as
        ``sign(x) log(|x| + sqrt(x^2 + 1))``, which ONNX Runtime has in float64).
    rounding_guard : bool
        A band's mean flux exactly 0 for a band of at most two frames (its fluxes
        against its mean frame are then 0, or +d and -d) and a multiple of
        :data:`MEAN_FLUX_STEP` otherwise, instead of rounding that runtimes and
        batch sizes leave differently (what trees read, :mod:`train.model.trees`).

    Returns
    -------
    Tensor
        ``(B, bands * (3 A + 1) + 3)`` of ``dtype``: per band and aperture the maximum, minimum
        and mean asinh flux; per band the lag of its brightest frame; the days to and
        from the brightest frame and ``log1p(frames) / 5``.
    """
    device_type = stamps.device.type if stamps.device.type in ("cpu", "cuda") else "cpu"
    with torch.autocast(device_type=device_type, enabled=False):
        difference = reference(stamps, band_ids, dtype).flatten(2)  # (B, M, H*W)
        raw = torch.matmul(difference, aperture.to(dtype).flatten(1).t())  # (B, M, A)
        if dtype == torch.float32:
            flux = torch.asinh(raw)
        else:
            size = raw.abs()
            flux = torch.where(raw < 0, -1.0, 1.0).to(dtype) * torch.log(size + torch.sqrt(size * size + 1.0))
        in_band = (band_ids.unsqueeze(-1) == reference.bands).unsqueeze(-1)  # (B, M, bands, 1)
        has_band = in_band.any(dim=1)  # (B, bands, 1)
        per_band = flux.unsqueeze(2)  # (B, M, 1, A)
        highest = per_band.masked_fill(~in_band, -math.inf).amax(dim=1).masked_fill(~has_band, 0.0)
        lowest = per_band.masked_fill(~in_band, math.inf).amin(dim=1).masked_fill(~has_band, 0.0)
        counts = in_band.to(dtype).sum(dim=1).clamp(min=1.0)
        mean = (per_band * in_band.to(dtype)).sum(dim=1) / counts  # (B, bands, A)
        if rounding_guard:
            stepped = torch.round(mean / MEAN_FLUX_STEP) * MEAN_FLUX_STEP  # a power of 2: exact
            mean = torch.where(counts <= 2, torch.zeros_like(stepped), stepped)

        real = band_ids != 0
        days = times.to(dtype) - times.to(dtype).masked_fill(~real, math.inf).amin(dim=1, keepdim=True)
        days = days.masked_fill(~real, 0.0)  # (B, M) days since the first real frame
        core = flux[..., 0].masked_fill(~real, -math.inf)  # (B, M)
        brightest = torch.gather(days, 1, core.argmax(dim=1, keepdim=True))  # (B, 1)
        band_core = core.unsqueeze(-1).masked_fill(~in_band[..., 0], -math.inf)  # (B, M, bands)
        band_peak = torch.gather(days.unsqueeze(-1).expand_as(band_core), 1, band_core.argmax(dim=1, keepdim=True))
        band_lag = ((band_peak[:, 0] - brightest) * has_band[..., 0].to(dtype)) / day_scale  # (B, bands)
        last = days.amax(dim=1, keepdim=True)
        overall = torch.cat([brightest / day_scale, (last - brightest) / day_scale,
                             torch.log1p(real.to(dtype).sum(dim=1, keepdim=True)) / 5.0], dim=1)
        return torch.cat([highest.flatten(1), lowest.flatten(1), mean.flatten(1), band_lag, overall], dim=1)


class LightCurveSummary(nn.Module):
    """L features of the object's difference light curve, measured in the graph.

    Each frame's difference stamp (the stamp minus the object's mean stamp in its
    band, :class:`BandReference`) is weighed by A = 4 learnt aperture planes,
    initialised as discs of radius 1.5, 3 and 5 pixels and an annulus of 6-10
    pixels around the stamp's centre, each of unit sum: A fluxes per frame,
    compressed by ``asinh``.  Per band and aperture: the maximum, the minimum and
    the mean over the band's real frames; per band, the days from the object's
    brightest frame (aperture 0, over all bands) to the band's brightest frame;
    and over all frames, the days from the first real frame to the brightest one,
    from it to the last, and ``log1p`` of the number of real frames (/ 5).  Bands
    without a real frame give zeros.  ``tanh(Linear(.))`` of these gives the L
    features.  Only real frames enter, so cutting a sequence after its last real
    window leaves them unchanged; no loop and no data-dependent shape.

    Parameters
    ----------
    config : ModelConfig
        Supplies the stamp size, the band vocabulary and the width L (``lightcurve_summary``).
    """

    apertures = 4
    #: Days are divided by this before they enter the Linear layer.
    day_scale = 100.0

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        side = config.stamp_size
        bands = config.n_band_ids - 1
        self.reference = BandReference(config.n_band_ids)
        self.aperture = nn.Parameter(initial_apertures(side))
        self.project = nn.Linear(bands * (3 * self.apertures + 1) + 3, config.lightcurve_summary)

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """``(B, M, H, W)`` float32 stamps zeroed on padding, ``(B, M)`` int64 band ids and
        float32 MJD -> ``(B, L)`` float32."""
        device_type = stamps.device.type if stamps.device.type in ("cpu", "cuda") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            features = lightcurve_features(stamps, band_ids, times, self.aperture, self.reference, self.day_scale)
            return torch.tanh(self.project(features))

    def functional_macs(self, stamps: Tensor) -> int:
        """MACs of the apertures for ``(B, M, H, W)`` stamps (the band reference and the Linear count their own)."""
        return stamps.numel() * self.apertures


class ConvEntion(nn.Module):
    """ConvEntion classifier of image time series.

    Parameters
    ----------
    config : ModelConfig
        The architecture; see :func:`train.model.config.get_preset`.

    Notes
    -----
    Inputs of :meth:`forward`, for a batch of B sequences of M frames of H x W pixels:

    - ``stamps``: ``(B, M, H, W)`` float32, already normalised band-wise
      (``(B, M, C, H, W)`` when ``config.stamp_channels = C > 1``);
    - ``band_ids``: ``(B, M)`` int64, 0 = padding, ``1 .. n_band_ids - 1`` = bands;
    - ``times``: ``(B, M)`` float32 MJD, 0 on padding; read only by the ``"time"``
      positional encoding but always accepted.

    The output is ``(B, classes)`` float32 logits.  Band ids outside
    ``[0, n_band_ids)`` are an indexing error.  The graph has no Python loop over
    positions or batch and no data-dependent control flow, so it exports to ONNX
    with a dynamic batch axis and a dynamic sequence axis.

    The sequence may also be shorter than ``seq_len``, by whole windows: real frames
    come first, so in eval mode a batch cut after its last window that holds a
    real frame gives the same logits as the same batch padded to ``seq_len``
    (padding windows are excluded from every statistic, key and maximum, and
    position n keeps its encoding and its norm parameters).  The runtime uses this
    to run only the windows an object has.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        side = config.stamp_size
        self.band_embedding = (
            nn.Embedding(config.n_band_ids, side * side, padding_idx=0) if config.band_embedding else None
        )
        self.band_reference = BandReference(config.n_band_ids) if config.difference_channel else None
        self.stem: Conv3dStem | Conv2dStem = Conv3dStem(config)
        self.positional_encoding = PositionalEncoding(config)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.layers))
        self.recency = RecencySummary(config) if config.recency_summary else None
        self.scene = SceneSummary(config) if config.scene_summary else None
        self.lightcurve = LightCurveSummary(config) if config.lightcurve_summary else None
        self.head = ClassifierHead(config)

    def forward(self, stamps: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """Classify sequences: ``(B, classes)`` float32 logits (see the class notes for inputs)."""
        return self.forward_head(*self.forward_features(stamps, band_ids, times))

    def forward_features(self, stamps: Tensor, band_ids: Tensor,
                         times: Tensor) -> tuple[Tensor, Tensor | None]:
        """Everything up to the head: the maximum of the transformer output over valid
        positions, and the summaries.

        Both belong here because they are the last steps that need the padding mask.

        Returns
        -------
        features : Tensor
            ``(B, D, h, w)`` float32.
        summary : Tensor or None
            ``(B, R + S + L)`` float32: the recency summary (``config.recency_summary = R``),
            the scene summary (``config.scene_summary = S``) and the light-curve summary
            (``config.lightcurve_summary = L``); None when all are 0.
        """
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):  # traced shapes are not ints
            check_inputs(self.config, stamps, band_ids, times)
        stamps = stretch_stamps(stamps, self.config.input_stretch)
        if self.config.band_input == "stacked":
            stamps, band_ids, times = stack_bands_by_night(stamps, band_ids, times, self.config.n_band_ids - 1)
        real = band_ids != 0
        valid = self.window_valid(band_ids)
        frames = self.frames(stamps, band_ids)
        x = self.stem(frames)
        x = self.positional_encoding(x, times, real)
        for block in self.blocks:
            x = block(x, valid)
        return masked_max(x, valid), self.summary(x, times, real, valid, frames, band_ids)

    def summary(self, x: Tensor, times: Tensor, real: Tensor, valid: Tensor,
                frames: Tensor, band_ids: Tensor) -> Tensor | None:
        """The summaries that join the pooled features before the head.

        Parameters
        ----------
        x : Tensor
            ``(B, N, D, h, w)`` float32 transformer output.
        times : Tensor
            ``(B, M)`` float32 MJD.
        real : Tensor
            ``(B, M)`` bool real frames.
        valid : Tensor
            ``(B, N)`` bool valid windows.
        frames : Tensor
            ``(B, M, C, H, W)`` float32 stem input (:meth:`frames`); channel 0 is the stamp.
        band_ids : Tensor
            ``(B, M)`` int64.

        Returns
        -------
        Tensor or None
            ``(B, R + S + L)`` float32, None without any summary.
        """
        parts = []
        if self.recency is not None:
            parts.append(self.recency(x, self.positional_encoding.window_times(times, real), valid))
        if self.scene is not None:
            parts.append(self.scene(frames[:, :, 0], band_ids))
        if self.lightcurve is not None:
            parts.append(self.lightcurve(frames[:, :, 0], band_ids, times))
        return torch.cat(parts, dim=1) if parts else None

    def forward_head(self, features: Tensor, summary: Tensor | None = None) -> Tensor:
        """``(B, D, h, w)`` float32 features [and ``(B, R + S + L)`` float32 summaries] -> ``(B, classes)`` float32 logits."""
        return self.head(features, summary)

    def frames(self, stamps: Tensor, band_ids: Tensor) -> Tensor:
        """Stem input: each frame's stamp channels (zeroed on padding), its difference
        with the object's band reference when ``config.difference_channel``, and its band plane.

        Parameters
        ----------
        stamps : Tensor
            ``(B, M, H, W)`` or ``(B, M, C, H, W)`` float32.
        band_ids : Tensor
            ``(B, M)`` int64.

        Returns
        -------
        Tensor
            ``(B, M, config.frame_channels, H, W)`` float32.
        """
        if stamps.ndim == 4:
            stamps = stamps.unsqueeze(2)
        frames = stamps * (band_ids != 0).to(stamps.dtype)[:, :, None, None, None]
        if self.band_reference is not None:
            difference = self.band_reference(frames[:, :, 0], band_ids)
            frames = torch.cat([frames, difference.unsqueeze(2)], dim=2)
        if self.band_embedding is None:
            return frames
        side = self.config.stamp_size
        plane = self.band_embedding(band_ids).unflatten(-1, (1, side, side))
        return torch.cat([frames, plane], dim=2)

    def window_valid(self, band_ids: Tensor) -> Tensor:
        """``(B, M)`` int64 band ids -> ``(B, N)`` bool: True where a window has a real frame."""
        return (band_ids != 0).unflatten(1, (-1, self.config.stem_window)).any(dim=-1)

    def cost_stages(self) -> dict[str, list[nn.Module]]:
        """Modules of each reporting stage, in data-flow order, for :mod:`train.model.summary`."""
        stages: dict[str, list[nn.Module]] = {}
        if self.band_embedding is not None:
            stages["embedding"] = [self.band_embedding]
        if self.band_reference is not None:
            stages["band_reference"] = [self.band_reference]
        for index, layer in enumerate(self.stem.layers, start=1):
            stages[f"stem.conv{index}"] = [layer]
        for index, block in enumerate(self.blocks, start=1):
            stages[f"layer{index}.attention"] = [block.norm1, block.attention]
            stages[f"layer{index}.ffn"] = [block.norm2, block.ffn]
        if self.recency is not None:
            stages["recency"] = [self.recency]
        if self.scene is not None:
            stages["scene"] = [self.scene]
        if self.lightcurve is not None:
            stages["lightcurve"] = [self.lightcurve]
        stages["head"] = [self.head]
        return stages


def to_conv2d_stem(model: ConvEntion) -> ConvEntion:
    """The copy of ``model`` that is exported: its exact fast form for inference.

    Its stem uses Conv2d over time-stacked channels without the time-padding
    taps (see :class:`train.model.stem.Conv2dStem`; for runtimes with a slow
    Conv3d), and its attention computes its output once per sequence (see
    :class:`train.model.attention.ConvAttention`).  Equal to ``model`` in eval
    mode up to rounding.

    Parameters
    ----------
    model : ConvEntion
        Left unchanged; its stem may already be a Conv2d one.

    Returns
    -------
    ConvEntion
        In eval mode.
    """
    converted = copy.deepcopy(model)
    if isinstance(converted.stem, Conv3dStem):
        converted.stem = converted.stem.to_conv2d()
    return attend_once_per_sequence(converted).eval()


def attend_once_per_sequence(model: nn.Module) -> nn.Module:
    """Set every attention layer of ``model`` (in place) to compute its output once per sequence.

    The same function (the query term cancels in the softmax over keys, see
    :mod:`train.model.attention`), so the same outputs and the same gradients up to
    rounding, for N times less work in the pair stage; the Q rows of the projection
    get an exact zero gradient instead of a rounding-sized one.  ``train.fit``
    trains this form; the model as built computes all N x N pairs.

    Parameters
    ----------
    model : nn.Module
        Any model; modules other than :class:`ConvAttention` are left alone.

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    for module in model.modules():
        if isinstance(module, ConvAttention):
            module.once_per_sequence = True
    return model


#: Widest stem layer that trains faster time-stacked: oneDNN's Conv3d is slow on few
#: channels.  ``python bench/training.py`` measured the compact stem (8-16 channels)
#: 1.23x faster per training step time-stacked, and the paper's (64-128) no faster.
NARROW_STEM_CHANNELS = 32


def training_form(model: nn.Module) -> nn.Module:
    """Set ``model`` (in place) to the forms ``train.fit`` trains: the same function, less work.

    Every attention layer computes its output once per sequence
    (:func:`attend_once_per_sequence`), and a :class:`Conv3dStem` whose layers have
    at most :data:`NARROW_STEM_CHANNELS` channels runs its blocks as Conv2d over
    time-stacked channels (``Conv3dStem.time_stacked``), with the same parameters
    and BatchNorm statistics.  Outputs, gradients and running statistics
    equal those of the model as built up to rounding; state dicts are unchanged.

    Parameters
    ----------
    model : nn.Module
        Any model; modules other than these two are left alone.

    Returns
    -------
    nn.Module
        ``model`` itself.
    """
    for module in attend_once_per_sequence(model).modules():
        if isinstance(module, Conv3dStem):
            module.time_stacked = max(block.conv.out_channels for block in module.layers) <= NARROW_STEM_CHANNELS
    return model
