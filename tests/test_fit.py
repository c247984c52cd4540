"""The training protocol on the shipped sample catalog: folds, resume, metrics, export."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from train import fit as fit_module  # noqa: E402
from train.fit import FitConfig, fit  # noqa: E402

from convention_rt.data import sample_catalog_path  # noqa: E402
from convention_rt.session import ModelSession  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.slow]


def config(run_dir, **changes) -> FitConfig:
    values = dict(catalog=str(sample_catalog_path()), run_dir=str(run_dir), model="compact", folds=2,
                  members=1, epochs=2, batch_size=8, threads=1)
    values.update(changes)
    return FitConfig(**values)


def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    reference = fit(config(tmp_path / "straight"))

    calls = {"n": 0}
    original = fit_module._save_state

    def stop_after_three(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "_save_state", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        fit(config(tmp_path / "resumed"))
    monkeypatch.setattr(fit_module, "_save_state", original)
    resumed = fit(config(tmp_path / "resumed"))

    assert resumed["per_fold"] == reference["per_fold"]
    assert json.loads((tmp_path / "resumed" / "folds.json").read_text()) == \
        json.loads((tmp_path / "straight" / "folds.json").read_text())
    for name in ("metrics.json", "confusion.png", "fold0.json", "fold1.json", "config.json"):
        assert (tmp_path / "resumed" / name).exists()
    summary = resumed["cross_validation"]
    assert 0.0 <= summary["accuracy"]["mean"] <= 1.0 and set(summary["recall"]) == {
        "AGN", "SNIa", "SNOther", "Variable"}


def test_run_dir_with_another_configuration_is_refused(tmp_path):
    fit(config(tmp_path / "run", epochs=1))
    with pytest.raises(ValueError, match="another configuration"):
        fit(config(tmp_path / "run", epochs=3))


def test_fit_exports_a_model_the_runtime_loads(tmp_path, monkeypatch):
    exports = []
    original = fit_module._export

    def recording_export(*args, **kwargs):
        exports.append(len(args[7]))  # folds evaluated when exporting
        original(*args, **kwargs)

    monkeypatch.setattr(fit_module, "_export", recording_export)
    run = config(tmp_path / "run", epochs=1, task="3class", export_out=str(tmp_path / "export"))
    metrics = fit(run)
    # the fold-0 ensemble is exported as soon as fold 0 is done, then again with each fold's metrics
    assert exports == [1, 2]
    session = ModelSession(tmp_path / "export" / "model.onnx", device="cpu")
    assert session.card.classes == ("AGN", "SN", "Variable")
    assert session.card.metrics["cross_validation"]["macro_f1"] == metrics["cross_validation"]["macro_f1"]
    assert session.card.metrics["cross_validation"]["folds"] == session.card.metrics["folds_planned"] == 2
    fit(run)  # a finished run is not exported again
    assert exports == [1, 2]
    (tmp_path / "run" / "export.json").unlink()  # what is in the folder is not known to be this run's
    fit(run)
    assert exports == [1, 2, 1, 2]
    assert session.card.provenance["command"] == ""
    assert session.card.provenance["config"]["task"] == "3class"
    assert session.card.provenance["training_data"]["CRTFMT"] == "CONVENTION-RT CATALOG"  # the data's provenance
    from train.checkpoint import Checkpoint

    assert Checkpoint.load(tmp_path / "run" / "ensemble.ckpt").card().classes == ("AGN", "SN", "Variable")


def test_command_line_reads_yaml_and_flags(tmp_path):
    yaml_path = tmp_path / "fit.yaml"
    yaml_path.write_text(f"catalog: {sample_catalog_path()}\nfolds: 2\nmembers: 1\nepochs: 1\nbatch_size: 8\n")
    parsed, command = fit_module._parse(["--config", str(yaml_path), "--run-dir", str(tmp_path / "r"),
                                         "--epochs", "3"])
    assert parsed.epochs == 3 and parsed.folds == 2 and parsed.run_dir == str(tmp_path / "r")
    assert command.startswith("python -m train.fit --config")
    with pytest.raises(ValueError, match="model must be one of"):
        FitConfig(catalog="x", run_dir="y", model="resnet")


def test_bf16_training_runs_and_evaluates_in_fp32(tmp_path):
    metrics = fit(config(tmp_path / "bf16", epochs=1, precision="bf16"))
    assert metrics["cross_validation"]["folds"] == 2
    with pytest.raises(ValueError, match="precision must be"):
        config(tmp_path / "x", precision="fp8")


def test_ablations_train_through_the_same_protocol(tmp_path):
    stacked = fit(config(tmp_path / "stacked", epochs=1, band_input="stacked"))
    assert stacked["cross_validation"]["folds"] == 2
    weights = torch.load(tmp_path / "stacked" / "state" / "fold0_member0.best.pt", weights_only=True)
    assert "band_embedding.weight" not in weights
    assert weights["stem.layers.0.conv.weight"].shape[1] == 6  # one channel per band of the catalog (ugrizy)
    with pytest.raises(ValueError, match="apply to ConvEntion models"):
        config(tmp_path / "x", model="cnn_gru", positional_encoding="none")
    with pytest.raises(ValueError, match="band_input must be"):
        config(tmp_path / "x", band_input="mixed")


def test_run_saved_before_a_field_existed_resumes(tmp_path):
    run = config(tmp_path / "run", epochs=1)
    fit(run)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    del saved["band_input"]  # as written by an older version
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    assert fit(run)["cross_validation"]["folds"] == 2
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="another configuration"):  # the missing field meant the default
        fit(config(tmp_path / "run", epochs=1, band_input="stacked"))


def test_fold_limit_trains_the_leading_folds_of_the_same_split(tmp_path):
    full = fit(config(tmp_path / "full", folds=3, epochs=1))
    limited = fit(config(tmp_path / "limited", folds=3, fold_limit=1, epochs=1))
    assert limited["cross_validation"]["folds"] == 1
    assert limited["per_fold"][0] == full["per_fold"][0]
    assert (tmp_path / "limited" / "folds.json").read_text() == (tmp_path / "full" / "folds.json").read_text()
    predictions = json.loads((tmp_path / "limited" / "fold0.predictions.json").read_text())
    assert len(predictions["object_id"]) == len(predictions["label"]) == limited["per_fold"][0]["n"]
    assert all(abs(sum(row) - 1.0) < 1e-4 for row in predictions["probabilities"])
    assert not (tmp_path / "limited" / "fold1.json").exists()
    with pytest.raises(ValueError, match="fold_limit must be"):
        config(tmp_path / "x", folds=3, fold_limit=4)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "folds.json").write_text((tmp_path / "full" / "folds.json").read_text())
    with pytest.raises(ValueError, match="holds 3 folds"):
        fit(config(tmp_path / "other", folds=2, epochs=1))
