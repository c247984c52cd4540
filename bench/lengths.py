"""Cost proportional to what an object has: the runtime on short and long objects, and by batch size.

Measures, in one run, through the public API (``Classifier``: checks,
preprocessing, ONNX Runtime, averaging), on one model whose graph has a dynamic
sequence axis:

* ``cut``: the runtime as shipped, each batch run in length buckets of the stem
  windows its objects have (``ModelSession.variable_length``);
* ``padded``: the same session forced to run every object on all ``seq_len``
  frames, as a fixed-length graph does;

for objects of 1, 2, 3, 5, 10, 20, 50 and 99 frames at batch 1 (``predict_object``,
the alert-broker call), the two taking turns in every round; then
``predict_batch`` throughput at several batch sizes on a mix of object lengths,
each batch size in its own process so that its peak memory (``VmHWM``) is
its own.

Targets: a 1-frame object >= 10x faster than padded; >= 300 objects/s per thread
at batch 1 on alerts of at most 5 frames.

``--preset NAME [--members N] [--set FIELD=VALUE ...]`` measures instead an ensemble of
``N`` members of a preset (with its ``ModelConfig`` fields changed as ``--set`` says, e.g.
``--set scene_summary=32``) with random weights, exported on the fly (needs the
``train`` extra): the speed does not depend on the weights, so a candidate is
measured before it is trained.

``--trees FILE`` (with ``--preset``) mixes every member with the trees of a ``--tree-head``
run (its ``state/fold<k>_trees.pt``) and also measures, in the same rounds, the same
ensemble without them: what the tree head costs at batch 1.

``--against NAME|PATH`` also measures another model in the same rounds at batch 1, per
object length, and prints the ratio of the two speeds (e.g. a candidate against the
default model).

Usage: ``python bench/lengths.py [--model NAME|PATH | --preset NAME --members N [--set FIELD=VALUE ...]
[--trees FILE]] [--against NAME|PATH] [--threads 1] [--repeats 5] [--json]``
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from convention_rt import Classifier  # noqa: E402
from convention_rt.registry import DEFAULT_MODEL  # noqa: E402

FRAMES = (1, 2, 3, 5, 10, 20, 50, 99)
#: Bands of an ensemble exported with random weights (``--preset``).
RANDOM_BANDS = ("u", "g", "r", "i", "z", "y")
BATCH_SIZES = (1, 4, 16, 64)


def make_object(classifier: Classifier, frames: int, seed: int) -> tuple[np.ndarray, list[str], np.ndarray]:
    """A synthetic object of ``frames`` single-band frames in the model's bands, a frame every ~2 days."""
    rng = np.random.default_rng(seed)
    size = classifier.card.stamp_size
    stamps = rng.normal(0.0, 30.0, size=(frames, size, size)).astype(np.float32)
    stamps[:, size // 2 - 1:size // 2 + 2, size // 2 - 1:size // 2 + 2] += 500.0
    bands = [classifier.card.bands[i % len(classifier.card.bands)] for i in range(frames)]
    mjd = 60000.0 + np.cumsum(rng.uniform(0.5, 3.0, frames))
    return stamps, bands, mjd


def per_length(model: str, threads: int, repeats: int) -> list[dict[str, float]]:
    """Objects/s at batch 1, cut and padded, for each object length."""
    classifier = Classifier(model, device="cpu", threads=threads, batch_size=1)
    session = classifier.session
    if not session.variable_length:
        raise SystemExit(f"{model}: its graph has a fixed sequence length; choose a model with a dynamic one")
    rows = []
    for frames in FRAMES:
        objects = [make_object(classifier, frames, seed) for seed in range(20)]
        best = {"cut": float("inf"), "padded": float("inf")}
        outputs = {}
        for _ in range(repeats):
            for mode in ("cut", "padded"):
                session.variable_length = mode == "cut"
                start = time.perf_counter()
                outputs[mode] = [classifier.predict_object(*o).probabilities for o in objects]
                best[mode] = min(best[mode], (time.perf_counter() - start) / len(objects))
        session.variable_length = True
        worst = max(abs(a[c] - b[c]) for a, b in zip(outputs["cut"], outputs["padded"]) for c in a)
        rows.append({"frames": frames, "cut_objects_per_s": 1 / best["cut"],
                     "padded_objects_per_s": 1 / best["padded"], "speed_up": best["padded"] / best["cut"],
                     "max_abs_difference": worst})
    return rows


def side_by_side(models: dict[str, str], threads: int, repeats: int) -> list[dict[str, float]]:
    """Objects/s at batch 1 of each model (``label: NAME or path``), taking turns, per object length.

    The objects are made for the first model's card; each row holds ``<label>_objects_per_s``.
    """
    classifiers = {label: Classifier(model, device="cpu", threads=threads, batch_size=1)
                   for label, model in models.items()}
    first = next(iter(classifiers.values()))
    rows = []
    for frames in FRAMES:
        objects = [make_object(first, frames, seed) for seed in range(20)]
        best = {label: float("inf") for label in classifiers}
        for _ in range(repeats):
            for label, classifier in classifiers.items():
                start = time.perf_counter()
                for o in objects:
                    classifier.predict_object(*o)
                best[label] = min(best[label], (time.perf_counter() - start) / len(objects))
        rows.append({"frames": frames, **{f"{label}_objects_per_s": 1 / best[label] for label in classifiers}})
    return rows


def tree_head_cost(with_trees: str, without: str, threads: int, repeats: int) -> list[dict[str, float]]:
    """Objects/s at batch 1 of the ensemble with and without its tree head, taking turns, per object length."""
    rows = side_by_side({"with_trees": with_trees, "without": without}, threads, repeats)
    return [{**row, "slow_down": row["without_objects_per_s"] / row["with_trees_objects_per_s"]} for row in rows]


def against_cost(model: str, against: str, threads: int, repeats: int) -> list[dict[str, float]]:
    """Objects/s at batch 1 of ``model`` and of ``against``, taking turns, per object length."""
    rows = side_by_side({"model": model, "against": against}, threads, repeats)
    return [{**row, "speed_up": row["model_objects_per_s"] / row["against_objects_per_s"]} for row in rows]


def one_batch_size(model: str, threads: int, batch_size: int, repeats: int) -> dict[str, float]:
    """predict_batch throughput and peak memory at one batch size (run in a child process)."""
    classifier = Classifier(model, device="cpu", threads=threads, batch_size=batch_size)
    lengths = np.random.default_rng(0).choice([1, 2, 3, 5, 10, 30, 99], size=256)
    objects = [make_object(classifier, int(f), seed) for seed, f in enumerate(lengths)]
    classifier.predict_batch(objects[:batch_size])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_batch(objects)
        best = min(best, time.perf_counter() - start)
    return {"batch_size": batch_size, "objects_per_s": len(objects) / best, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` where ``/proc`` has it: ``ru_maxrss`` survives ``exec``, so a child would
    report its parent's peak when that is higher (a parent that exported a model).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_random(preset: str, members: int, folder: Path, changes: dict[str, int] | None = None,
                  trees: Path | None = None) -> str:
    """Export ``members`` members of ``preset`` (its fields replaced by ``changes``) with random weights
    (seeds 0..members-1), mixed with the tree arrays saved in ``trees`` if given; returns the .onnx path."""
    import dataclasses

    import torch

    from train.checkpoint import Checkpoint
    from train.export import export_checkpoint
    from train.model import build_model, get_preset

    config = dataclasses.replace(get_preset(preset), **(changes or {}))
    states = []
    for seed in range(members):
        torch.manual_seed(seed)
        states.append(build_model(config).state_dict())
    checkpoint = Checkpoint(name=f"bench-{preset}", version="0", preset=preset, config=config, members=states,
                            bands=RANDOM_BANDS, normalisation={b: (100.0, 10.0) for b in RANDOM_BANDS},
                            trees=None if trees is None else torch.load(trees, map_location="cpu", weights_only=True))
    return str(export_checkpoint(checkpoint, folder / "model", threads=1).model_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="shipped model NAME[/VERSION] or .onnx path (default model)")
    parser.add_argument("--preset", default=None, help="measure random weights of this preset instead of --model")
    parser.add_argument("--members", type=int, default=1, help="ensemble members of --preset (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="an integer ModelConfig field of --preset to change, e.g. scene_summary=32 (repeatable)")
    parser.add_argument("--trees", type=Path, default=None,
                        help="with --preset: mix every member with these trees (state/fold<k>_trees.pt of a "
                             "--tree-head run) and measure the ensemble without them beside it")
    parser.add_argument("--against", default=None, metavar="NAME|PATH",
                        help="also measure this model at batch 1 in the same rounds, and the ratio of the speeds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--batch-size-child", type=int, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.batch_size_child is not None:
        print(json.dumps(one_batch_size(options.model, options.threads, options.batch_size_child,
                                        options.repeats)))
        return 0
    if options.preset is not None:
        if options.model is not None:
            parser.error("--model and --preset exclude each other")
        changes = {}
        for item in options.set:
            field, _, value = item.partition("=")
            try:
                changes[field] = int(value)
            except ValueError:
                parser.error(f"--set {item}: expected FIELD=INTEGER")
        if options.trees is not None and not options.trees.is_file():
            parser.error(f"--trees {options.trees}: not found")
        scratch = tempfile.TemporaryDirectory(prefix="bench-lengths-")
        try:
            options.model = export_random(options.preset, options.members, Path(scratch.name), changes,
                                          options.trees)
            without = (export_random(options.preset, options.members, Path(scratch.name) / "without", changes)
                       if options.trees is not None else None)
        except (TypeError, ValueError, RuntimeError, KeyError) as exc:
            parser.error(f"--preset {options.preset} --set {' '.join(options.set)}: {exc}")
        described = " ".join([options.preset, *options.set] + ([f"with the trees of {options.trees}"]
                                                                if options.trees is not None else []))
        print(f"{described}: {options.members} member(s) with random weights, exported to {options.model}")
    elif options.trees is not None:
        parser.error("--trees goes with --preset")
    else:
        without = None
    tree_rows = None
    if without is not None:
        tree_rows = tree_head_cost(options.model, without, options.threads, options.repeats)
    if tree_rows is not None and not options.json:
        print(f"batch 1, {options.threads} thread(s), objects/s with and without the tree head "
              f"(best of {options.repeats} rounds, taking turns)")
        print(f"{'frames':>6} {'trees':>9} {'without':>9} {'slow-down':>10}")
        for row in tree_rows:
            print(f"{row['frames']:>6} {row['with_trees_objects_per_s']:>9.1f} {row['without_objects_per_s']:>9.1f} "
                  f"{row['slow_down']:>10.2f}")
        print()
    against_rows = None
    if options.against is not None:
        against_rows = against_cost(options.model or DEFAULT_MODEL, options.against, options.threads,
                                    options.repeats)
        if not options.json:
            print(f"batch 1, {options.threads} thread(s), objects/s of {options.model or DEFAULT_MODEL} and of "
                  f"{options.against} (best of {options.repeats} rounds, taking turns)")
            print(f"{'frames':>6} {'model':>9} {'against':>9} {'speed-up':>9}")
            for row in against_rows:
                print(f"{row['frames']:>6} {row['model_objects_per_s']:>9.1f} {row['against_objects_per_s']:>9.1f} "
                      f"{row['speed_up']:>9.2f}")
            print()
    lengths = per_length(options.model, options.threads, options.repeats)
    batches = []
    for batch_size in BATCH_SIZES:
        command = [sys.executable, __file__, "--threads", str(options.threads), "--repeats", str(options.repeats),
                   "--batch-size-child", str(batch_size)] + (["--model", options.model] if options.model else [])
        batches.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    if options.json:
        print(json.dumps({"per_length": lengths, "batch_sizes": batches,
                          **({"tree_head": tree_rows} if tree_rows is not None else {}),
                          **({"against": against_rows} if against_rows is not None else {})}, indent=2))
        return 0
    print(f"batch 1, {options.threads} thread(s), objects/s (best of {options.repeats} rounds, modes alternating)")
    print(f"{'frames':>6} {'cut':>9} {'padded':>9} {'cut/padded':>10} {'max|dp|':>9}")
    for row in lengths:
        print(f"{row['frames']:>6} {row['cut_objects_per_s']:>9.1f} {row['padded_objects_per_s']:>9.1f} "
              f"{row['speed_up']:>10.2f} {row['max_abs_difference']:>9.1e}")
    base = batches[-1]["objects_per_s"]
    print(f"\npredict_batch on 256 objects of 1-99 frames, {options.threads} thread(s), a process per batch size")
    print(f"{'batch':>6} {'objects/s':>10} {'x batch ' + str(BATCH_SIZES[-1]):>11} {'peak RSS MB':>12}")
    for row in batches:
        print(f"{row['batch_size']:>6} {row['objects_per_s']:>10.1f} {row['objects_per_s'] / base:>11.2f} "
              f"{row['peak_rss_mb']:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
