"""Every shipped model's predictions on the sample catalog, pinned.

``tests/golden/<name>-<version>.json`` holds the outputs of the model's PyTorch
members (``tests/golden/make_golden.py``), computed from the checkpoint of the run
that trained it, kept as ``tests/golden/checkpoints/<run>.ckpt`` (the run folder
named in the card's provenance: runs themselves are not in the repository).  Any
change to the runtime's reading, preprocessing or inference, or to the exported
graph, that moves a probability by more than 1e-4 fails here, for the default
model and for every older version still shipped.
"""

from __future__ import annotations

import dataclasses

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from convention_rt import Classifier
from convention_rt.cli import app
from convention_rt.data import sample_catalog_path
from convention_rt.registry import DEFAULT_MODEL, ModelEntry, list_models, resolve_model

GOLDEN_DIR = Path(__file__).parent / "golden"
CHECKPOINTS = GOLDEN_DIR / "checkpoints"
TOLERANCE = 1e-4


SHIPPED = list_models()
shipped = pytest.mark.parametrize("entry", SHIPPED, ids=[f"{e.name}/{e.version}" for e in SHIPPED])


def inputs_for(entry: ModelEntry) -> Path:
    """The golden inputs of a model: the sample catalog, or a subset of the difference benchmark for a model of
    difference stamps (``tests/golden/make_difference_sample.py``)."""
    if entry.card().domain.photometry.stamp_kind == "difference":
        return GOLDEN_DIR / "difference-sample.fits"
    return sample_catalog_path()


def golden_for(entry: ModelEntry) -> dict:
    return json.loads((GOLDEN_DIR / f"{entry.name}-{entry.version}.json").read_text())


def test_the_default_model_is_shipped():
    assert resolve_model(None) in SHIPPED and resolve_model(None).name == DEFAULT_MODEL


@shipped
def test_every_shipped_model_has_golden_outputs(entry):
    golden = golden_for(entry)
    assert golden["model"] == f"{entry.name}/{entry.version}"
    card = entry.card()
    assert tuple(golden["classes"]) == card.classes
    # the card carries the measured held-out metrics and how to reproduce the model
    cv = card.metrics["cross_validation"]
    assert 0.0 < cv["macro_f1"]["mean"] <= 1.0 and cv["folds"] >= 1
    assert card.provenance["command"].startswith("python -m train.fit ")
    assert len(card.provenance["catalog_sha256"]) == 64


@shipped
def test_classifier_reproduces_the_golden_outputs(entry):
    golden = golden_for(entry)
    classifier = Classifier(f"{entry.name}/{entry.version}", device="cpu", threads=1)
    predictions = list(classifier.predict_catalog(inputs_for(entry)))
    assert len(predictions) == 1
    got = predictions[0]
    assert [str(i) for i in got.object_ids] == golden["object_id"]
    assert got.status == golden["status"]
    assert got.n_frames.tolist() == golden["n_frames"]
    expected = np.array(golden["probabilities"], dtype=np.float64)
    np.testing.assert_allclose(got.probabilities, expected, atol=TOLERANCE, equal_nan=True)
    np.testing.assert_allclose(got.spread, np.array(golden["spread"]), atol=TOLERANCE, equal_nan=True)
    ok = ~np.isnan(expected).any(axis=1)
    assert ok.sum() >= len(ok) - 2  # the sample is meant to be classifiable
    margin = np.sort(expected[ok], axis=1)[:, -1] - np.sort(expected[ok], axis=1)[:, -2]
    clear = margin > 10 * TOLERANCE
    assert np.array(got.predicted)[ok][clear].tolist() == \
        [golden["classes"][k] for k in expected[ok][clear].argmax(axis=1)]


def test_classify_command_writes_the_golden_outputs(tmp_path):
    """The command with no --model uses the default, newest version."""
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(app, ["classify", str(sample_catalog_path()), "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    golden = golden_for(resolve_model(None))
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["object_id"] for r in rows] == golden["object_id"]
    for row, expected in zip(rows, golden["probabilities"]):
        got = [float(row[f"p_{name}"]) for name in golden["classes"]]
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, equal_nan=True)


@pytest.mark.torch
@shipped
def test_golden_outputs_are_those_of_the_trained_checkpoint(entry):
    pytest.importorskip("torch")
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    make_golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_golden)
    golden_outputs = make_golden.golden_outputs

    from train.checkpoint import Checkpoint

    card = entry.card()
    path = CHECKPOINTS / f"{Path(card.provenance['config']['run_dir']).name}.ckpt"  # the run's ensemble.ckpt
    # the export's version and temperature (a calibrated release of the run's checkpoint)
    checkpoint = dataclasses.replace(Checkpoint.load(path), version=card.version,
                                     temperature=card.metrics.get("calibration", {}).get("temperature", 1.0))
    recomputed = golden_outputs(checkpoint, inputs_for(entry))
    golden = golden_for(entry)
    assert recomputed["object_id"] == golden["object_id"] and recomputed["status"] == golden["status"]
    np.testing.assert_allclose(np.array(recomputed["probabilities"]), np.array(golden["probabilities"]),
                               atol=1e-6, equal_nan=True)
