"""Inference throughput of ConvEntion: the ONNX Runtime path vs PyTorch eager vs the loop reference.

Measures, in one run, on the same weights and the same inputs, for each preset
(``paper``, ``compact``), thread count and batch size:

* ``ort``: the runtime path.  The model is exported with the project's export
  code (``train.export.export_checkpoint``, which keeps the faster of its
  graphs) to a temporary folder and run by ``convention_rt.session.ModelSession``
  on the CPU;
* ``eager``: PyTorch eager of the model as built (``build_model``: Conv3d stem,
  attention over all N x N pairs), the same ensemble-softmax wrapper;
* ``eager-export``: PyTorch eager of the module that is exported
  (``to_conv2d_stem``), to separate what the graph saves from what ONNX Runtime adds;
* ``loop``: the per-position loop reference (``train.model.loops.loop_forward``,
  the authors' structure), on the smallest batches only (it is slow);
* the fp32 matrix-multiply rate of the machine on the same thread count: the
  best of NumPy, PyTorch and ONNX Runtime ``MatMul`` on large square matrices.

Objects/s are best-of-rounds timings (a warm-up round, then ``--repeats`` rounds;
more for cells faster than ``--min-seconds``, fewer for cells slower than
``--max-seconds``), the engines taking turns in every round so that the load of
a shared machine falls on all of them alike.  MAC/s
is objects/s times the multiply-accumulates per object counted by
``train.model.summary.measure``: ``spec`` counts the model as specified
(``measure(build_model(preset))``), ``exec`` what the engine's graph computes
(``measure(to_conv2d_stem(model))`` for ``ort`` and ``eager-export``, which skip
the stem's time-padding taps and compute the attention once per sequence).
Every engine's probabilities are compared with eager's (``max|dp|``).

Targets: ``ort`` >= 1.5x ``eager`` and >= 2x ``loop`` at batch 1; the paper
preset's ``ort`` >= 50 % of the matmul rate; the compact preset's ``ort``
>= 300 objects/s on one thread.

Usage: ``python bench/inference.py [--json] [--presets paper compact] [--threads 1 2]
[--batches 1 16 64] [--repeats 5] [--paper-repeats 2] [--min-seconds 3] [--max-seconds 60] [--loop-batches 1]
[--low-precision [--low-precision-batch 16]]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import threadpoolctl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convention_rt.session import INPUT_NAMES, ModelSession  # noqa: E402
from train.checkpoint import Checkpoint  # noqa: E402
from train.export import EnsembleProbabilities, example_batch, export_checkpoint  # noqa: E402
from train.machine import cpu_description  # noqa: E402
from train.model import ConvEntion, build_model, measure, to_conv2d_stem  # noqa: E402
from train.model.convention import MaskedLayerNorm  # noqa: E402
from train.model.loops import loop_forward  # noqa: E402

MATMUL_SIZE = 2048
BANDS = ("u", "g", "r", "i", "z")
TARGET_ORT_VS_EAGER = 1.5
TARGET_ORT_VS_LOOP = 2.0
TARGET_PAPER_PEAK_FRACTION = 0.5
TARGET_COMPACT_OBJECTS_PER_S = 300.0

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class Row:
    """One engine at one preset, thread count and batch size."""

    preset: str
    threads: int
    batch: int
    engine: str
    objects_per_s: float
    vs_eager: float
    vs_loop: float | None
    spec_gmac_per_s: float
    exec_gmac_per_s: float | None
    spec_peak_fraction: float
    exec_peak_fraction: float | None
    max_abs_difference: float


@dataclass(frozen=True)
class LowPrecisionRow:
    """A reduced-precision engine against the fp32 ONNX Runtime path (not exact: report only)."""

    preset: str
    threads: int
    batch: int
    engine: str
    objects_per_s: float
    vs_ort_fp32: float
    max_abs_difference: float
    max_log_difference: float


@dataclass(frozen=True)
class Engine:
    """A way to compute the ensemble probabilities of a batch, and the MACs per object it executes."""

    name: str
    run: Callable[[Batch], np.ndarray]
    macs: int | None


def randomised_model(preset: str, seed: int = 0) -> ConvEntion:
    """An eval-mode model with random weights and non-trivial BatchNorm statistics and LayerNorm affines."""
    torch.manual_seed(seed)
    model = build_model(preset)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(1.0 + 0.1 * torch.randn(shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(shape, generator=generator))
            if isinstance(module, MaskedLayerNorm):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def export_model(model: ConvEntion, preset: str, directory: Path,
                 threads: int) -> tuple[Path, str, dict[str, float]]:
    """Export ``model`` with the project's export code.

    Returns
    -------
    tuple
        The ONNX path, the graph the export kept, and the export's own batch-16
        objects/s of each graph it tried.
    """
    checkpoint = Checkpoint(name=f"bench-{preset}", version="0.0.0", preset=preset, config=model.config,
                            members=[model.state_dict()], bands=BANDS,
                            normalisation={band: (0.0, 1.0) for band in BANDS})
    result = export_checkpoint(checkpoint, directory / preset, threads=threads)
    return result.model_path, result.graph, result.objects_per_s


def best_times(functions: dict[str, Callable[[], object]], repeats: int, min_seconds: float = 0.0,
               max_seconds: float = float("inf")) -> tuple[dict[str, float], dict[str, object]]:
    """Best wall time of each function over a warm-up round and the timed rounds, and the warm-up's results.

    The functions take turns within each round.  Timed rounds: ``repeats``;
    more (up to ``10 * repeats``) while they fit in ``min_seconds``, so that
    fast cells see a quiet moment of a shared machine; fewer (at least one)
    where they would exceed ``max_seconds``.  The warm-up counts too: a first
    call is never faster than a warm one, so it can only win if it is as fast.
    """
    best: dict[str, float] = {}
    results: dict[str, object] = {}
    for name, function in functions.items():
        start = time.perf_counter()
        results[name] = function()
        best[name] = time.perf_counter() - start
    warm_up = sum(best.values())
    rounds = max(repeats, min(10 * repeats, int(min_seconds / warm_up)))
    if max_seconds < rounds * warm_up:
        rounds = max(1, int(max_seconds / warm_up))
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, results


def matmul_rates(threads: int, repeats: int, size: int = MATMUL_SIZE) -> dict[str, float]:
    """fp32 multiply-accumulates per second of a square ``size`` matmul in NumPy, PyTorch and ONNX Runtime."""
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [size, size]) for name in "ab"],
        [onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [size, size])])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        seconds, _ = best_times({
            "numpy": lambda: a @ b,
            "torch": lambda: ta @ tb,
            "onnxruntime": lambda: session.run(None, {"a": a, "b": b}),
        }, repeats)
    return {name: size**3 / s for name, s in seconds.items()}


def torch_inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    """The batch as tensors, in the graph's input order."""
    return tuple(torch.from_numpy(batch[name]) for name in INPUT_NAMES)


