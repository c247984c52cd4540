"""A Fink-style science module: classify objects in a pandas UDF.

Fink runs its science modules as Spark pandas UDFs: each call receives pandas
Series holding a batch of rows.  Here a row is an object with its history:
``stamps`` (a list of 32x32 cut-outs, nested or flattened), ``bands`` (a list
of band names) and ``mjd`` (a list of times).  The ONNX session is created
once per process (``functools.lru_cache``) and reused by every call, never
once per call.

With Spark::

    from pyspark.sql.functions import pandas_udf
    schema = "predicted_class string, p_AGN float, p_SNIa float, p_SNOther float, p_Variable float, status string"
    classify = pandas_udf(convention_udf, returnType=schema)
    df = df.withColumn("convention", classify("objectId", "stamps", "bands", "mjd"))
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

from convention_rt import Classifier

MODEL: str | None = None
"""Model to use: None for the package's default, or a shipped name or a .onnx path."""


@functools.lru_cache(maxsize=4)
def get_classifier(model: str | None = MODEL) -> Classifier:
    """One classifier per process and model (one thread each: Spark runs one task per core)."""
    return Classifier(model, device="auto", threads=1)


def convention_udf(object_id: pd.Series, stamps: pd.Series, bands: pd.Series, mjd: pd.Series,
                   model: str | None = MODEL) -> pd.DataFrame:
    """Classify a batch of objects: one output row per input row, in order."""
    classifier = get_classifier(model)
    size = classifier.card.stamp_size
    objects = [
        (np.stack([np.asarray(s, dtype=np.float32).reshape(size, size) for s in row_stamps])
         if len(row_stamps) else np.zeros((0, size, size), np.float32),
         [str(b) for b in row_bands], np.asarray(row_mjd, dtype=np.float64))
        for row_stamps, row_bands, row_mjd in zip(stamps, bands, mjd)
    ]
    result = classifier.predict_batch(objects, object_ids=object_id.to_numpy())
    frame = pd.DataFrame(result.probabilities, columns=[f"p_{c}" for c in result.classes])
    frame.insert(0, "predicted_class", result.predicted)
    frame["status"] = result.status
    return frame
