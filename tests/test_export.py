"""Export of checkpoints to ONNX + card, and the runtime session on the result."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from helpers import make_checkpoint, tiny_config  # noqa: E402
from train import export as export_module  # noqa: E402
from train.checkpoint import Checkpoint  # noqa: E402
from train.model import ConvEntion, build_model  # noqa: E402

from convention_rt.errors import ModelError  # noqa: E402
from convention_rt.session import CARD_METADATA_KEY, ModelSession  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny checkpoint exported once for the module: export, checks and the timing of both graphs take
    about 30 s, so every test that uses it is marked slow."""
    checkpoint = make_checkpoint(tiny_config(positional_encoding="time"))
    out = tmp_path_factory.mktemp("exports") / "tiny" / "0.1.0"
    return checkpoint, export_module.export_checkpoint(checkpoint, out)


@pytest.mark.slow
def test_export_writes_one_checked_file_and_a_card(exported):
    checkpoint, result = exported
    assert sorted(p.name for p in result.model_path.parent.iterdir()) == ["card.json", "model.onnx"]
    proto = onnx.load(str(result.model_path))
    onnx.checker.check_model(proto, full_check=True)
    embedded = {p.key: p.value for p in proto.metadata_props}[CARD_METADATA_KEY]
    card = json.loads(result.card_path.read_text())
    assert card["sha256"] and json.loads(embedded)["sha256"] == ""
    assert card["members"] == 2 and card["bands"] == ["g", "r", "i"]
    assert card["provenance"]["export"]["graph"] in ("conv2d_stem", "conv3d_stem")
    assert result.max_abs_difference <= 1e-4
    assert set(result.objects_per_s) == {"conv3d_stem", "conv2d_stem"}


@pytest.mark.slow
def test_runtime_session_reproduces_pytorch(exported):
    checkpoint, result = exported
    session = ModelSession(result.model_path, device="cpu")
    assert session.card.time_encoding and session.card.members == 2
    batch = export_module.example_batch(session.card, 5, seed=11)
    probabilities = session.run(batch["stamps"], batch["band_ids"], batch["times"])
    members = checkpoint.build_members()
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(*(torch.from_numpy(batch[k]) for k in
                                                  ("stamps", "band_ids", "times"))), -1) for m in members], 1)
    np.testing.assert_allclose(probabilities, expected.numpy(), atol=1e-4)


@pytest.mark.slow
def test_an_asinh_stretched_model_exports_and_the_runtime_reproduces_it(tmp_path):
    checkpoint = make_checkpoint(tiny_config(input_stretch="asinh"), members=1)
    session = ModelSession(export_module.export_checkpoint(checkpoint, tmp_path / "asinh").model_path, device="cpu")
    batch = export_module.example_batch(session.card, 3, seed=5)
    stamps = batch["stamps"] * np.float32(300.0)  # well into asinh's logarithmic range
    (member,) = checkpoint.build_members()
    with torch.no_grad():
        expected = torch.softmax(member(torch.from_numpy(stamps), torch.from_numpy(batch["band_ids"]),
                                        torch.from_numpy(batch["times"])), -1)
    np.testing.assert_allclose(session.run(stamps, batch["band_ids"], batch["times"])[:, 0], expected.numpy(),
                               atol=1e-4)


