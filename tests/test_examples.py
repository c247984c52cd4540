"""The broker examples in docs/examples run as documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"
ZTF = Path(__file__).resolve().parent / "data" / "ztf"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fink_style_pandas_udf(tiny_model):
    pd = pytest.importorskip("pandas")
    example = load("fink_udf")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "objectId": ["ZTF1", "ZTF2", "ZTF3"],
        "stamps": [[rng.normal(50, 5, 1024).tolist() for _ in range(4)],  # flattened, as Spark arrays
                   [rng.normal(40, 4, (32, 32)) for _ in range(2)], []],
        "bands": [["g", "r", "g", "r"], ["r", "r"], []],
        "mjd": [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0], []],
    })
    model = str(tiny_model[0])
    out = example.convention_udf(frame["objectId"], frame["stamps"], frame["bands"], frame["mjd"], model=model)
    assert list(out.columns) == ["predicted_class", "p_AGN", "p_SNIa", "status"]
    assert out["predicted_class"].tolist()[:2] != ["", ""] and out["predicted_class"].iloc[2] == ""
    np.testing.assert_allclose(out[["p_AGN", "p_SNIa"]].to_numpy()[:2].sum(axis=1), 1.0, rtol=1e-6)
    assert out["status"].iloc[2] == "flagged:no_epochs"
    assert example.get_classifier(model) is example.get_classifier(model)  # one session per process


def test_broker_unit_classifies_real_ztf_packets_on_their_history(tiny_model):
    fastavro = pytest.importorskip("fastavro")
    example = load("broker_unit")
    unit = example.ConventionUnit(model=str(tiny_model[0]))
    packets = []
    for path in sorted(ZTF.glob("*.avro")):
        with open(path, "rb") as handle:
            packets.extend(fastavro.reader(handle))
    results = [unit.process(packet) for packet in packets]
    assert [r["objectId"] for r in results] == [p["objectId"] for p in packets]
    assert all(r["class"] in ("AGN", "SNIa") and r["n_frames"] == 1 for r in results)
    again = unit.process(packets[0])  # the same alert again: replaces, does not duplicate
    assert again["n_frames"] == 1 and len(unit.cache) == len(packets)
