"""Models shipped with the package, by name and version, and models given by path.

Shipped models live in ``exports/NAME/VERSION/`` (installed as the package
``convention_rt.exports``), each a ``model.onnx`` with its ``card.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from convention_rt.errors import ModelError
from convention_rt.model_card import ModelCard

__all__ = ["DEFAULT_MODEL", "ModelEntry", "list_models", "open_card", "resolve_model"]

#: Name of the model used when none is asked for.
DEFAULT_MODEL = "convention-trees"


@dataclass(frozen=True)
class ModelEntry:
    """A model file and its card."""

    name: str
    version: str
    model_path: Path
    card_path: Path

    def card(self) -> ModelCard:
        """Read and validate the card."""
        return ModelCard.load(self.card_path)


def _version_key(version: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in version.replace("-", ".").split("."))


def _exports_root() -> Path:
    """``exports/``: installed as ``convention_rt.exports``; in a source tree, beside the package."""
    try:
        return Path(str(resources.files("convention_rt.exports")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "exports"


def list_models(root: Path | None = None) -> list[ModelEntry]:
    """Shipped models, sorted by name then version (oldest first)."""
    root = _exports_root() if root is None else root
    entries = []
    for card_path in sorted(root.glob("*/*/card.json")):
        model_path = card_path.with_name("model.onnx")
        if model_path.is_file():
            entries.append(ModelEntry(card_path.parent.parent.name, card_path.parent.name, model_path, card_path))
    return sorted(entries, key=lambda e: (e.name, _version_key(e.version)))


def resolve_model(spec: str | Path | None = None, root: Path | None = None) -> ModelEntry:
    """Find a model: ``None`` (the default), ``NAME``, ``NAME/VERSION``, or a path.

    A path may be a ``.onnx`` file (its ``card.json`` beside it) or a folder
    holding ``model.onnx`` and ``card.json``.  A bare name takes the newest version.

    Raises
    ------
    ModelError
        When nothing matches; the message lists the shipped models.
    """
    text = DEFAULT_MODEL if spec is None else str(spec)
    path = Path(text)
    if path.is_file() and path.suffix != ".onnx":
        raise ModelError(f"{path}: not an ONNX model (a .onnx file, or a folder holding model.onnx)")
    if path.suffix == ".onnx" or path.is_dir():
        model_path = path if path.suffix == ".onnx" else path / "model.onnx"
        if not model_path.is_file():
            raise ModelError(f"{model_path}: model file not found")
        return ModelEntry(model_path.stem, "", model_path, model_path.with_name("card.json"))
    name, _, version = text.replace(":", "/").partition("/")
    candidates = [e for e in list_models(root) if e.name == name and (not version or e.version == version)]
    if not candidates:
        shipped = ", ".join(f"{e.name}/{e.version}" for e in list_models(root)) or "none"
        raise ModelError(f"no model {text!r} (shipped models: {shipped}; or give a path to a .onnx file)")
    return candidates[-1]


def open_card(spec: str | Path | None = None) -> tuple[ModelEntry, ModelCard]:
    """Find a model (:func:`resolve_model`) and load its card, checked against the model file.

    The card is ``card.json`` beside the model, else the one embedded in the
    model's metadata (:func:`convention_rt.session.load_card`).

    Raises
    ------
    ModelError
        No such model, or a card that is missing, invalid or not the model's.
    """
    from convention_rt.session import load_card  # ONNX Runtime, only when a card is checked

    entry = resolve_model(spec)
    return entry, load_card(entry.model_path)
