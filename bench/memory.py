"""Memory and time of ``convention-rt classify`` on generated catalogs.

Measures, in one run:

* peak resident memory (RSS) of ``convention-rt classify`` on a 1k-object and
  a 20k-object catalog, each in a fresh process; streaming must keep them
  within 10% of each other;
* objects/s end to end, split into read / preprocess / inference / write, by
  walking the same stages the command runs (``Catalog.iter_chunks``,
  ``to_inputs``, ``ModelSession.run``, ``PredictionWriter.write``) with
  a timer around each.

The model is the package's default when one ships, else ``--model PATH``,
else a compact-preset model with random weights exported on the fly (needs
the ``train`` extra): speed and memory do not depend on the weights.

Usage: ``python bench/memory.py [--json] [--epochs E] [--model PATH]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from convention_rt.catalog import Catalog
from convention_rt.catalog_writer import CatalogWriter
from convention_rt.photometry import Photometry
from convention_rt.classifier import Classifier
from convention_rt.errors import ModelError
from convention_rt.predictions import PredictionWriter
from convention_rt.registry import resolve_model

BANDS = ("u", "g", "r", "i", "z", "y")


def write_catalog(path: Path, n_objects: int, epochs: int, seed: int = 0) -> Path:
    """Random stamps in the catalog format (speed and memory do not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    block = rng.normal(100.0, 10.0, size=(epochs, 32, 32)).astype(np.float32)
    photometry = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="FLUXCAL", sky_subtracted=True,
                            stamp_kind="science")
    with CatalogWriter(path, BANDS, photometry=photometry, overwrite=True) as writer:
        for k in range(n_objects):
            writer.add_object(k, mjd=59000.0 + np.arange(epochs) * 3.0, stamps=np.roll(block, k, axis=0),
                              bands=[BANDS[j % 6] for j in range(epochs)], ra=0.0, dec=0.0)
    return path


def model_path(option: str | None, scratch: Path) -> Path:
    if option:
        return Path(option)
    try:
        return resolve_model().model_path
    except ModelError:  # no shipped model in this installation: export random compact weights
        from train.checkpoint import Checkpoint
        from train.export import export_checkpoint
        from train.model import build_model, get_preset

        config = get_preset("compact")
        checkpoint = Checkpoint(name="bench-compact", version="0", preset="compact", config=config,
                                members=[build_model(config).state_dict()], bands=BANDS,
                                normalisation={b: (100.0, 10.0) for b in BANDS})
        return export_checkpoint(checkpoint, scratch / "model", threads=1).model_path


def peak_rss_of_classify(catalog: Path, model: Path, output: Path) -> float:
    """Peak RSS in MB of one ``convention-rt classify`` run in a fresh process."""
    arguments = ["classify", str(catalog), "-o", str(output), "--model", str(model), "--device", "cpu",
                 "--overwrite"]
    code = (
        "import resource, sys\n"
        "from convention_rt.cli import main\n"
        f"code = main({arguments!r})\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024.0


def stage_times(catalog: Path, model: Path, output: Path, chunk_objects: int = 256) -> dict[str, float]:
    """Seconds spent in each stage of classification, and objects/s overall."""
    classifier = Classifier(model, device="cpu")
    read = write = 0.0
    start = time.perf_counter()
    with Catalog(catalog) as opened, PredictionWriter(output, classifier.classes, overwrite=True) as writer:
        chunks = opened.iter_chunks(max_objects=chunk_objects)
        while True:
            t0 = time.perf_counter()
            chunk = next(chunks, None)
            read += time.perf_counter() - t0
            if chunk is None:
                break
            predictions = classifier.predict_chunk(chunk)
            t1 = time.perf_counter()
            writer.write(predictions)
            write += time.perf_counter() - t1
    elapsed = time.perf_counter() - start
    times = {"read": read, **classifier.timings, "write": write}
    return {**{f"{k}_s": v for k, v in times.items()}, "objects": writer.rows_written,
            "objects_per_s": writer.rows_written / elapsed, **{f"{k}_share": v / elapsed for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per generated object")
    parser.add_argument("--model", help="a .onnx file (default: the shipped model, else random compact weights)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = model_path(options.model, scratch)
        results: dict[str, object] = {"model": str(model), "epochs_per_object": options.epochs}
        for n in (1_000, 20_000):
            catalog = write_catalog(scratch / f"c{n}.fits", n, options.epochs)
            results[f"peak_rss_mb_{n}"] = peak_rss_of_classify(catalog, model, scratch / f"out{n}.fits")
            results[f"catalog_mb_{n}"] = catalog.stat().st_size / 1e6
            if n == 20_000:
                results["stages_20000"] = stage_times(catalog, model, scratch / "stages.fits")
            catalog.unlink()
        results["rss_ratio_20k_over_1k"] = results["peak_rss_mb_20000"] / results["peak_rss_mb_1000"]
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"model: {results['model']}")
    for n in (1_000, 20_000):
        print(f"  {n:>6} objects ({results[f'catalog_mb_{n}']:.0f} MB catalog): peak RSS "
              f"{results[f'peak_rss_mb_{n}']:.0f} MB")
    print(f"  RSS ratio 20k / 1k = {results['rss_ratio_20k_over_1k']:.3f} (target <= 1.10)")
    stages = results["stages_20000"]
    print(f"end to end: {stages['objects_per_s']:,.0f} objects/s on 20k objects; where the time goes:")
    for stage in ("read", "preprocess", "inference", "write"):
        print(f"  {stage:<10} {stages[f'{stage}_s']:7.2f} s  ({100 * stages[f'{stage}_share']:.1f}%)")


if __name__ == "__main__":
    main()
