"""Inference on Apache Spark: a pandas UDF for DataFrames of objects, and a catalog job.

Both run on Spark's Arrow path, as the Fink broker runs its science modules,
and both get their :class:`~convention_rt.classifier.Classifier` from
:func:`get_classifier`: one ONNX Runtime session per Python worker process
and model, built on the first batch and reused by every later batch and task.

* :func:`classification_udf` classifies a DataFrame whose rows are objects
  (stamps, bands and times held in array columns);
* :class:`CatalogJob` classifies a catalog file: the driver opens the catalog
  to validate it and splits its objects into ranges; each task opens the file
  itself (a filesystem every executor sees is assumed), reads its range chunk
  by chunk and classifies it; the results go to a Parquet dataset written under
  a temporary name and renamed into place.

:func:`classify_on_spark` runs a :class:`CatalogJob` end to end: the library
call of ``convention-rt spark-classify`` (:mod:`convention_rt.cli.spark`).
pyspark (the ``spark`` extra) is imported only when Spark is used.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from convention_rt.catalog import Catalog
from convention_rt.classifier import Classifier
from convention_rt.errors import BadInputError, CatalogError, ConventionError, ModelError, UsageError
from convention_rt.model_card import ModelCard
from convention_rt.policies import OnInvalid, StampPolicy
from convention_rt.predictions import Predictions
from convention_rt.provenance import Provenance
from convention_rt.publish import StagedOutput, output_path
from convention_rt.registry import open_card
from convention_rt.schema import OutputColumn, arrow_batch, arrow_schema, prediction_columns, spark_schema

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import SparkSession
    from pyspark.sql.udf import UserDefinedFunction

__all__ = ["CatalogJob", "SparkReport", "classification_udf", "classify_objects", "classify_on_spark",
           "get_classifier", "object_ranges"]

_INSTALL_HINT = "pip install 'convention-rt[spark]' (Spark also needs Java 17 or later)"
# Errors raised on executors reach the driver inside Spark's error text, as "module.Class: message".
_EXECUTOR_ERROR = re.compile(r"convention_rt\.errors\.(\w+): (.+)")
_EXECUTOR_ERROR_TYPES: dict[str, type[ConventionError]] = {
    "CatalogError": BadInputError, "BadInputError": BadInputError, "UsageError": UsageError,
    "ModelError": ModelError}


# -- the per-process session ---------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def get_classifier(model: str) -> Classifier:
    """The classifier of ``model`` in this process, built on first use.

    Spark runs one task per core, each in its own Python worker, so each
    session gets one thread.  ``get_classifier.cache_info().misses`` counts
    the sessions built by this process.

    Parameters
    ----------
    model : str
        As resolved on the driver: a shipped ``NAME/VERSION`` or the absolute
        path of a ``.onnx`` file.

    Returns
    -------
    Classifier
    """
    return Classifier(model, device="auto", threads=1)


def _model_reference(model: str | Path | None = None) -> tuple[str, ModelCard]:
    """How executors find ``model``, and its card, resolved once on the driver.

    A shipped model is pinned to its version (every executor must have the
    same convention-rt installed); a model file is given by its absolute path
    (on a filesystem every executor sees).

    Parameters
    ----------
    model : str or Path, optional
        As for :class:`~convention_rt.classifier.Classifier`; default: the package's default model.

    Returns
    -------
    reference : str
    card : ModelCard

    Raises
    ------
    ModelError
        No such model, or a card that cannot be read.
    """
    entry, card = open_card(model)
    reference = str(entry.model_path.resolve()) if not entry.version else f"{entry.name}/{entry.version}"
    return reference, card


# -- the output table ------------------------------------------------------------------------------
def _to_arrow(predictions: Predictions, schema: pa.Schema) -> pa.RecordBatch:
    """One batch of results as Arrow in the columns of :mod:`convention_rt.schema`; NaN stays NaN (never null)."""
    import pyarrow as pa

    values = predictions.columns()
    if "object_id" in schema.names and schema.field("object_id").type == pa.string():
        values["object_id"] = predictions.object_ids.astype(str)
    return arrow_batch(schema, values)


# -- DataFrames of objects: the pandas UDF -------------------------------------------------------
def _stamp_cube(object_id: Any, stamps: Any, size: int) -> NDArray[np.float32]:
    """One object's stamps from an array column: T stamps of ``size * size`` values or ``size`` rows.

    Returns
    -------
    ndarray, shape (T, size, size), float32
    """
    frames = []
    for stamp in stamps:
        stamp = np.asarray(stamp)
        if stamp.dtype == object:  # nested rows
            stamp = np.vstack(stamp)
        elif stamp.size != size * size:
            raise BadInputError(f"object {object_id}: a stamp of {stamp.size} values; the model needs "
                                f"{size}x{size} = {size * size} (flattened) or {size} rows of {size}")
        frames.append(stamp.reshape(size, size) if stamp.ndim == 1 else stamp)
    return np.stack(frames).astype(np.float32) if frames else np.zeros((0, size, size), np.float32)


def classify_objects(object_id: pd.Series, stamps: pd.Series, bands: pd.Series, mjd: pd.Series, *,
                     model: str) -> pd.DataFrame:
    """Classify a batch of objects held in pandas Series: the body of :func:`classification_udf`.

    Parameters
    ----------
    object_id : pandas.Series
        Object ids, used in error messages.
    stamps : pandas.Series
        Per object, its T stamps: each ``size * size`` values (flattened) or ``size`` rows of ``size``.
    bands : pandas.Series
        Per object, T band names.
    mjd : pandas.Series
        Per object, T times (MJD).
    model : str
        A shipped ``NAME/VERSION`` or the absolute path of a ``.onnx`` file.

    Returns
    -------
    pandas.DataFrame
        One row per object, in order: the columns of ``PredictionWriter``'s Parquet output
        but ``object_id``.  Arrow-backed, so that Spark keeps NaN probabilities as NaN.

    Raises
    ------
    BadInputError
        Stamps, bands and times of an object that disagree in length or shape.
    """
    import pandas as pd

    classifier = get_classifier(model)
    size = classifier.card.stamp_size
    objects = [(_stamp_cube(i, s, size), [str(b) for b in names], np.asarray(times, dtype=np.float64))
               for i, s, names, times in zip(object_id, stamps, bands, mjd)]
    predictions = classifier.predict_batch(objects, object_ids=object_id.to_numpy())
    schema = arrow_schema(prediction_columns(classifier.classes, object_id=False))
    return _to_arrow(predictions, schema).to_pandas(types_mapper=pd.ArrowDtype)


def classification_udf(model: str | Path | None = None) -> UserDefinedFunction:
    """A pandas UDF classifying objects: ``udf(object_id, stamps, bands, mjd)`` -> struct.

    Input columns: ``object_id`` (any type), ``stamps`` (``array<array<float>>``, each
    stamp flattened, or ``array<array<array<float>>>``), ``bands`` (``array<string>``),
    ``mjd`` (``array<double>``), one row per object with its history.  The
    result is a struct of the columns of ``PredictionWriter``'s Parquet output
    but ``object_id``; flagged objects get NaN probabilities and say why in ``status``.

    Parameters
    ----------
    model : str or Path, optional
        Shipped model or model file (on every executor); default: the package's default model.

    Returns
    -------
    pyspark.sql.udf.UserDefinedFunction

    Examples
    --------
    >>> classify = classification_udf()                                   # doctest: +SKIP
    >>> df = df.withColumn("convention", classify("objectId", "stamps", "bands", "mjd"))  # doctest: +SKIP
    >>> df.select("objectId", "convention.predicted_class", "convention.status")  # doctest: +SKIP
    """
    try:
        import pandas as pd
        from pyspark.sql.functions import pandas_udf
    except ImportError as exc:
        raise UsageError(f"Spark inference needs pyspark and pandas: {_INSTALL_HINT}") from exc
    reference, card = _model_reference(model)

    def classify(object_id, stamps, bands, mjd):  # noqa: ANN001, ANN202 (annotated below, as Spark reads them)
        return classify_objects(object_id, stamps, bands, mjd, model=reference)

    classify.__annotations__ = {"object_id": pd.Series, "stamps": pd.Series, "bands": pd.Series,
                                "mjd": pd.Series, "return": pd.DataFrame}
    return pandas_udf(classify, returnType=spark_schema(prediction_columns(card.classes, object_id=False)))


# -- catalogs: the distributed job -----------------------------------------------------------------
def object_ranges(n_objects: int, partitions: int) -> list[tuple[int, int]]:
    """Split objects ``0..n_objects-1`` into at most ``partitions`` contiguous, balanced ranges.

    Returns
    -------
    list of (start, stop)
        Half-open ranges of OBJECTS rows, in order, none empty.
    """
    if partitions < 1:
        raise UsageError(f"partitions must be at least 1, got {partitions}")
    parts = min(partitions, n_objects)
    bounds = [n_objects * k // parts for k in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


@dataclass(frozen=True)
class CatalogJob:
    """A catalog to classify on Spark, validated on the driver.

    Build it with :meth:`plan`, run it with :meth:`run`.

    Attributes
    ----------
    catalog : Path
        Absolute path of the catalog, the same on every executor.
    model : str
        The model as executors find it: a shipped ``NAME/VERSION`` or the absolute path of a ``.onnx`` file.
    classes : tuple of str
        The model's classes.
    stamp_size : int
        The model's stamp side.
    n_objects : int
        Objects in the catalog.
    string_ids : bool
        Whether object ids are strings (else int64).
    chunk_size : int
        Objects per chunk read and classified by a task (memory per task).
    provenance : Provenance or None
        Where the results come from, written to the dataset's ``_common_metadata``.
    stamp_policy, on_invalid : StampPolicy, OnInvalid
        How every task opens the catalog, as for :class:`~convention_rt.catalog.Catalog`.
    domain_declared : bool
        Whether the model's card declares a training domain (else the catalog was not checked against it).
    domain_problem : str
        How the catalog is out of the model's domain, found on the driver ("" when it is not).
    """

    catalog: Path
    model: str
    classes: tuple[str, ...]
    stamp_size: int
    n_objects: int
    string_ids: bool
    chunk_size: int = 256
    provenance: Provenance | None = None
    stamp_policy: StampPolicy = StampPolicy.error
    on_invalid: OnInvalid = OnInvalid.flag
    domain_declared: bool = True
    domain_problem: str = ""

    @classmethod
    def plan(cls, catalog: str | Path, *, model: str | Path | None = None, chunk_size: int = 256,
             stamp_policy: StampPolicy | str = StampPolicy.error,
             on_invalid: OnInvalid | str = OnInvalid.flag) -> CatalogJob:
        """Check the model and the catalog, on the driver, before any Spark work.

        The catalog is opened as each task will open it: the model's stamp
        size and domain, ``stamp_policy`` and ``on_invalid``.

        Raises
        ------
        UsageError
            A bad policy or chunk size.
        CatalogError
            A catalog that breaks the format (the message names the file and field), or under
            ``on_invalid="raise"`` one out of the model's domain.
        ModelError
            No such model.
        """
        if chunk_size < 1:
            raise UsageError(f"chunk_size must be at least 1, got {chunk_size}")
        stamp_policy = StampPolicy.parse(stamp_policy, "stamp_policy")
        on_invalid = OnInvalid.parse(on_invalid, "on_invalid")
        reference, card = _model_reference(model)
        target = card.domain.photometry if card.domain is not None else None  # None: said once, by the caller
        with Catalog(catalog, stamp_size=card.stamp_size, stamp_policy=stamp_policy, on_invalid=on_invalid,
                     target=target) as opened:
            n_objects, string_ids = opened.n_objects, opened.id_width is not None
            domain_problem = opened.domain_problem
        return cls(catalog=Path(catalog).resolve(), model=reference, classes=card.classes,
                   stamp_size=card.stamp_size, n_objects=n_objects, string_ids=string_ids, chunk_size=chunk_size,
                   provenance=Provenance.of(card, source=catalog), stamp_policy=stamp_policy, on_invalid=on_invalid,
                   domain_declared=card.domain is not None, domain_problem=domain_problem)

    @property
    def columns(self) -> tuple[OutputColumn, ...]:
        """The output columns (:func:`~convention_rt.schema.prediction_columns`)."""
        return prediction_columns(self.classes, string_ids=self.string_ids)

    def run(self, spark: SparkSession, output: str | Path, *, partitions: int | None = None,
            overwrite: bool = False) -> Path:
        """Classify the catalog on ``spark`` and write a Parquet dataset (a folder) at ``output``.

        The dataset is written under a temporary name beside ``output`` and
        published when complete (:mod:`convention_rt.publish`): without
        ``overwrite``, an ``output`` that appeared meanwhile is left alone and
        the run fails.  On failure nothing is left behind.

        Parameters
        ----------
        spark : pyspark.sql.SparkSession
        output : str or Path
            ``*.parquet``; its folder must be on a filesystem every executor and the driver see.
        partitions : int, optional
            Tasks, each a contiguous range of objects; default: the cluster's
            cores (``defaultParallelism``).
        overwrite : bool
            Replace an existing output.

        Returns
        -------
        Path
            The output folder: part files in object order, readable by
            ``pandas.read_parquet`` or ``pyarrow.parquet.read_table``.

        Raises
        ------
        BadInputError, ModelError
            An error on an executor, as one line.
        """
        from py4j.protocol import Py4JError
        from pyspark.errors import PySparkException

        output = _check_output(output, overwrite=overwrite)
        ranges = object_ranges(self.n_objects, partitions or spark.sparkContext.defaultParallelism)
        tasks = spark.range(0, len(ranges), 1, numPartitions=len(ranges))
        results = tasks.mapInArrow(functools.partial(_classify_ranges, job=self, ranges=tuple(ranges)),
                                   spark_schema(self.columns))
        staged = StagedOutput(output, overwrite=overwrite, folder=True)
        try:
            results.write.parquet(f"file://{staged.temporary}")  # executors write to the shared folder
            self._write_metadata(staged.temporary)
        except (PySparkException, Py4JError) as exc:  # how executor errors reach the driver
            staged.discard()
            raise _job_error(exc) from exc
        except BaseException:
            staged.discard()
            raise
        return staged.publish()

    def _write_metadata(self, folder: Path) -> None:
        """The dataset's schema and provenance as ``_common_metadata`` (readers of the parts skip it)."""
        import pyarrow.parquet as pq

        metadata = self.provenance.metadata() if self.provenance is not None else {}
        pq.write_metadata(arrow_schema(self.columns, metadata), folder / "_common_metadata")