def engines(model: ConvEntion, exported: ConvEntion, executed: int, session: ModelSession, *,
            loop: bool) -> list[Engine]:
    """The engines compared, eager first (the reference of ``max|dp|``); ``executed``: MACs of ``exported``."""
    eager, export_copy = EnsembleProbabilities([model]).eval(), EnsembleProbabilities([exported]).eval()

    def in_torch(module: Callable[..., torch.Tensor]) -> Callable[[Batch], np.ndarray]:
        def run(batch: Batch) -> np.ndarray:
            with torch.inference_mode():
                return module(*torch_inputs(batch)).numpy()
        return run

    def loop_probabilities(*inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(loop_forward(model, *inputs), dim=-1)[:, None]

    chosen = [
        Engine("eager", in_torch(eager), None),
        Engine("eager-export", in_torch(export_copy), executed),
        Engine("ort", lambda batch: session.run(*(batch[name] for name in INPUT_NAMES)), executed),
    ]
    if loop:
        chosen.append(Engine("loop", in_torch(loop_probabilities), None))
    return chosen


def low_precision(model: ConvEntion, path: Path, preset: str, threads: int, size: int, repeats: int,
                  scratch: Path) -> list[LowPrecisionRow]:
    """ONNX Runtime int8 and PyTorch bf16 against the fp32 ONNX Runtime path, on one batch.

    ``int8-dynamic``: ``quantize_dynamic`` (weights int8, activations quantised
    at run time: ConvInteger).  ``int8-static``: ``quantize_static`` of the
    convolutions in QDQ format, calibrated on 16 objects of other seeds
    (activations uint8, weights int8).  ``torch-bf16``: eager under CPU autocast
    to bfloat16.  Differences are taken on the probabilities and on their logarithms.
    """
    from onnxruntime import quantization

    session = ModelSession(path, device="cpu", threads=threads)
    batch = example_batch(session.card, size, seed=size)
    calibration = iter([example_batch(session.card, 4, seed=1000 + k) for k in range(4)])

    class Calibration(quantization.CalibrationDataReader):
        def get_next(self) -> Batch | None:
            return next(calibration, None)

    plain, dynamic, static = (scratch / f"{preset}-{name}.onnx" for name in ("plain", "dynamic", "static"))
    proto = onnx.load(str(path))
    del proto.graph.value_info[:]  # the quantiser's shape inference rejects some of the exporter's
    onnx.save(proto, str(plain))
    quantization.quantize_dynamic(str(plain), str(dynamic), weight_type=quantization.QuantType.QInt8)
    quantization.quantize_static(str(plain), str(static), Calibration(),
                                 quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
                for name, file in (("int8-dynamic", dynamic), ("int8-static", static))}
    eager = EnsembleProbabilities([model]).eval()

    def bf16() -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return eager(*torch_inputs(batch)).float().numpy()

    functions: dict[str, Callable[[], object]] = {
        "ort-fp32": lambda: session.run(*(batch[name] for name in INPUT_NAMES))}
    functions.update({name: (lambda s=s: s.run(None, batch)[0]) for name, s in sessions.items()})
    functions["torch-bf16"] = bf16
    torch.set_num_threads(threads)
    seconds, outputs = best_times(functions, repeats)
    reference = np.asarray(outputs["ort-fp32"])
    return [LowPrecisionRow(
        preset=preset, threads=threads, batch=size, engine=name, objects_per_s=size / seconds[name],
        vs_ort_fp32=seconds["ort-fp32"] / seconds[name],
        max_abs_difference=float(np.max(np.abs(np.asarray(outputs[name]) - reference))),
        max_log_difference=float(np.max(np.abs(np.log(np.asarray(outputs[name])) - np.log(reference)))),
    ) for name in functions]


def bench_preset(preset: str, options: argparse.Namespace, peaks: dict[int, float],
                 scratch: Path) -> tuple[list[Row], list[LowPrecisionRow], dict[str, object]]:
    """All rows of one preset, and what was exported."""
    model = randomised_model(preset)
    exported = to_conv2d_stem(model)
    specified, executed = measure(model).macs, measure(exported).macs
    path, graph, graph_speeds = export_model(model, preset, scratch, max(options.threads))
    repeats = options.paper_repeats if preset == "paper" else options.repeats
    rows: list[Row] = []
    for threads in options.threads:
        torch.set_num_threads(threads)
        session = ModelSession(path, device="cpu", threads=threads)
        for size in options.batches:
            batch = example_batch(session.card, size, seed=size)
            chosen = engines(model, exported, executed, session, loop=size in options.loop_batches)
            seconds, outputs = best_times({engine.name: (lambda e=engine: e.run(batch)) for engine in chosen},
                                          repeats, options.min_seconds, options.max_seconds)
            for engine in chosen:
                rate = size / seconds[engine.name]
                macs = specified if engine.name == "eager" else engine.macs
                rows.append(Row(
                    preset=preset, threads=threads, batch=size, engine=engine.name, objects_per_s=rate,
                    vs_eager=seconds["eager"] / seconds[engine.name],
                    vs_loop=seconds["loop"] / seconds[engine.name] if "loop" in seconds else None,
                    spec_gmac_per_s=specified * rate / 1e9,
                    exec_gmac_per_s=None if macs is None else macs * rate / 1e9,
                    spec_peak_fraction=specified * rate / peaks[threads],
                    exec_peak_fraction=None if macs is None else macs * rate / peaks[threads],
                    max_abs_difference=float(np.max(np.abs(outputs[engine.name] - outputs["eager"]))),
                ))
    reduced = low_precision(model, path, preset, options.threads[0], options.low_precision_batch, repeats,
                            scratch) if options.low_precision else []
    return rows, reduced, {"specified_macs": specified, "executed_macs": executed, "graph": graph,
                           "export_objects_per_s": graph_speeds}


def targets(rows: list[Row]) -> list[dict[str, object]]:
    """Each target, per thread count (and batch size where the target does not fix it)."""
    found = []
    ort_rows = [row for row in rows if row.engine == "ort"]
    for row in ort_rows:
        where = f"{row.preset}, {row.threads} thread(s), batch {row.batch}"
        if row.batch == 1:
            found.append({"target": "ort >= 1.5x eager", "where": where, "value": row.vs_eager,
                          "met": row.vs_eager >= TARGET_ORT_VS_EAGER})
            if row.vs_loop is not None:
                found.append({"target": "ort >= 2x loop", "where": where, "value": row.vs_loop,
                              "met": row.vs_loop >= TARGET_ORT_VS_LOOP})
        if row.preset == "paper":
            for kind, fraction in (("spec", row.spec_peak_fraction), ("exec", row.exec_peak_fraction)):
                found.append({"target": f"paper ort >= 50% of matmul MAC/s ({kind} MACs)", "where": where,
                              "value": fraction, "met": fraction >= TARGET_PAPER_PEAK_FRACTION})
        if row.preset == "compact" and row.threads == 1:
            found.append({"target": "compact ort >= 300 objects/s, 1 thread", "where": where,
                          "value": row.objects_per_s, "met": row.objects_per_s >= TARGET_COMPACT_OBJECTS_PER_S})
    return found


def table(rows: list[Row]) -> str:
    """Plain-text table of the rows."""
    def cell(value: float | None, form: str, width: int) -> str:
        return f"{'-' if value is None else format(value, form):>{width}}"

    lines = [f"{'preset':<8}{'thr':>4}{'batch':>6}  {'engine':<13}{'obj/s':>9}{'vs eager':>10}{'vs loop':>9}"
             f"{'GMAC/s spec':>13}{'exec':>7}{'%peak spec':>12}{'exec':>7}{'max|dp|':>10}"]
    for r in rows:
        lines.append(
            f"{r.preset:<8}{r.threads:>4}{r.batch:>6}  {r.engine:<13}{r.objects_per_s:>9.2f}"
            f"{cell(r.vs_eager, '.2f', 9)}x{cell(r.vs_loop, '.2f', 8)}{'x' if r.vs_loop is not None else ' '}"
            f"{cell(r.spec_gmac_per_s, '.1f', 13)}{cell(r.exec_gmac_per_s, '.1f', 7)}"
            f"{cell(r.spec_peak_fraction, '.0%', 12)}{cell(r.exec_peak_fraction, '.0%', 7)}"
            f"{cell(r.max_abs_difference, '.1e', 10)}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a report (or JSON) and return 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--presets", nargs="+", default=["paper", "compact"], choices=["paper", "compact"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="intra-op thread counts")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64], help="objects per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (compact, matmul)")
    parser.add_argument("--paper-repeats", type=int, default=2, help="timed rounds for the paper preset")
    parser.add_argument("--min-seconds", type=float, default=3.0,
                        help="add rounds (up to 10x the repeats) while a cell takes less than this")
    parser.add_argument("--max-seconds", type=float, default=60.0,
                        help="drop rounds (keeping one after the warm-up) where a cell would take longer")
    parser.add_argument("--loop-batches", nargs="+", type=int, default=[1],
                        help="batch sizes at which the (slow) loop reference is timed too")
    parser.add_argument("--low-precision", action="store_true",
                        help="also time int8 (ONNX Runtime) and bf16 (PyTorch), on the first thread count")
    parser.add_argument("--low-precision-batch", type=int, default=16, help="batch size of --low-precision")
    options = parser.parse_args(argv)
    started = time.perf_counter()

    rates = {threads: matmul_rates(threads, options.repeats) for threads in options.threads}
    peaks = {threads: max(found.values()) for threads, found in rates.items()}
    rows: list[Row] = []
    reduced: list[LowPrecisionRow] = []
    exports: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="convention-bench-") as scratch:
        for preset in options.presets:
            found, found_reduced, exports[preset] = bench_preset(preset, options, peaks, Path(scratch))
            rows.extend(found)
            reduced.extend(found_reduced)
    checks = targets(rows)
    report = {
        "command": " ".join(["python", "bench/inference.py", *map(shlex.quote, sys.argv[1:] if argv is None
                                                                   else argv)]),
        "machine": {**cpu_description(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": ort.__version__, "numpy": np.__version__},
        "matmul_gmac_per_s": {str(t): {k: v / 1e9 for k, v in r.items()} for t, r in rates.items()},
        "exports": exports,
        "rows": [asdict(row) for row in rows],
        "targets": checks,
        "low_precision": [asdict(row) for row in reduced],
        "seconds": time.perf_counter() - started,
    }
    if options.json:
        print(json.dumps(report, indent=2))
        return 0
    print(report["command"])
    print(", ".join(f"{key} {value}" for key, value in report["machine"].items()))
    for threads, found in rates.items():
        listed = ", ".join(f"{name} {value / 1e9:.1f}" for name, value in found.items())
        print(f"fp32 matmul {MATMUL_SIZE}^3, {threads} thread(s): {listed} GMAC/s; "
              f"peak = {peaks[threads] / 1e9:.1f}")
    for preset, found in exports.items():
        speeds = ", ".join(f"{name} {value:.1f}" for name, value in found["export_objects_per_s"].items())
        print(f"{preset}: {found['specified_macs'] / 1e9:.3f} GMAC/object specified, "
              f"{found['executed_macs'] / 1e9:.3f} executed by the exported graph ({found['graph']}; "
              f"export's batch-16 objects/s at {max(options.threads)} thread(s): {speeds})")
    print(table(rows))
    for check in checks:
        value = check["value"]
        shown = f"{value:.0%}" if "%" in check["target"] else f"{value:.2f}"
        print(f"{'MET    ' if check['met'] else 'NOT MET'}  {check['target']:<44} {check['where']:<32} {shown}")
    if reduced:
        print("low precision (not exact, report only), against ort fp32:")
        for r in reduced:
            print(f"{r.preset:<8}{r.threads:>4}{r.batch:>6}  {r.engine:<13}{r.objects_per_s:>9.2f}"
                  f"{r.vs_ort_fp32:>8.2f}x  max|dp| {r.max_abs_difference:.1e}  "
                  f"max|d log p| {r.max_log_difference:.1e}")
    print(f"{report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