@pytest.mark.slow
def test_convention_graph_takes_any_whole_number_of_windows(exported):
    """The sequence axis is dynamic: an object cut to its windows gives its padded probabilities."""
    import onnxruntime as ort

    _, result = exported
    proto = onnx.load(str(result.model_path))
    for tensor in proto.graph.input:
        sequence_axis = tensor.type.tensor_type.shape.dim[1]
        assert sequence_axis.dim_param and not sequence_axis.dim_value
    session = ort.InferenceSession(str(result.model_path), providers=["CPUExecutionProvider"])
    card = result.card
    batch = export_module.example_batch(card, 6, seed=5)
    (padded,) = session.run(None, batch)
    window = card.stem_window
    for row in range(6):
        real = int(np.count_nonzero(batch["band_ids"][row]))
        length = max(window, -(-real // window) * window)
        assert length <= card.seq_len
        (cut,) = session.run(None, {k: v[row:row + 1, :length] for k, v in batch.items()})
        np.testing.assert_allclose(cut, padded[row:row + 1], atol=1e-5)
    with pytest.raises(Exception):  # not a whole number of windows
        session.run(None, {k: v[:1, :window + 1] for k, v in batch.items()})


@pytest.mark.slow
def test_a_graph_that_differs_on_cut_sequences_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "_length_agreement", lambda *args: 1.0)
    out = tmp_path / "x" / "1"
    with pytest.raises(ModelError, match="differ"):
        export_module.export_checkpoint(make_checkpoint(tiny_config()), out)
    assert not out.exists()


def test_the_window_enters_the_digest_and_the_card_only_when_it_is_not_the_default(monkeypatch):
    from train import checkpoint as checkpoint_module

    latest = make_checkpoint(tiny_config())
    event = dataclasses.replace(latest, config=dataclasses.replace(latest.config, window="event"))
    assert event.card().window == "event" and latest.card().window == "latest"
    assert event.model_digest() != latest.model_digest()
    before = latest.model_digest()
    described = checkpoint_module.config_to_dict  # a checkpoint from before the field: no "window" key
    monkeypatch.setattr(checkpoint_module, "config_to_dict",
                        lambda config: {k: v for k, v in described(config).items() if k != "window"})
    assert latest.model_digest() == before


@pytest.mark.slow
def test_a_calibrated_checkpoint_exports_its_tempered_probabilities(tmp_path):
    checkpoint = dataclasses.replace(make_checkpoint(tiny_config()), temperature=2.5)
    result = export_module.export_checkpoint(checkpoint, tmp_path / "t" / "1")
    session = ModelSession(result.model_path, device="cpu")
    batch = export_module.example_batch(session.card, 4, seed=2)
    members = checkpoint.build_members()
    with torch.no_grad():
        logits = [m(*(torch.from_numpy(batch[k]) for k in ("stamps", "band_ids", "times"))) for m in members]
    expected = torch.stack([torch.softmax(z / 2.5, -1) for z in logits], 1).numpy()
    np.testing.assert_allclose(session.run(batch["stamps"], batch["band_ids"], batch["times"]), expected, atol=1e-4)
    assert checkpoint.model_digest() != make_checkpoint(tiny_config()).model_digest()
    saved = tmp_path / "c.ckpt"
    checkpoint.save(saved)
    assert Checkpoint.load(saved).temperature == 2.5
    with pytest.raises(ValueError, match="temperature must be a positive"):
        dataclasses.replace(checkpoint, temperature=0.0)


@pytest.mark.slow
def test_disagreement_refuses_the_export_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "AGREEMENT_ATOL", -1.0)
    out = tmp_path / "x" / "1"
    with pytest.raises(ModelError, match="differ by .* export refused"):
        export_module.export_checkpoint(make_checkpoint(tiny_config(), members=1), out)
    assert not out.exists() and list((tmp_path / "x").iterdir()) == []


@pytest.mark.slow
def test_existing_export_is_not_overwritten_without_asking(exported):
    checkpoint, result = exported
    with pytest.raises(ModelError, match="holds an export already"):
        export_module.export_checkpoint(checkpoint, result.model_path.parent)


@pytest.mark.slow
def test_destination_holding_other_files_is_refused_and_left_alone(tmp_path, capsys):
    checkpoint = make_checkpoint(tiny_config(), members=1)
    shipped = tmp_path / "exports" / "shipped" / "1.0.0"
    shipped.mkdir(parents=True)
    (shipped / "model.onnx").write_bytes(b"not ours")
    for out in (tmp_path / "exports", tmp_path / "exports" / "shipped"):
        with pytest.raises(ModelError, match="holds shipped|holds 1.0.0"):
            export_module.export_checkpoint(checkpoint, out, overwrite=True)
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ModelError, match="is a file"):
        export_module.export_checkpoint(checkpoint, tmp_path / "notes.txt", overwrite=True)
    assert (shipped / "model.onnx").read_bytes() == b"not ours"
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    checkpoint.save(tmp_path / "m.ckpt")
    assert export_module.main([str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "exports"), "--overwrite"]) == 3
    assert capsys.readouterr().err.count("\n") == 1
    export_module.export_checkpoint(checkpoint, shipped, overwrite=True)  # an export only: replaced
    assert sorted(p.name for p in shipped.iterdir()) == ["card.json", "model.onnx"]
    assert ModelSession(shipped / "model.onnx", device="cpu").card.name == "tiny"
    assert sorted(p.name for p in shipped.parent.iterdir()) == ["1.0.0"]  # no scratch folder left


