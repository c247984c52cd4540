"""Trained-model checkpoints: architecture, member weights and what the card needs.

A checkpoint holds everything export needs and nothing it must guess: the
model configuration (ConvEntion preset or baseline), the weights of every
ensemble member, the band order and per-band normalisation statistics measured
on the training data, and the metrics and provenance of the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convention_rt.model_card import BandStats, ModelCard
from train.files import write_atomically
from train.model import BaselineConfig, ModelConfig, StemLayer, build_model
from train.model.trees import TREES, TreesConfig, with_trees

__all__ = ["Checkpoint", "config_from_dict", "config_to_dict"]

CHECKPOINT_FORMAT = 1


def config_to_dict(config: ModelConfig | BaselineConfig | TreesConfig) -> dict[str, Any]:
    """A JSON-compatible description of a model configuration."""
    kind = ("convention" if isinstance(config, ModelConfig) else "trees" if isinstance(config, TreesConfig)
            else "baseline")
    return {"type": kind, **dataclasses.asdict(config)}


def config_from_dict(data: dict[str, Any]) -> ModelConfig | BaselineConfig | TreesConfig:
    """Inverse of :func:`config_to_dict`."""
    values = {k: v for k, v in data.items() if k != "type"}
    for key in ("classes", "conv_channels", "annulus"):
        if key in values:
            values[key] = tuple(values[key])
    if data.get("type") == "convention":
        values["stem"] = tuple(StemLayer(**layer) for layer in values["stem"])
        return ModelConfig(**values)
    if data.get("type") == "baseline":
        return BaselineConfig(**values)
    if data.get("type") == "trees":
        return TreesConfig(**values)
    raise ValueError(f"unknown model configuration type {data.get('type')!r}")


def _plain(value: Any) -> Any:
    """``value`` with every non-JSON object (e.g. ``torch.__version__``) turned into its string."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class Checkpoint:
    """A trained model (one or several ensemble members) and its metadata.

    Attributes
    ----------
    name, version : str
        Registry name and version the export will carry.
    preset : str
        Architecture name (``compact``, ``paper``, ``cnn_gru``, ..., ``trees``).
    config : ModelConfig, BaselineConfig or TreesConfig
    members : list of dict
        ``state_dict`` of each network member; none for a :class:`TreesConfig` model, whose
        one member is its trees.
    bands : tuple of str
        Band names in id order (band id i + 1 is ``bands[i]``).
    normalisation : dict of str to (mean, std)
        Per-band statistics of the training stamps.
    metrics, provenance : dict
        Held-out metrics and how the model was made.
    temperature : float
        Temperature T of the exported probabilities, ``softmax(logits / T)`` for
        every member (:mod:`train.calibration`); 1: the members' plain softmax.
    trees : dict of str to Tensor, optional
        A boosted-tree head (:func:`train.model.trees.tree_state`): every member's
        probabilities are then mixed with the trees' (:class:`train.model.trees.TreeMixture`),
        and the temperature applies to the mixture; with a :class:`TreesConfig`, the model.
    """

    name: str
    version: str
    preset: str
    config: ModelConfig | BaselineConfig | TreesConfig
    members: list[dict[str, torch.Tensor]]
    bands: tuple[str, ...]
    normalisation: dict[str, tuple[float, float]]
    metrics: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    temperature: float = 1.0
    trees: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")
        if self.trees is not None:  # +1 / -1 / 0: int8 holds them exactly (trees fitted earlier saved float32)
            self.trees = {**self.trees, "paths": self.trees["paths"].to(torch.int8)}
        if self.trees_alone and (self.members or self.trees is None):
            raise ValueError("a trees model holds its trees and no network members")
        if not self.trees_alone and not self.members:
            raise ValueError("a network model needs at least one member")
        if self.trees_alone != (self.preset == TREES):
            raise ValueError(f"preset {self.preset!r} does not go with a {type(self.config).__name__}: "
                             f"preset {TREES!r} is the trees model's, and its alone")

    @property
    def trees_alone(self) -> bool:
        """Whether the model is trees without a network (:class:`TreesConfig`)."""
        return isinstance(self.config, TreesConfig)

    def build_members(self) -> list[nn.Module]:
        """The members as evaluation-mode modules with their weights loaded: the trees' one for a trees model."""
        modules = []
        for state in self.members:
            module = build_model(self.config)
            module.load_state_dict(state)
            modules.append(module.eval())
        # the members share one pass of the trees and their features (the export computes them once)
        return modules if self.trees is None else with_trees(modules, self.trees, self.config)

    def card(self) -> ModelCard:
        """The model card (without the model file's checksum, known only after export)."""
        stem_window = getattr(self.config, "stem_window", 1)
        time_encoding = getattr(self.config, "positional_encoding", "") == "time"
        return ModelCard(
            name=self.name, version=self.version, preset=self.preset,
            classes=tuple(self.config.classes), bands=tuple(self.bands),
            stamp_size=self.config.stamp_size, seq_len=self.config.seq_len, stem_window=stem_window,
            normalisation={b: BandStats(float(m), float(s)) for b, (m, s) in self.normalisation.items()},
            time_encoding=time_encoding, window=self.config.window, members=len(self.members) or 1,
            metrics=self.metrics, provenance=self.provenance,
        )

    def model_digest(self) -> str:
        """sha256 of what an export of this checkpoint computes and is called.

        Name, version, preset, architecture, bands, normalisation, temperature,
        every member's weights and the trees: everything but the metrics and the
        provenance, which a card may change without a new graph.
        """
        architecture = config_to_dict(self.config)
        if architecture.get("window") == "latest":  # digests of checkpoints from before the field stay as they were
            del architecture["window"]
        described = [self.name, self.version, self.preset, architecture, list(self.bands),
                     {b: [float(m), float(s)] for b, (m, s) in sorted(self.normalisation.items())}]
        if self.temperature != 1.0:  # digests of checkpoints without a temperature stay as they were
            described.append(float(self.temperature))
        digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode())
        for state in [*self.members, *([self.trees] if self.trees is not None else [])]:
            for key in sorted(state):
                tensor = state[key].detach().cpu().contiguous()
                digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
                digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT, "name": self.name, "version": self.version,
            "preset": self.preset, "config": config_to_dict(self.config), "members": self.members,
            "bands": list(self.bands), "normalisation": {b: list(v) for b, v in self.normalisation.items()},
            # metadata as plain JSON types, so that loading with weights_only=True never meets a class
            "metrics": _plain(self.metrics), "provenance": _plain(self.provenance),
            "temperature": float(self.temperature), "trees": self.trees,
        }
        write_atomically(path, lambda target: torch.save(payload, target))

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Read a checkpoint written by :meth:`save`."""
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a checkpoint of format {CHECKPOINT_FORMAT}")
        return cls(
            name=payload["name"], version=payload["version"], preset=payload["preset"],
            config=config_from_dict(payload["config"]), members=payload["members"],
            bands=tuple(payload["bands"]),
            normalisation={b: (float(v[0]), float(v[1])) for b, v in payload["normalisation"].items()},
            metrics=payload["metrics"], provenance=payload["provenance"],
            # the shipped checkpoints in tests/golden/checkpoints/ were saved before calibration: 1.0
            temperature=float(payload.get("temperature", 1.0)), trees=payload.get("trees"),
        )
