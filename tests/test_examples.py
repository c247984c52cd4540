"""The broker examples in docs/examples run as documented."""

from __future__ import annotations

import copy
import importlib.util
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import stamp_data

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


def ztf_packets(fastavro) -> list[dict]:
    packets = []
    for path in sorted(ZTF.glob("*.avro")):
        with open(path, "rb") as handle:
            packets.extend(fastavro.reader(handle))
    return packets


def mostly(fill):
    """A 63 x 63 cut-out whose centre 32 x 32 (the stamp) is 84% ``fill``: more than half bad."""
    def spoil(packet: dict) -> None:
        image = np.full((63, 63), fill, dtype=np.float32)
        image[:20] = np.random.default_rng(0).normal(100.0, 10.0, (20, 63))  # 5 of the stamp's 32 rows
        packet["cutoutScience"]["stampData"] = stamp_data(image)
    return spoil


def truncated(packet: dict) -> None:
    packet["cutoutScience"]["stampData"] = packet["cutoutScience"]["stampData"][:500]


@pytest.mark.parametrize(("spoil", "reason"), [
    (mostly(np.nan), r"stamp 0 has 864 bad pixels of 1024 .*; alert refused, history unchanged$"),
    (mostly(1e37), r"stamp 0 has 864 bad pixels of 1024 .*; alert refused, history unchanged$"),  # as NaN
    (mostly(-3e38), r"stamp 0 has 864 bad pixels of 1024 .*; alert refused, history unchanged$"),
    (truncated, r"cutoutScience\.stampData: .*: truncated gzip stream"),  # a corrupt packet: skipped alike
], ids=["mostly-nan", "mostly-sentinel", "mostly-negative-sentinel", "corrupt-packet"])
def test_broker_unit_logs_and_skips_a_refused_alert_and_goes_on(tiny_model, caplog, spoil, reason):
    fastavro = pytest.importorskip("fastavro")
    example = load("broker_unit")
    unit = example.ConventionUnit(model=str(tiny_model[0]))
    first, other = ztf_packets(fastavro)

    def later(days: float) -> dict:  # the same object observed again
        packet = copy.deepcopy(first)
        packet["candid"] += int(days)
        packet["candidate"]["candid"] = packet["candid"]
        packet["candidate"]["jd"] += days
        return packet

    refused = later(1)
    spoil(refused)
    stream = [first, refused, later(2), other]
    with caplog.at_level(logging.WARNING, logger="broker_unit"):
        results = [unit.process(packet) for packet in stream]
    assert results[1] is None and unit.skipped == 1
    assert [r["objectId"] for r in results if r] == [first["objectId"], first["objectId"], other["objectId"]]
    assert [r["n_frames"] for r in results if r] == [1, 2, 1]  # the refused alert left the history as it was
    [record] = [r for r in caplog.records if r.name == "broker_unit"]
    assert record.levelno == logging.WARNING
    assert str(refused["candid"]) in record.getMessage() and re.search(reason, record.getMessage())