@pytest.mark.slow
def test_checkpoint_round_trip_and_cli(tmp_path, capsys):
    checkpoint = make_checkpoint(tiny_config(), members=1)
    path = tmp_path / "model.ckpt"
    checkpoint.save(path)
    loaded = Checkpoint.load(path)
    assert loaded.config == checkpoint.config and loaded.bands == checkpoint.bands
    for key, value in checkpoint.members[0].items():
        torch.testing.assert_close(loaded.members[0][key], value)
    assert export_module.main([str(path), "--out", str(tmp_path / "out")]) == 0
    assert json.loads(capsys.readouterr().out)["graph"] in ("conv2d_stem", "conv3d_stem")
    assert export_module.main([str(path), "--out", str(tmp_path / "out")]) == 3
    assert "holds an export already" in capsys.readouterr().err


@pytest.mark.slow
def test_baseline_checkpoint_exports_too(tmp_path):
    from train.model import get_baseline
    from dataclasses import replace

    config = replace(get_baseline("lc_lstm"), seq_len=6, stamp_size=24, n_band_ids=4, hidden_size=8)
    result = export_module.export_checkpoint(make_checkpoint(config, members=1), tmp_path / "lc")
    assert result.graph == "as_traced"  # no stem to convert
    assert ModelSession(result.model_path, device="cpu").card.preset == "tiny"
    assert isinstance(build_model(tiny_config()), ConvEntion)


def test_checkpoint_metadata_is_stored_as_plain_types(tmp_path):
    """A version object in the provenance must not make the file unreadable with weights_only=True."""
    checkpoint = make_checkpoint(tiny_config())
    checkpoint = dataclasses.replace(checkpoint, provenance={"torch": torch.__version__, "path": tmp_path})
    checkpoint.save(tmp_path / "run.ckpt")
    loaded = Checkpoint.load(tmp_path / "run.ckpt")
    assert loaded.provenance == {"torch": str(torch.__version__), "path": str(tmp_path)}
    assert type(loaded.provenance["torch"]) is str