def _classify_ranges(tasks: Iterator[pa.RecordBatch], *, job: CatalogJob,
                     ranges: tuple[tuple[int, int], ...]) -> Iterator[pa.RecordBatch]:
    """On an executor: classify the object ranges named by the task indices in ``tasks``."""
    classifier = get_classifier(job.model)
    schema = arrow_schema(job.columns)
    for batch in tasks:
        for index in batch.column(0).to_pylist():
            start, stop = ranges[index]
            with classifier.open_catalog(job.catalog, stamp_policy=job.stamp_policy,
                                         on_invalid=job.on_invalid) as catalog:  # converted to its domain
                if catalog.n_objects != job.n_objects:
                    raise CatalogError(str(job.catalog), f"has {catalog.n_objects} objects on this executor and "
                                       f"{job.n_objects} on the driver: the executors must see the driver's file "
                                       "(a shared filesystem)", hdu="OBJECTS")
                for predictions in classifier.predict_opened(catalog, chunk_objects=job.chunk_size, start=start,
                                                             stop=stop):
                    yield _to_arrow(predictions, schema)


def _check_output(output: str | Path, *, overwrite: bool) -> Path:
    """The absolute output path, after the checks that need no work: suffix and existence.

    Raises
    ------
    UsageError
        Not ``*.parquet``, a name longer than a file name may be, or existing without ``overwrite``.
    """
    output = output_path(output).resolve()
    if output.suffix.lower() != ".parquet":
        raise UsageError(f"{output}: output must end in .parquet (a Parquet dataset folder)")
    if output.exists() and not overwrite:
        raise UsageError(f"{output}: exists already (add --overwrite to replace it)")
    return output


