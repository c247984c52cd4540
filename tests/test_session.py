"""The ONNX Runtime session: devices, checksum, signature checks."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from convention_rt import session as session_module
from convention_rt.errors import ModelError, UsageError
from convention_rt.session import ModelSession
from helpers import tiny_card, write_tiny_onnx


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
    with pytest.raises(UsageError, match="threads must be from 1 to"):
        ModelSession(tmp_path / "m9.onnx", card=tiny_card(), threads=0)


@pytest.mark.parametrize("threads", [3, 1000, 100_000])
def test_more_threads_than_cpus_is_a_usage_error_naming_the_cpus(tiny_model, monkeypatch, threads):
    from convention_rt.classifier import Classifier

    monkeypatch.setattr(session_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert session_module.available_cpus() == 2
    for make in (lambda: ModelSession(tiny_model[0], device="cpu", threads=threads),
                 lambda: Classifier(tiny_model[0], device="cpu", threads=threads)):
        with pytest.raises(UsageError, match=rf"^threads must be from 1 to 2 \(the CPUs available to this "
                                             rf"process\), got {threads}; leave it out"):
            make()
    with pytest.raises(UsageError, match="whole number of threads, got '2'"):
        ModelSession(tiny_model[0], device="cpu", threads="2")
    assert ModelSession(tiny_model[0], device="cpu", threads=2).run(*feeds()).shape == (3, 1, 2)


def write_scaled_onnx(path, scale: float, shift: float = 0.0):
    """The tiny model with its softmax output mapped to ``scale * p + shift``: not probabilities unless 1, 0."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    write_tiny_onnx(path)
    model = onnx.load(path)
    graph = model.graph
    graph.node[-1].output[0] = "unscaled"
    graph.node.extend([helper.make_node("Mul", ["unscaled", "scale"], ["scaled"]),
                       helper.make_node("Add", ["scaled", "shift"], ["probabilities"])])
    graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), "scale"),
                              numpy_helper.from_array(np.array(shift, np.float32), "shift")])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(("scale", "shift", "problem"), [
    (10.0, 0.0, r"values from .* to .*, outside \[0, 1\]"),
    (1.0, -0.6, r"values from -0\.1\d* to -0\.0\d*, outside \[0, 1\]"),
    (0.5, 0.0, r"a member's class probabilities sum to 0\.5, not 1"),
])
def test_outputs_that_are_not_probabilities_are_a_model_error(tmp_path, scale, shift, problem):
    model = write_scaled_onnx(tmp_path / "scaled.onnx", scale, shift)
    session = ModelSession(model, card=tiny_card(), device="cpu")
    with pytest.raises(ModelError, match=rf"scaled\.onnx: output 'probabilities' is not class probabilities "
                                         rf"\({problem}\): the model must end with a softmax"):
        session.run(*feeds())
    fine = ModelSession(write_scaled_onnx(tmp_path / "fine.onnx", 1.0), card=tiny_card(), device="cpu")
    np.testing.assert_allclose(fine.run(*feeds()).sum(axis=-1), 1.0, rtol=1e-6)


def test_run_checks_input_shapes(tiny_model):
    session = ModelSession(tiny_model[0], device="cpu")
    stamps, bands, times = feeds(seq_len=6)
    with pytest.raises(ModelError, match="inputs must be stamps"):
        session.run(stamps[:, :5], bands[:, :5], times[:, :5])


def test_length_buckets_and_the_frames_each_row_needs():
    from convention_rt.session import frames_needed, length_buckets, sequence_lengths

    assert length_buckets(33).tolist() == [1, 2, 3, 4, 6, 8, 11, 15, 21, 29, 33]
    assert length_buckets(1).tolist() == [1]
    buckets = length_buckets(33)
    assert np.all(buckets[1:] <= np.ceil(buckets[:-1] * 1.5))  # at most 50 % more windows than a row has
    band_ids = np.zeros((5, 99), dtype=np.int64)
    for row, real in enumerate([0, 1, 3, 4, 99]):
        band_ids[row, :real] = 1
    assert frames_needed(band_ids, 3).tolist() == [3, 3, 3, 6, 99]
    band_ids[3, :8] = 1  # 8 frames: 3 windows, run at the bucket of 3
    assert frames_needed(band_ids, 3)[3] == 9 and sequence_lengths(band_ids, 3)[3] == 9
    band_ids[3, :14] = 1  # 14 frames: 5 windows, run at the bucket of 6
    assert frames_needed(band_ids, 3)[3] == 15 and sequence_lengths(band_ids, 3)[3] == 18
    band_ids[3, 4:] = 0
    assert sequence_lengths(band_ids, 3).tolist() == [3, 3, 3, 6, 99]
    band_ids[1, 40] = 2  # a real frame after padding still counts
    assert sequence_lengths(band_ids, 3)[1] == 3 * 15


def test_an_unreadable_model_says_cannot_read_not_an_onnx_runtime_error(tiny_model, monkeypatch):
    import builtins
    import errno
    import os

    from convention_rt.session import load_card

    model = tiny_model[0]
    real_open = builtins.open

    def open_unreadable(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if os.fspath(file) == str(model):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(model))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_unreadable)
    monkeypatch.setattr(session_module.ort, "InferenceSession", lambda path, *a, **k: (_ for _ in ()).throw(
        RuntimeError("[ONNXRuntimeError] : 1 : FAIL : system error number 13")))  # what ONNX Runtime says
    for call in (lambda: load_card(model), lambda: ModelSession(model, device="cpu", verify_checksum=False)):
        with pytest.raises(ModelError, match=rf"^{model}: cannot read: Permission denied$"):
            call()