@pytest.mark.slow
def test_the_same_model_again_keeps_its_graph_and_rewrites_only_the_card(exported, tmp_path, monkeypatch):
    import shutil

    class Traced(Exception):
        """Raised where the export would trace the model again."""

    def traced(*args, **kwargs):
        raise Traced

    checkpoint, result = exported
    out = tmp_path / "tiny" / "0.1.0"
    shutil.copytree(result.model_path.parent, out)
    before = onnx.load(str(out / "model.onnx"))
    monkeypatch.setattr(export_module, "_to_onnx", traced)
    later = dataclasses.replace(checkpoint, metrics={"macro_f1": 0.75}, provenance={"data": "more folds"})
    refreshed = export_module.export_checkpoint(later, out, overwrite=True, reuse_graph=True)
    assert refreshed.graph_reused and refreshed.graph == result.graph
    assert refreshed.objects_per_s == {k: round(v, 1) for k, v in result.objects_per_s.items()}  # as carded
    after = onnx.load(str(out / "model.onnx"))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    embedded = json.loads({p.key: p.value for p in after.metadata_props}[CARD_METADATA_KEY])
    assert embedded["metrics"] == {"macro_f1": 0.75} and embedded["provenance"] == {"data": "more folds"}
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"] == {"macro_f1": 0.75} and card["provenance"]["data"] == "more folds"
    assert card["provenance"]["export"] == result.card.provenance["export"]
    assert sorted(p.name for p in out.iterdir()) == ["card.json", "model.onnx"]
    assert sorted(p.name for p in tmp_path.joinpath("tiny").iterdir()) == ["0.1.0"]  # no scratch left
    session = ModelSession(out / "model.onnx", device="cpu")  # the checksum is the new file's
    assert session.card.metrics == {"macro_f1": 0.75}

    # other weights, a damaged file, or reuse not asked for: traced again
    other = make_checkpoint(tiny_config(positional_encoding="time"))
    other.members[1] = {k: v + 0.01 if v.is_floating_point() else v for k, v in other.members[1].items()}
    assert other.model_digest() != checkpoint.model_digest() == later.model_digest()
    with pytest.raises(Traced):
        export_module.export_checkpoint(other, out, overwrite=True, reuse_graph=True)
    with pytest.raises(Traced):
        export_module.export_checkpoint(later, out, overwrite=True)
    with monkeypatch.context() as patch:  # other model or export code, or other torch / onnx
        patch.setattr(export_module, "exporter_digest", lambda: "0" * 64)
        with pytest.raises(Traced):
            export_module.export_checkpoint(later, out, overwrite=True, reuse_graph=True)
    with open(out / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(Traced):
        export_module.export_checkpoint(later, out, overwrite=True, reuse_graph=True)


@pytest.mark.slow
def test_evaluations_of_the_run_calibrate_the_export_and_reach_its_card(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = make_checkpoint(tiny_config())
    with pytest.raises(ValueError, match="calibration.json: no calibration"):
        export_module.with_evaluations(checkpoint, run)
    table = {"edges": [0.0, 0.5, 1.0], "confidence": [0.4, 0.8], "accuracy": [0.3, 0.7], "count": [5, 7]}
    folds = [{"fitted_on": 40, "scored": 60, "nll": 0.9, "ece": 0.12,
              "inner_validation": {"temperature": 0.6, "nll": 0.95, "ece": 0.15},
              "other_folds": {"temperature": 1.7, "nll": 0.8, "ece": 0.04}},
             {"fitted_on": 41, "scored": 61, "nll": 1.1, "ece": 0.10,
              "inner_validation": {"temperature": 0.7, "nll": 1.2, "ece": 0.13},
              "other_folds": {"temperature": 1.3, "nll": 1.0, "ece": 0.06}}]
    calibration = {"bins": 2, "per_fold": folds, "chosen": "other_folds", "reliability": table,
                   "reliability_calibrated": table}
    (run / "calibration.json").write_text(json.dumps({**calibration, "chosen": "none"}))
    assert export_module.with_evaluations(checkpoint, run).temperature == 1.0  # nothing won: T = 1 shipped
    (run / "calibration.json").write_text(json.dumps(calibration))
    (run / "early.json").write_text(json.dumps({"frames_seen": [1, 99], "per_fold": [
        {"accuracy": [0.3, 0.8], "macro_f1": [0.2, 0.7]}, {"accuracy": [0.5, 0.8], "macro_f1": [0.4, 0.9]}]}))
    calibrated = export_module.with_evaluations(checkpoint, run)
    assert calibrated.temperature == 1.7 and checkpoint.temperature == 1.0
    card = calibrated.card()
    assert card.metrics["calibration"]["other_folds"]["ece"]["mean"] == pytest.approx(0.05)
    assert card.metrics["calibration"]["inner_validation"]["temperature"] == [0.6, 0.7]
    assert card.metrics["calibration"]["reliability"] == table
    assert card.metrics["early"]["macro_f1"]["mean"] == pytest.approx([0.3, 0.8])
    assert card.metrics["early"]["frames_seen"] == [1, 99]
    path = tmp_path / "c.ckpt"
    checkpoint.save(path)
    out = tmp_path / "exports" / "tiny" / "0.2.0"
    assert export_module.main([str(path), "--out", str(out), "--version", "0.2.0", "--evaluations", str(run)]) == 0
    written = json.loads((out / "card.json").read_text())
    assert written["version"] == "0.2.0" and written["metrics"]["calibration"]["temperature"] == 1.7


@pytest.mark.slow
def test_runtime_session_runs_each_object_on_the_windows_it_has(exported, monkeypatch):
    _, result = exported
    session = ModelSession(result.model_path, device="cpu")
    assert session.variable_length
    batch = export_module.example_batch(session.card, 12, seed=21)
    shapes = []
    run_feeds = session._run_feeds

    def recording(feeds):
        shapes.append(feeds["stamps"].shape)
        return run_feeds(feeds)

    monkeypatch.setattr(session, "_run_feeds", recording)
    cut = session.run(batch["stamps"], batch["band_ids"], batch["times"])
    assert len(shapes) > 1 and sum(s[0] for s in shapes) == 12
    assert min(s[1] for s in shapes) < session.card.seq_len
    session.variable_length = False  # the same graph on the padded sequences
    padded = session.run(batch["stamps"], batch["band_ids"], batch["times"])
    np.testing.assert_allclose(cut, padded, atol=1e-5)
