"""The ConvEntion model and its baselines in PyTorch.

Build a model by name or configuration with :func:`build_model`::

    from train.model import build_model
    model = build_model("compact")          # or "paper", "cnn_gru", "cnn_lstm", "lc_lstm"
    logits = model(stamps, band_ids, times)  # (B, M, H, W), (B, M), (B, M) -> (B, classes)

``python -m train.model summary --preset NAME`` prints parameters and
multiply-accumulates per stage.
"""

from __future__ import annotations

from torch import nn

from train.model.baselines import BASELINES, BaselineConfig, build_baseline, get_baseline
from train.model.config import PRESETS, ModelConfig, StemLayer, get_preset
from train.model.convention import ConvEntion, attend_once_per_sequence, to_conv2d_stem, training_form
from train.model.summary import ModelCost, example_inputs, measure

__all__ = [
    "BASELINES",
    "MODEL_NAMES",
    "PRESETS",
    "BaselineConfig",
    "ConvEntion",
    "ModelConfig",
    "ModelCost",
    "StemLayer",
    "attend_once_per_sequence",
    "build_model",
    "example_inputs",
    "get_baseline",
    "get_preset",
    "measure",
    "to_conv2d_stem",
    "training_form",
]

#: Every name :func:`build_model` accepts: ConvEntion presets, then baselines.
MODEL_NAMES: tuple[str, ...] = PRESETS + BASELINES


def build_model(spec: str | ModelConfig | BaselineConfig) -> nn.Module:
    """Build an untrained model.

    Parameters
    ----------
    spec : str, ModelConfig or BaselineConfig
        A name from :data:`MODEL_NAMES` or a configuration (e.g. an ablation
        made with ``dataclasses.replace(get_preset("paper"), band_embedding=False)``).

    Returns
    -------
    nn.Module
        A :class:`ConvEntion` or a baseline; all take ``(stamps, band_ids, times)``.

    Raises
    ------
    KeyError
        If ``spec`` is an unknown name; the message lists the known ones.
    TypeError
        If ``spec`` is neither a name nor a configuration.
    """
    if isinstance(spec, str):
        if spec in PRESETS:
            spec = get_preset(spec)
        elif spec in BASELINES:
            spec = get_baseline(spec)
        else:
            raise KeyError(f"unknown model {spec!r}; available: {', '.join(MODEL_NAMES)}")
    if isinstance(spec, ModelConfig):
        return ConvEntion(spec)
    if isinstance(spec, BaselineConfig):
        return build_baseline(spec)
    raise TypeError(f"build_model takes a model name or configuration, got {type(spec).__name__}")
