"""``convention-rt spark-classify``: classify a catalog on a Spark cluster into a Parquet dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from convention_rt.cli.options import OnInvalidOption, StampPolicyOption, warn_about_domain
from convention_rt.policies import OnInvalid, StampPolicy
from convention_rt.registry import DEFAULT_MODEL
from convention_rt.spark import classify_on_spark

__all__ = ["spark_classify"]


def spark_classify(
    catalog: Annotated[Path, typer.Argument(
        help="Catalog FITS file, at a path every executor can open.", show_default=False)],
    output: Annotated[Path, typer.Option(
        "--output", "-o", help="Result: a Parquet dataset (a folder) named *.parquet, where the executors "
        "and the driver can write.", show_default=False)],
    master: Annotated[str, typer.Option(
        help="Spark master URL: local\\[N], spark://HOST:7077, yarn, k8s://HOST:PORT.", show_default=False)],
    model: Annotated[Optional[str], typer.Option(
        help=f"Shipped model NAME or NAME/VERSION, or path to a .onnx file \\[default: {DEFAULT_MODEL}]",
        show_default=False)] = None,
    partitions: Annotated[Optional[int], typer.Option(
        help="Tasks, each a range of objects \\[default: the cluster's cores]", min=1, show_default=False)] = None,
    stamp_policy: StampPolicyOption = StampPolicy.error,
    on_invalid: OnInvalidOption = OnInvalid.flag,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Classify a catalog on a Spark cluster: the rows of `classify -o OUT.parquet`, as a dataset folder."""
    report = classify_on_spark(catalog, output, master=master, model=model, partitions=partitions,
                               stamp_policy=stamp_policy, on_invalid=on_invalid, overwrite=overwrite)
    typer.echo(f"wrote {report.output}: {report.rows} objects in {report.seconds:.1f} s "
               f"({report.rows / report.seconds:,.0f} objects/s) with {report.model} on Spark {report.master} "
               f"(started in {report.startup_seconds:.1f} s)")
    typer.echo("classes: " + ", ".join(f"{c}: {report.predicted[c]}" for c in report.classes)
               + f"; flagged: {report.predicted['']}")
    warn_about_domain(report.model, report.domain_declared, report.domain_problem, report.on_invalid)