def _job_error(exc: Exception) -> ConventionError:
    """A failed Spark job as one line: the executor's own error when it was ours."""
    text = str(exc)
    ours = _EXECUTOR_ERROR.findall(text)
    if ours:
        kind, message = ours[-1]
        return _EXECUTOR_ERROR_TYPES.get(kind, ModelError)(message.strip())
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    # A Python worker's traceback ends with its exception; the JVM's messages start with theirs.
    cause = lines[-1] if "Traceback (most recent call last):" in lines else lines[0]
    return ModelError(f"the Spark job failed: {cause}")


# -- the whole run -----------------------------------------------------------------------------------
def _start_spark(master: str) -> SparkSession:
    """A Spark session on ``master``; local workers run this interpreter unless PYSPARK_PYTHON says otherwise."""
    try:
        from pyspark.errors import PySparkException
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise UsageError(f"spark-classify needs pyspark: {_INSTALL_HINT}") from exc
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    try:
        return SparkSession.builder.master(master).appName("convention-rt spark-classify").getOrCreate()
    except PySparkException as exc:
        raise ModelError(f"cannot start Spark with master {master}: {' '.join(str(exc).split())} "
                         "(check the master URL, and that Java 17 or later is installed)") from exc


@dataclass
class SparkReport:
    """What :func:`classify_on_spark` wrote.

    Attributes
    ----------
    output : Path
        The Parquet dataset (a folder).
    rows : int
        Objects written.
    seconds : float
        Wall time of the job, from its submission.
    startup_seconds : float
        Time to plan the job and get a Spark session.
    model : str
        The model as the executors found it.
    master : str
        The Spark master the job ran on.
    classes : tuple of str
    predicted : Counter
        Objects per predicted class; ``""`` counts the flagged ones.
    domain_declared : bool
        Whether the model's card declares a training domain (else nothing was checked against it).
    domain_problem : str
        How the catalog is out of the model's domain ("" when it is not).
    on_invalid : OnInvalid
        The policy the run applied.
    """

    output: Path
    rows: int
    seconds: float
    startup_seconds: float
    model: str
    master: str
    classes: tuple[str, ...]
    predicted: Counter
    domain_declared: bool = True
    domain_problem: str = ""
    on_invalid: OnInvalid = OnInvalid.flag


