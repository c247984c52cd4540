"""Parameters and multiply-accumulates (MACs) of a model, stage by stage.

MACs are counted from the modules as they run: forward hooks on every
convolution, linear and recurrent layer read the actual input and output
shapes, and modules that compute outside their children (the attention's key
logits and its weighted sum over all position pairs) report that part through
a ``functional_macs(input)`` method.  Additions, normalisations, activations,
softmax and pooling are not counted.  The forward pass runs on PyTorch's
``meta`` device: shapes only, no arithmetic, so even the paper preset is
measured instantly.

A model declares its stages with ``cost_stages() -> dict[str, list[nn.Module]]``
and its input geometry with a ``config`` holding ``seq_len``, ``stamp_size``
and ``stamp_channels``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["ModelCost", "StageCost", "example_inputs", "measure"]


@dataclass(frozen=True)
class StageCost:
    """Cost of one stage for one sequence.

    Attributes
    ----------
    name : str
        Stage name, e.g. ``"stem.conv2"``.
    params : int
        Trainable parameters.
    macs : int
        Multiply-accumulates per sequence (object).
    """

    name: str
    params: int
    macs: int


@dataclass(frozen=True)
class ModelCost:
    """Costs of all stages of a model.

    Attributes
    ----------
    model : str
        Name the model was measured under.
    stages : tuple of StageCost
        In data-flow order.  A stage ``"other"`` collects anything outside the
        declared stages.
    """

    model: str
    stages: tuple[StageCost, ...]

    @property
    def params(self) -> int:
        """Total trainable parameters."""
        return sum(stage.params for stage in self.stages)

    @property
    def macs(self) -> int:
        """Total multiply-accumulates per sequence."""
        return sum(stage.macs for stage in self.stages)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dictionary."""
        return {
            "model": self.model,
            "params": self.params,
            "macs": self.macs,
            "stages": [{"name": s.name, "params": s.params, "macs": s.macs} for s in self.stages],
        }

    def table(self) -> str:
        """Plain-text table, one row per stage and a total."""
        rows = [(s.name, s.params, s.macs) for s in self.stages] + [("total", self.params, self.macs)]
        width = max(len(name) for name, _, _ in rows)
        lines = [f"{self.model}: parameters and multiply-accumulates per object",
                 f"{'stage':<{width}}  {'params':>10}  {'MACs':>15}  {'share':>6}"]
        for name, params, macs in rows:
            share = macs / self.macs if self.macs else 0.0
            lines.append(f"{name:<{width}}  {params:>10,}  {macs:>15,}  {share:>6.1%}")
        lines.append(f"{self.macs / 1e9:.3f} GMAC, {self.params / 1e6:.3f} M parameters")
        return "\n".join(lines)


def example_inputs(config: Any, batch_size: int = 1, *, device: str | torch.device = "cpu",
                   seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random, fully observed inputs matching a model's configuration.

    Parameters
    ----------
    config : ModelConfig or BaselineConfig
        Supplies ``seq_len``, ``stamp_size``, ``stamp_channels`` and ``n_band_ids``.
    batch_size : int
        B.
    device : str or torch.device
        Where to create the tensors (``"meta"`` for shapes only).
    seed : int
        Seed of the generator (ignored on ``"meta"``).

    Returns
    -------
    tuple of Tensor
        ``stamps`` ``(B, M, H, W)`` (or ``(B, M, C, H, W)``) float32,
        ``band_ids`` ``(B, M)`` int64 in ``1 .. n_band_ids - 1``,
        ``times`` ``(B, M)`` float32 increasing MJD.
    """
    side = config.stamp_size
    frame = (side, side) if config.stamp_channels == 1 else (config.stamp_channels, side, side)
    shape = (batch_size, config.seq_len)
    if torch.device(device).type == "meta":
        return (torch.empty(*shape, *frame, device=device), torch.empty(shape, dtype=torch.int64, device=device),
                torch.empty(shape, device=device))
    generator = torch.Generator().manual_seed(seed)
    stamps = torch.randn(*shape, *frame, generator=generator)
    band_ids = torch.randint(1, config.n_band_ids, shape, generator=generator)
    times = 59000.0 + torch.cumsum(torch.rand(shape, generator=generator) * 5.0, dim=1)
    return stamps.to(device), band_ids.to(device), times.to(device)


def _layer_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """MACs of one call of a convolution, linear or recurrent layer (0 for other modules)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.GRU, nn.LSTM)):
        x = inputs[0]
        steps = x.shape[0] * x.shape[1]
        gates = 3 if isinstance(module, nn.GRU) else 4
        directions = 2 if module.bidirectional else 1
        total = 0
        for layer in range(module.num_layers):
            layer_input = module.input_size if layer == 0 else module.hidden_size * directions
            total += gates * module.hidden_size * (layer_input + module.hidden_size) * directions
        return steps * total
    return 0


def measure(model: nn.Module, name: str = "") -> ModelCost:
    """Count parameters and MACs per stage of ``model`` for one sequence.

    Parameters
    ----------
    model : nn.Module
        A model with ``config`` and ``cost_stages()`` (ConvEntion or a baseline);
        left unchanged (a copy runs on the meta device in eval mode).
    name : str
        Name to report; defaults to the class name.

    Returns
    -------
    ModelCost
    """
    probe = copy.deepcopy(model).to("meta").eval()
    stages = probe.cost_stages()
    stage_of: dict[int, str] = {}
    for stage, modules in stages.items():
        for module in modules:
            for sub in module.modules():
                stage_of.setdefault(id(sub), stage)
    macs = dict.fromkeys([*stages, "other"], 0)

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        count = _layer_macs(module, inputs, output)
        if hasattr(module, "functional_macs"):
            count += module.functional_macs(inputs[0])
        macs[stage_of.get(id(module), "other")] += count

    handles = [module.register_forward_hook(hook) for module in probe.modules()]
    try:
        with torch.no_grad():
            probe(*example_inputs(probe.config, 1, device="meta"))
    finally:
        for handle in handles:
            handle.remove()

    params = dict.fromkeys(macs, 0)
    seen: set[int] = set()
    for stage, modules in stages.items():
        for module in modules:
            for parameter in module.parameters():
                if id(parameter) not in seen:
                    seen.add(id(parameter))
                    params[stage] += parameter.numel()
    params["other"] = sum(p.numel() for p in probe.parameters() if id(p) not in seen)
    rows = [StageCost(stage, params[stage], macs[stage]) for stage in macs
            if stage != "other" or params[stage] or macs[stage]]
    return ModelCost(name or type(model).__name__, tuple(rows))
