"""The ONNX Runtime session: devices, checksum, signature checks."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from conftest import tiny_card, write_tiny_onnx
from convention_rt import session as session_module
from convention_rt.errors import ModelError
from convention_rt.session import ModelSession


def feeds(n: int = 3, seq_len: int = 6):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, seq_len, 32, 32)).astype(np.float32),
            np.ones((n, seq_len), np.int64), np.zeros((n, seq_len), np.float32))


def test_cpu_session_gives_member_probabilities(tiny_model):
    model, card = tiny_model
    session = ModelSession(model, device="cpu", threads=1)
    assert session.providers == ["CPUExecutionProvider"] and session.card == card
    probabilities = session.run(*feeds())
    assert probabilities.shape == (3, 1, 2)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-6)
    assert session.run(*feeds(n=0)).shape == (0, 1, 2)


def test_auto_falls_back_to_cpu_with_one_info_line_and_no_onnxruntime_noise(tiny_model, caplog, capfd):
    model, _ = tiny_model
    with caplog.at_level(logging.INFO, logger="convention_rt"):
        session = ModelSession(model, device="auto")
    if session.device == "cuda":
        pytest.skip("a CUDA device is usable on this machine")
    assert session.providers == ["CPUExecutionProvider"]
    records = [r for r in caplog.records if r.name == "convention_rt"]
    assert len(records) == 1 and "running on the CPU" in records[0].getMessage()
    captured = capfd.readouterr()
    assert "[E:onnxruntime" not in captured.err and "[W:onnxruntime" not in captured.err
    assert "Failed to load library" not in captured.err


def test_cuda_where_impossible_names_the_available_providers(tiny_model, monkeypatch):
    model, _ = tiny_model
    monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: "no GPU in this test")
    with pytest.raises(ModelError, match=r"device cuda is not available: no GPU in this test \(providers built "
                                         r"into this onnxruntime: .*CPUExecutionProvider\); use --device cpu"):
        ModelSession(model, device="cuda")


def test_cuda_session_that_silently_lands_on_cpu_is_caught(tiny_model, monkeypatch, caplog, capfd):
    """Where the libraries seem to load but the provider still does not start."""
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this ONNX Runtime build has no CUDA provider")
    model, _ = tiny_model
    monkeypatch.setattr(session_module, "cuda_unavailable_reason", lambda: None)
    try:
        session = ModelSession(model, device="auto")
    except ModelError:
        pytest.fail("auto must fall back, not fail")
    if session.providers[0] == "CUDAExecutionProvider":
        pytest.skip("a CUDA device is usable on this machine")
    assert session.device == "cpu"
    err = capfd.readouterr().err  # ONNX Runtime's burst of errors was silenced
    assert "[E:onnxruntime" not in err and "[W:onnxruntime" not in err
    with pytest.raises(ModelError, match="CUDA was asked for but the session runs on"):
        ModelSession(model, device="cuda")


def test_checksum_mismatch_is_refused(tiny_model):
    model, _ = tiny_model
    with open(model, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelError, match="does not match the card"):
        ModelSession(model, device="cpu")


def test_card_embedded_in_metadata_is_used_without_card_json(tmp_path):
    onnx = pytest.importorskip("onnx")
    path = write_tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = session_module.CARD_METADATA_KEY, tiny_card().to_json()
    onnx.save(model, path)
    session = ModelSession(path, device="cpu")
    assert session.card == tiny_card()


def test_missing_or_wrong_models_are_refused(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        ModelSession(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="junk.onnx"):
        ModelSession(tmp_path / "junk.onnx", card=tiny_card(), device="cpu")
    write_tiny_onnx(tmp_path / "noc.onnx")
    with pytest.raises(ModelError, match="no card.json beside it"):
        ModelSession(tmp_path / "noc.onnx", device="cpu")
    write_tiny_onnx(tmp_path / "names.onnx", input_names=("x", "band_ids", "times"))
    with pytest.raises(ModelError, match="expected \\['stamps', 'band_ids', 'times'\\]"):
        ModelSession(tmp_path / "names.onnx", card=tiny_card(), device="cpu")
    write_tiny_onnx(tmp_path / "m9.onnx", seq_len=9)
    with pytest.raises(ModelError, match="does not match the card"):
        ModelSession(tmp_path / "m9.onnx", card=tiny_card(), device="cpu")
    with pytest.raises(ModelError, match="threads must be at least 1"):
        ModelSession(tmp_path / "m9.onnx", card=tiny_card(), threads=0)


def test_run_checks_input_shapes(tiny_model):
    session = ModelSession(tiny_model[0], device="cpu")
    stamps, bands, times = feeds(seq_len=6)
    with pytest.raises(ModelError, match="inputs must be stamps"):
        session.run(stamps[:, :5], bands[:, :5], times[:, :5])


def test_length_buckets_and_the_frames_each_row_needs():
    from convention_rt.session import length_buckets, sequence_lengths

    assert length_buckets(33).tolist() == [1, 2, 3, 4, 6, 8, 11, 15, 21, 29, 33]
    assert length_buckets(1).tolist() == [1]
    buckets = length_buckets(33)
    assert np.all(buckets[1:] <= np.ceil(buckets[:-1] * 1.5))  # at most 50 % more windows than a row has
    band_ids = np.zeros((5, 99), dtype=np.int64)
    for row, real in enumerate([0, 1, 3, 4, 99]):
        band_ids[row, :real] = 1
    assert sequence_lengths(band_ids, 3).tolist() == [3, 3, 3, 6, 99]
    band_ids[1, 40] = 2  # a real frame after padding still counts
    assert sequence_lengths(band_ids, 3)[1] == 3 * 15
