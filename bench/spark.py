"""Objects/s of ``convention-rt spark-classify`` in Spark local mode vs ``convention-rt classify``.

Measures, in one run, on the same generated catalog and the same model:

* ``classify``: the single-process path (``convention-rt classify -o OUT.parquet``,
  in-process), with ONNX Runtime on 1 thread and on all cores;
* ``spark``: :class:`convention_rt.spark.CatalogJob` on ``local[N]`` for each N
  asked for, twice per session: ``cold`` (the first job starts the Python
  workers, which import the runtime and build their ONNX session) and
  ``warm`` (the workers and sessions are reused: the steady state of a
  long-lived cluster).  The session's start-up is timed on its own (the first
  one in the process also launches the JVM).

Each figure is the best of ``--repeats`` rounds, the paths taking turns in every
round so that the load of a shared machine falls on all of them alike.

Every Spark result is compared with the single-process one (``max|dp|``, and
the same object ids and statuses).  The model is the package's default when one
ships, else ``--model PATH``, else a compact-preset model with random weights
exported on the fly (``train`` extra), as in ``bench/memory.py``: speed does
not depend on the weights.

Usage: ``python bench/spark.py [--json] [--objects N] [--epochs E] [--masters 'local[1]' 'local[2]']
[--repeats R] [--model PATH]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import model_path, write_catalog  # noqa: E402

from convention_rt.cli import main as cli_main  # noqa: E402
from convention_rt.spark import CatalogJob  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def time_classify(catalog: Path, model: Path, output: Path, threads: int | None) -> float:
    """Seconds of one ``convention-rt classify`` run (model loading and writing included)."""
    arguments = ["classify", str(catalog), "-o", str(output), "--model", str(model), "--device", "cpu",
                 "--overwrite"] + ([] if threads is None else ["--threads", str(threads)])
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(arguments)
    if code != 0:
        raise RuntimeError(f"convention-rt {' '.join(arguments)} exited with {code}")
    return time.perf_counter() - started


def max_difference(ours: Path, reference: Path) -> float:
    """Largest probability difference; raises when ids or statuses differ."""
    mine, theirs = pq.read_table(ours), pq.read_table(reference)
    for name in ("object_id", "status"):
        if mine.column(name).to_pylist() != theirs.column(name).to_pylist():
            raise AssertionError(f"{ours}: column {name} differs from the single-process output")
    columns = [name for name in mine.column_names if name.startswith("p_")]
    difference = np.abs(np.array([mine.column(c).to_numpy() for c in columns])
                        - np.array([theirs.column(c).to_numpy() for c in columns]))
    return float(np.nanmax(difference))


def time_spark(master: str, job: CatalogJob, scratch: Path, reference: Path) -> dict[str, float]:
    """Start-up, cold and warm job seconds of one local Spark session."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    started = time.perf_counter()
    spark = (SparkSession.builder.master(master).appName("convention-rt bench")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.executorEnv.PYTHONPATH", str(ROOT)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    result = {"startup_s": time.perf_counter() - started, "cores": spark.sparkContext.defaultParallelism}
    try:
        for run in ("cold", "warm"):
            output = scratch / f"spark-{run}.parquet"
            started = time.perf_counter()
            job.run(spark, output, overwrite=True)
            result[f"{run}_s"] = time.perf_counter() - started
            result[f"{run}_max_dp"] = max_difference(output, reference)
    finally:
        spark.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--objects", type=int, default=2000, help="objects in the generated catalog")
    parser.add_argument("--epochs", type=int, default=12, help="epochs per generated object")
    parser.add_argument("--masters", nargs="+", default=["local[1]", "local[2]"], help="Spark local masters")
    parser.add_argument("--repeats", type=int, default=2, help="rounds; each figure is the best round")
    parser.add_argument("--model", help="a .onnx file (default: the shipped model, else random compact weights)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model = model_path(options.model, scratch)
        catalog = write_catalog(scratch / "catalog.fits", options.objects, options.epochs)
        n = options.objects
        results: dict[str, object] = {
            "model": str(model), "objects": n, "epochs_per_object": options.epochs, "cpus": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0], "python": platform.python_version()}
        reference = scratch / "single.parquet"
        job = CatalogJob.plan(catalog, model=model)
        rounds: dict[str, list[dict[str, float]]] = {}
        for _ in range(options.repeats):
            for threads, label in ((1, "classify_1_thread"), (None, "classify_all_cores")):
                rounds.setdefault(label, []).append({"seconds": time_classify(catalog, model, reference, threads)})
            for master in options.masters:
                rounds.setdefault(f"spark_{master}", []).append(time_spark(master, job, scratch, reference))
        results["first_startup_s"] = rounds[f"spark_{options.masters[0]}"][0]["startup_s"]  # JVM launch too
        for label, measured in rounds.items():  # best times, worst differences
            best = {key: (max if key.endswith("max_dp") else min)(m[key] for m in measured) for key in measured[0]}
            if label.startswith("classify"):
                best["objects_per_s"] = n / best["seconds"]
            else:
                best.update({f"{run}_objects_per_s": n / best[f"{run}_s"] for run in ("cold", "warm")})
            results[label] = best
    if options.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{n} objects x {options.epochs} epochs, model {results['model']}; {results['cpus']} CPUs, "
          f"load average {results['load_average_1min']:.1f} at the start")
    for label in ("classify_1_thread", "classify_all_cores"):
        entry = results[label]
        print(f"  {label:<22} {entry['objects_per_s']:8,.0f} objects/s  ({entry['seconds']:.1f} s)")
    for master in options.masters:
        timing = results[f"spark_{master}"]
        for run in ("cold", "warm"):
            print(f"  spark {master:<10} {run:<5} {timing[f'{run}_objects_per_s']:8,.0f} objects/s  "
                  f"({timing[f'{run}_s']:.1f} s, max|dp| {timing[f'{run}_max_dp']:.1e})")
        print(f"  spark {master:<10} session start-up {timing['startup_s']:.1f} s, {timing['cores']} task slot(s)")
    print(f"  first session start-up, JVM launch included: {results['first_startup_s']:.1f} s")


if __name__ == "__main__":
    main()
