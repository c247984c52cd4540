"""Export a trained checkpoint to ONNX with its model card.

``python -m train.export CHECKPOINT --out exports/NAME/VERSION/``

* One self-contained ONNX file (no external data) with a dynamic batch axis
  (and, for ConvEntion models, a dynamic sequence axis: any whole number of stem
  windows up to ``seq_len``, so the runtime runs only the windows an object has;
  for a model of trees alone, any number of frames up to ``seq_len``),
  inputs ``stamps`` / ``band_ids`` / ``times`` and output ``probabilities``
  (n, members, classes): the softmax of every ensemble member.  Members live
  in one graph so that one file, one checksum and one session serve the whole
  ensemble; the runtime averages them and reports their spread.
* ``onnx.checker`` full check; the card embedded in the ONNX metadata and
  written beside the model as ``card.json`` with the file's sha256.  The card
  carries the model's domain (:func:`train.domain.card_with_domain`): the training
  catalog's photometric contract and the validated minimum of frames.
* ONNX Runtime must agree with PyTorch within 1e-4 on the probabilities at
  batch 1 and 64, and, with a dynamic sequence axis, on each object of a batch cut
  to its own windows against the same object padded to ``seq_len``, or the export
  fails and nothing is written.
* ConvEntion's stem is exported twice, as Conv3d and as the exactly equal
  Conv2d over time-stacked channels (ONNX Runtime's CPU Conv3d is slow); both
  are timed in ONNX Runtime and the faster graph is kept, its choice and the
  timings recorded in the card.
* Exporting the same model again (``reuse_graph``: same weights, architecture,
  bands and normalisation, as the card's ``model_digest`` records, by the same
  model and export code and library versions, its ``exporter_digest``) keeps the
  graph and rewrites only the card: ``train.fit`` does so when a later fold's
  metrics reach the card.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from convention_rt.errors import ConventionError, ModelError
from convention_rt.model_card import ModelCard, sha256_of
from convention_rt.publish import publish
from convention_rt.session import CARD_METADATA_KEY, INPUT_NAMES, OUTPUT_NAME, sequence_lengths
from train.domain import card_with_domain
from train.checkpoint import Checkpoint
from train.command_line import OneLineParser, report_failure
from train.model import ConvEntion, to_conv2d_stem
from train.model.trees import TreeMixture

__all__ = ["EnsembleProbabilities", "ExportResult", "export_checkpoint", "exporter_digest", "main"]

AGREEMENT_ATOL = 1e-4
CHECK_BATCHES = (1, 64)
TIMING_BATCH = 16
MAX_IR_VERSION = 10  # what every supported ONNX Runtime release reads


class EnsembleProbabilities(nn.Module):
    """Members' softmax outputs at temperature T stacked: (n, members, classes).

    Parameters
    ----------
    members : list of nn.Module
    temperature : float
        Each member's probabilities are ``softmax(logits / T)`` (T = 1: unchanged).
    """

    def __init__(self, members: list[nn.Module], temperature: float = 1.0) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.temperature = float(temperature)
        first = members[0]
        # decided here, on the modules themselves: a traced forward sees stand-ins that are never identical
        self.shared_trees = isinstance(first, TreeMixture) and all(
            isinstance(m, TreeMixture) and m.trees is first.trees and m.features is first.features for m in members)

    def forward(self, stamps: torch.Tensor, band_ids: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        scale = 1.0 / self.temperature
        outputs = self._member_outputs(stamps, band_ids, times)
        return torch.stack([torch.softmax(z * scale if scale != 1.0 else z, dim=-1) for z in outputs], dim=1)

    def _member_outputs(self, stamps: torch.Tensor, band_ids: torch.Tensor,
                        times: torch.Tensor) -> list[torch.Tensor]:
        """Each member's logits; members mixed with the same trees (:class:`TreeMixture`) share one pass of them."""
        if self.shared_trees:
            trees = self.members[0].tree_probabilities(stamps, band_ids, times)
            return [m.mix(m.network(stamps, band_ids, times), trees) for m in self.members]
        return [m(stamps, band_ids, times) for m in self.members]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it measured."""

    model_path: Path
    card_path: Path
    card: ModelCard
    graph: str
    max_abs_difference: float
    objects_per_s: dict[str, float]
    #: Whether an earlier export's graph was kept and only its card rewritten.
    graph_reused: bool = False


def example_batch(card: ModelCard, n: int, seed: int) -> dict[str, np.ndarray]:
    """Random normalised inputs with realistic padding (some short, one empty-ish)."""
    rng = np.random.default_rng(seed)
    m, size = card.seq_len, card.stamp_size
    lengths = rng.integers(1, m + 1, size=n)
    lengths[0] = m
    real = np.arange(m)[None, :] < lengths[:, None]
    band_ids = np.where(real, rng.integers(1, card.n_band_ids, size=(n, m)), 0).astype(np.int64)
    stamps = np.where(real[:, :, None, None], rng.normal(size=(n, m, size, size)), 0).astype(np.float32)
    times = np.where(real, np.cumsum(rng.uniform(0.5, 5.0, size=(n, m)), axis=1), 0)
    times = (times - times[:, :1]).astype(np.float32) * real
    return {"stamps": stamps, "band_ids": band_ids, "times": times.astype(np.float32)}


def _torch_outputs(model: nn.Module, batch: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(batch[name]) for name in INPUT_NAMES)).numpy()


def _to_onnx(model: nn.Module, card: ModelCard, path: Path, *, variable_length: bool = False) -> None:
    """Trace ``model`` to a single ONNX file with the card embedded.

    The batch axis is dynamic; with ``variable_length`` the sequence axis too, as
    ``stem_window x windows`` for 1 to ``seq_len / stem_window`` windows.
    """
    axes: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=65536)}
    if variable_length:
        windows = torch.export.Dim("windows", min=1, max=card.seq_len // card.stem_window)
        axes[1] = card.stem_window * windows
    example = example_batch(card, 2, seed=0)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the exporter's own notices and progress lines
        torch.onnx.export(
            model, tuple(torch.from_numpy(example[name]) for name in INPUT_NAMES), str(path),
            dynamo=True, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_shapes={name: dict(axes) for name in INPUT_NAMES}, external_data=False,
        )
    proto = onnx.load(str(path), load_external_data=True)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    _save_with_card(proto, card, path)
    leftovers = [p for p in path.parent.iterdir() if p != path]
    if leftovers:
        raise ModelError(f"export wrote external data files {leftovers}: the model must be one file")


def _save_with_card(proto: onnx.ModelProto, card: ModelCard, path: Path) -> None:
    """Embed ``card`` in the metadata of ``proto`` (replacing any), check the graph and save it as one file."""
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_METADATA_KEY, card.to_json()
    proto.producer_name = "convention-rt"
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path), save_as_external_data=False)


def _ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _agreement(model: nn.Module, session: ort.InferenceSession, card: ModelCard) -> float:
    worst = 0.0
    for n in CHECK_BATCHES:
        batch = example_batch(card, n, seed=n)
        expected = _torch_outputs(model, batch)
        (actual,) = session.run([OUTPUT_NAME], batch)
        if actual.shape != expected.shape:
            raise ModelError(f"ONNX output shape {actual.shape} differs from PyTorch's {expected.shape}")
        worst = max(worst, float(np.max(np.abs(actual - expected))))
    return worst


def _length_agreement(model: nn.Module, session: ort.InferenceSession, card: ModelCard) -> float:
    """Largest difference between each object cut as the runtime runs it (ONNX) and padded (PyTorch)."""
    batch = example_batch(card, 8, seed=11)
    expected = _torch_outputs(model, batch)
    lengths = sequence_lengths(batch["band_ids"], card.stem_window)
    worst = 0.0
    for row, length in enumerate(lengths):
        cut = {name: batch[name][row:row + 1, :length] for name in INPUT_NAMES}
        (actual,) = session.run([OUTPUT_NAME], cut)
        worst = max(worst, float(np.max(np.abs(actual - expected[row:row + 1]))))
    return worst


def _objects_per_s(session: ort.InferenceSession, card: ModelCard, repeats: int = 3) -> float:
    batch = example_batch(card, TIMING_BATCH, seed=7)
    session.run([OUTPUT_NAME], batch)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        session.run([OUTPUT_NAME], batch)
        best = min(best, time.perf_counter() - start)
    return TIMING_BATCH / best


EXPORT_FILES = frozenset({"model.onnx", "card.json"})


def check_destination(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse a destination that is a file, holds anything but an export, or holds one without ``overwrite``.

    Raises
    ------
    ModelError
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir}: is a file, not a folder for model.onnx and card.json")
    if not out_dir.is_dir():
        return
    others = sorted(p.name for p in out_dir.iterdir() if p.name not in EXPORT_FILES)
    if others:
        raise ModelError(f"{out_dir}: holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}; "
                         "an export goes to a folder of its own (e.g. exports/NAME/VERSION)")
    if (out_dir / "model.onnx").exists() and not overwrite:
        raise ModelError(f"{out_dir}: holds an export already (pass --overwrite to replace it)")


def export_checkpoint(checkpoint: Checkpoint, out_dir: str | Path, *, threads: int = 1,
                      overwrite: bool = False, reuse_graph: bool = False) -> ExportResult:
    """Export ``checkpoint`` to ``out_dir/model.onnx`` and ``out_dir/card.json``.

    Parameters
    ----------
    checkpoint : Checkpoint
    out_dir : str or Path
        Destination folder (created): empty, or holding only an earlier export
        (``model.onnx``, ``card.json``) when ``overwrite``; nothing else in it is touched.
    threads : int
        ONNX Runtime threads for the agreement check and the timing.
    overwrite : bool
        Replace an existing export.
    reuse_graph : bool
        When ``out_dir`` holds an intact export of this very model by this very
        exporter (the card's ``provenance.export.model_digest`` is
        :meth:`Checkpoint.model_digest`, its ``exporter_digest`` is
        :func:`exporter_digest`, the file's sha256 the card's), keep its graph
        and only write the new card (metrics, provenance) into its metadata and
        beside it: no tracing, timing or agreement check again, and the graph
        chosen before stays.

    Returns
    -------
    ExportResult

    Raises
    ------
    ModelError
        When ONNX Runtime and PyTorch disagree by more than 1e-4, the graph fails
        the checker, or the destination is refused by :func:`check_destination`.
    """
    out_dir = Path(out_dir)
    check_destination(out_dir, overwrite=overwrite)
    if reuse_graph and overwrite:
        refreshed = _refresh_card(checkpoint, out_dir)
        if refreshed is not None:
            return refreshed
    card = card_with_domain(checkpoint.card())  # the training domain: what the runtime checks data against
    members = checkpoint.build_members()
    reference = EnsembleProbabilities(members, checkpoint.temperature).eval()
    is_convention = all(isinstance(m.network if isinstance(m, TreeMixture) else m, ConvEntion) for m in members)
    variable_length = is_convention or checkpoint.trees_alone  # both read any number of (stem windows of) frames
    variants: dict[str, nn.Module] = {"conv3d_stem" if is_convention else "as_traced": reference}
    if is_convention:
        converted = EnsembleProbabilities([_fast_form(m) for m in members], checkpoint.temperature).eval()
        check = example_batch(card, 4, seed=3)
        difference = np.max(np.abs(_torch_outputs(converted, check) - _torch_outputs(reference, check)))
        if difference > 1e-5:
            raise ModelError(f"the Conv2d stem differs from the Conv3d stem by {difference:.2e}")
        variants["conv2d_stem"] = converted

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as scratch:
        scratch = Path(scratch)
        speeds: dict[str, float] = {}
        differences: dict[str, float] = {}
        for name, module in variants.items():
            (scratch / name).mkdir()
            path = scratch / name / "model.onnx"
            _to_onnx(module, card, path, variable_length=variable_length)
            session = _ort_session(path, threads)
            differences[name] = _agreement(reference, session, card)
            if variable_length:
                differences[name] = max(differences[name], _length_agreement(reference, session, card))
            if differences[name] > AGREEMENT_ATOL:
                raise ModelError(f"{name}: ONNX Runtime and PyTorch differ by {differences[name]:.2e} "
                                 f"(> {AGREEMENT_ATOL}) on probabilities: export refused")
            speeds[name] = _objects_per_s(session, card)
        chosen = max(speeds, key=speeds.get)
        model_file = scratch / chosen / "model.onnx"
        provenance = dict(card.provenance)
        provenance["export"] = {
            "graph": chosen,
            "ort_cpu_objects_per_s_batch16_threads%d" % threads: {k: round(v, 1) for k, v in speeds.items()},
            "max_abs_difference_vs_pytorch": differences[chosen],
            "torch": str(torch.__version__), "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "model_digest": checkpoint.model_digest(), "exporter_digest": exporter_digest(),
        }
        final = dataclasses.replace(card, provenance=provenance, sha256=sha256_of(model_file))
        (scratch / chosen / "card.json").write_text(final.to_json(), encoding="utf-8")
        _install(scratch / chosen, out_dir, overwrite)
    return ExportResult(model_path=out_dir / "model.onnx", card_path=out_dir / "card.json", card=final,
                        graph=chosen, max_abs_difference=differences[chosen], objects_per_s=speeds)


def _fast_form(member: nn.Module) -> nn.Module:
    """:func:`train.model.to_conv2d_stem` of a ConvEntion member, or of the network of a tree mixture."""
    if isinstance(member, TreeMixture):
        return TreeMixture(to_conv2d_stem(member.network), member.trees, member.features, member.weight).eval()
    return to_conv2d_stem(member)


def _install(built: Path, out_dir: Path, overwrite: bool) -> None:
    """Put the folder ``built`` (model.onnx, card.json) at ``out_dir`` whole, the previous one kept on failure.

    ``built`` lies in a scratch folder beside ``out_dir``; the folder is published
    by :func:`convention_rt.publish.publish`, like every output of the project.
    """
    check_destination(out_dir, overwrite=overwrite)  # again: the folder may have changed meanwhile
    publish(built, out_dir, overwrite=True)


def exporter_digest() -> str:
    """sha256 of what turns a checkpoint into a graph: the model and export code, torch and onnx versions."""
    digest = hashlib.sha256(f"{torch.__version__} {onnx.__version__}".encode())
    here = Path(__file__).parent
    for source in [Path(__file__), *sorted((here / "model").glob("*.py"))]:
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _refresh_card(checkpoint: Checkpoint, out_dir: Path) -> ExportResult | None:
    """The export in ``out_dir`` with the card of ``checkpoint``, if it is an intact export of the same model.

    Returns None (nothing written) when ``out_dir`` holds no export, a damaged
    one, or one of another model (or of a release that did not record its digest).
    """
    model_file, card_file = out_dir / "model.onnx", out_dir / "card.json"
    try:
        existing = ModelCard.from_json(card_file.read_text(encoding="utf-8"), str(card_file))
    except (OSError, ValueError, ConventionError):
        return None
    export = existing.provenance.get("export", {})
    if export.get("model_digest") != checkpoint.model_digest() or export.get("exporter_digest") != exporter_digest() \
            or not model_file.is_file() or sha256_of(model_file) != existing.sha256:
        return None
    card = card_with_domain(checkpoint.card())  # the training domain: what the runtime checks data against
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as scratch:
        built = Path(scratch) / "refreshed"
        built.mkdir()
        _save_with_card(onnx.load(str(model_file)), card, built / "model.onnx")
        final = dataclasses.replace(card, provenance={**card.provenance, "export": export},
                                    sha256=sha256_of(built / "model.onnx"))
        (built / "card.json").write_text(final.to_json(), encoding="utf-8")
        _install(built, out_dir, overwrite=True)
    speeds = next((v for k, v in export.items() if k.startswith("ort_cpu_objects_per_s")), {})
    return ExportResult(model_path=model_file, card_path=card_file, card=final, graph=export["graph"],
                        max_abs_difference=export["max_abs_difference_vs_pytorch"], objects_per_s=speeds,
                        graph_reused=True)


def _mean_std(values: list[float] | list[list[float]]) -> dict[str, Any]:
    """Mean and standard deviation over folds (the first axis): floats for a list, lists for a table."""
    table = np.asarray(values, dtype=float)
    return {"mean": table.mean(axis=0).tolist(), "std": table.std(axis=0).tolist()}


def with_evaluations(checkpoint: Checkpoint, run_dir: Path) -> Checkpoint:
    """``checkpoint`` calibrated and described by the evaluations of the run that trained it.

    Reads ``run_dir/calibration.json`` (``python -m train.calibration``, required):
    the temperature becomes fold 0's (whose members an export of ``train.fit``
    holds) of the way the calibration chose, or 1 when it chose none, and the
    card's metrics gain ``calibration``: the chosen way and temperature, the
    held-out negative log-likelihood and expected calibration error at T = 1 and
    for each way (mean and std over the folds, each fold at its own temperature),
    and the pooled reliability tables.  ``run_dir/early.json`` (``python -m
    train.early``), when present, adds ``early``: accuracy and macro-F1 against
    the frames seen, mean and std over folds.

    Parameters
    ----------
    checkpoint : Checkpoint
    run_dir : Path

    Returns
    -------
    Checkpoint
        A copy; the original is unchanged.

    Raises
    ------
    ValueError
        One line naming the file when the calibration is missing or unreadable.
    """
    calibration_file = run_dir / "calibration.json"
    try:
        calibration = json.loads(calibration_file.read_text())
        folds, chosen = calibration["per_fold"], calibration["chosen"]
        temperature = 1.0 if chosen == "none" else float(folds[0][chosen]["temperature"])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"{calibration_file}: no calibration of a finished fold ({exc}); "
                         f"run python -m train.calibration {run_dir} --catalog CATALOG first") from exc

    summary: dict[str, Any] = {"chosen": chosen, "temperature": temperature, "folds": len(folds),
                               "bins": calibration["bins"], "nll": _mean_std([f["nll"] for f in folds]),
                               "ece": _mean_std([f["ece"] for f in folds])}
    for way in ("inner_validation", "other_folds"):
        if all(way in f for f in folds):
            summary[way] = {"temperature": [f[way]["temperature"] for f in folds],
                            "nll": _mean_std([f[way]["nll"] for f in folds]),
                            "ece": _mean_std([f[way]["ece"] for f in folds])}
    summary["reliability"] = calibration["reliability"]
    summary["reliability_calibrated"] = calibration["reliability_calibrated"]
    metrics = {**checkpoint.metrics, "calibration": summary}
    early_file = run_dir / "early.json"
    if early_file.exists():
        early = json.loads(early_file.read_text())
        if early["per_fold"]:
            metrics["early"] = {
                "frames_seen": early["frames_seen"], "folds": len(early["per_fold"]),
                "accuracy": _mean_std([f["accuracy"] for f in early["per_fold"]]),
                "macro_f1": _mean_std([f["macro_f1"] for f in early["per_fold"]]),
            }
    return dataclasses.replace(checkpoint, temperature=temperature, metrics=metrics)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m train.export CHECKPOINT --out DIR``."""
    parser = OneLineParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="destination folder, e.g. exports/NAME/VERSION")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--version", default=None, help="version of the export (default: the checkpoint's)")
    parser.add_argument("--evaluations", type=Path, default=None, metavar="RUN_DIR",
                        help="calibrate with, and describe by, RUN_DIR/calibration.json and RUN_DIR/early.json")
    options = parser.parse_args(argv)
    try:
        checkpoint = Checkpoint.load(options.checkpoint)
        if options.version:
            checkpoint = dataclasses.replace(checkpoint, version=options.version)
        if options.evaluations:
            checkpoint = with_evaluations(checkpoint, options.evaluations)
        result = export_checkpoint(checkpoint, options.out, threads=options.threads, overwrite=options.overwrite)
    except (ConventionError, OSError, ValueError) as exc:
        report_failure(exc)
        return getattr(exc, "exit_code", 3)  # an unreadable checkpoint is a model error
    print(json.dumps({"model": str(result.model_path), "card": str(result.card_path), "graph": result.graph,
                      "max_abs_difference": result.max_abs_difference,
                      "ort_objects_per_s": result.objects_per_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