def classify_on_spark(catalog: str | Path, output: str | Path, *, master: str, model: str | Path | None = None,
                      partitions: int | None = None, stamp_policy: StampPolicy | str = StampPolicy.error,
                      on_invalid: OnInvalid | str = OnInvalid.flag, overwrite: bool = False) -> SparkReport:
    """Classify a catalog on a Spark cluster into a Parquet dataset: the library call of ``spark-classify``.

    The output and the catalog are checked before Spark starts; a Spark session
    already active in this process is used (and left running), else one is
    started on ``master`` and stopped at the end.

    Parameters
    ----------
    catalog : str or Path
        At a path every executor can open.
    output : str or Path
        ``*.parquet``, where the executors and the driver can write.
    master : str
        Spark master URL: ``local[N]``, ``spark://HOST:7077``, ``yarn``, ``k8s://HOST:PORT``.
    model : str or Path, optional
        As for :class:`~convention_rt.classifier.Classifier`.
    partitions : int, optional
        Tasks (default: the cluster's cores).
    stamp_policy, on_invalid
        As for :func:`~convention_rt.classify.classify_catalog`; under ``on_invalid="raise"`` the first
        object that cannot be classified stops the job (a :class:`BadInputError`), and nothing is written.
    overwrite : bool
        Replace an existing output.

    Returns
    -------
    SparkReport
    """
    _check_output(output, overwrite=overwrite)  # usage errors, then the catalog, before starting Spark
    job = CatalogJob.plan(catalog, model=model, stamp_policy=stamp_policy, on_invalid=on_invalid)
    started = time.perf_counter()
    running = _running_session()
    spark = running or _start_spark(master)
    submitted = time.perf_counter()
    try:
        used = spark.sparkContext.master
        written = job.run(spark, output, partitions=partitions, overwrite=overwrite)
    finally:
        if running is None:
            spark.stop()
    elapsed = time.perf_counter() - submitted
    counts = _class_counts(written)
    return SparkReport(output=written, rows=sum(counts.values()), seconds=elapsed,
                       startup_seconds=submitted - started, model=job.model, master=used, classes=job.classes,
                       predicted=counts, domain_declared=job.domain_declared, domain_problem=job.domain_problem,
                       on_invalid=job.on_invalid)


def _running_session() -> SparkSession | None:
    """The Spark session already active in this process (embedding, tests), if any."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def _class_counts(dataset: Path) -> Counter:
    """Objects per predicted class in a written dataset ("" counts the flagged ones)."""
    import pyarrow.parquet as pq

    column = pq.read_table(dataset, columns=["predicted_class"]).column(0)
    return Counter(column.to_pylist())
