"""Export of checkpoints to ONNX + card, and the runtime session on the result."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from test_model import randomise_norms, tiny_config  # noqa: E402
from train import export as export_module  # noqa: E402
from train.checkpoint import Checkpoint  # noqa: E402
from train.model import ConvEntion, build_model  # noqa: E402

from convention_rt.errors import ModelError  # noqa: E402
from convention_rt.session import CARD_METADATA_KEY, ModelSession  # noqa: E402

pytestmark = pytest.mark.torch


def make_checkpoint(config, members: int = 2) -> Checkpoint:
    torch.manual_seed(0)
    states = [randomise_norms(build_model(config), seed=k).state_dict() for k in range(members)]
    bands = ("g", "r", "i")[: config.n_band_ids - 1]
    return Checkpoint(name="tiny", version="0.1.0", preset="tiny", config=config, members=states,
                      bands=bands, normalisation={b: (10.0 * k, 2.0 + k) for k, b in enumerate(bands)},
                      metrics={"macro_f1": 0.5}, provenance={"data": "tests"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    checkpoint = make_checkpoint(tiny_config(positional_encoding="time"))
    out = tmp_path_factory.mktemp("exports") / "tiny" / "0.1.0"
    return checkpoint, export_module.export_checkpoint(checkpoint, out)


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


def test_disagreement_refuses_the_export_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "AGREEMENT_ATOL", -1.0)
    out = tmp_path / "x" / "1"
    with pytest.raises(ModelError, match="differ by .* export refused"):
        export_module.export_checkpoint(make_checkpoint(tiny_config(), members=1), out)
    assert not out.exists() and list((tmp_path / "x").iterdir()) == []


def test_existing_export_is_not_overwritten_without_asking(exported):
    checkpoint, result = exported
    with pytest.raises(ModelError, match="holds an export already"):
        export_module.export_checkpoint(checkpoint, result.model_path.parent)


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


def test_the_same_model_again_keeps_its_graph_and_rewrites_only_the_card(exported, tmp_path, monkeypatch):
    import shutil

    class Traced(Exception):
        """Raised where the export would trace the model again."""

    def traced(*args):
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
