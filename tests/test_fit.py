"""The training protocol on the shipped sample catalog: folds, resume, metrics, export."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from train.data.dataset import band_statistics  # noqa: E402
from train.distributed import SINGLE_PROCESS  # noqa: E402
from train.fit import FitConfig, fit  # noqa: E402
from train.fit import batches, command_line, evaluation, folds, member, protocol, provenance  # noqa: E402
from train.fit.resume import TRAINING_FIELDS  # noqa: E402

from convention_rt.data import sample_catalog_path  # noqa: E402
from convention_rt.errors import UsageError  # noqa: E402
from convention_rt.model_card import ModelCard  # noqa: E402
from convention_rt.session import ModelSession  # noqa: E402

pytestmark = pytest.mark.torch


def config(run_dir, **changes) -> FitConfig:
    values = dict(catalog=str(sample_catalog_path()), run_dir=str(run_dir), model="compact", folds=2,
                  members=1, epochs=2, batch_size=8, threads=1)
    values.update(changes)
    return FitConfig(**values)


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tmp_path, monkeypatch):
    reference = fit(config(tmp_path / "straight"))

    calls = {"n": 0}
    original = member._save_state

    def stop_after_three(*args, **kwargs):
        original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(member, "_save_state", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        fit(config(tmp_path / "resumed"))
    monkeypatch.setattr(member, "_save_state", original)
    # resumed with its frames mapped from a cache and smaller evaluation batches (ways of running,
    # like threads): the same result
    resumed = fit(config(tmp_path / "resumed", frames_cache=str(tmp_path / "cache"), eval_batch_size=5))

    assert resumed["per_fold"] == reference["per_fold"]
    assert len(list((tmp_path / "cache").glob("*.f32"))) == 1
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


_original_train_member = protocol.train_member


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.slow
def test_fit_exports_a_model_the_runtime_loads(tmp_path, monkeypatch):
    exports = []
    original = protocol.export_ensemble

    def recording_export(*args, **kwargs):
        exports.append(len(args[8]))  # folds evaluated when exporting
        original(*args, **kwargs)

    monkeypatch.setattr(protocol, "export_ensemble", recording_export)
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
    assert not list((tmp_path / "run" / "state").glob("*member0.pt"))  # finished members keep no resume state
    for name in ("fold1_member0.best.json", "fold1_member0.best.pt"):
        (tmp_path / "run" / "state" / name).unlink()  # fold 1 to be trained again: its scores leave the card
    monkeypatch.setattr(protocol, "train_member", _interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(run)
    monkeypatch.setattr(protocol, "train_member", _original_train_member)
    assert exports == [1, 2, 1, 2, 1]
    assert ModelSession(tmp_path / "export" / "model.onnx", device="cpu").card.metrics["cross_validation"][
        "folds"] == 1
    fit(run)
    assert exports == [1, 2, 1, 2, 1, 2]
    record_file = tmp_path / "run" / "export.json"
    record = json.loads(record_file.read_text())
    record["fold_digests"][1] = "0" * 64  # the card shows other fold-1 scores (fold 1 was trained again)
    record_file.write_text(json.dumps(record))
    fit(run)
    assert exports == [1, 2, 1, 2, 1, 2, 1, 2]  # its scores changed: the card is rewritten
    assert session.card.provenance["command"] == ""
    assert session.card.provenance["config"]["task"] == "3class"
    assert session.card.provenance["training_data"]["CRTFMT"] == "CONVENTION-RT CATALOG"  # the data's provenance
    from train.checkpoint import Checkpoint, config_from_dict

    assert Checkpoint.load(tmp_path / "run" / "ensemble.ckpt").card().classes == ("AGN", "SN", "Variable")
    # the architecture itself, not only the preset's name (presets may change between versions)
    assert config_from_dict(session.card.provenance["architecture"]) == Checkpoint.load(
        tmp_path / "run" / "ensemble.ckpt").config
    assert json.loads((tmp_path / "run" / "architecture.json").read_text()) == \
        session.card.provenance["architecture"]
    assert session.card.provenance["source_revision"] == provenance.SOURCE_REVISION


def test_export_destination_is_checked_before_training(tmp_path):
    from convention_rt.errors import ModelError

    (tmp_path / "exports" / "other").mkdir(parents=True)
    with pytest.raises(ModelError, match="holds other"):
        fit(config(tmp_path / "run", epochs=1, export_out=str(tmp_path / "exports")))
    assert not (tmp_path / "run").exists()


def test_command_line_reads_yaml_and_flags(tmp_path):
    yaml_path = tmp_path / "fit.yaml"
    yaml_path.write_text(f"catalog: {sample_catalog_path()}\nfolds: 2\nmembers: 1\nepochs: 1\nbatch_size: 8\n")
    parsed, command = command_line._parse(["--config", str(yaml_path), "--run-dir", str(tmp_path / "r"),
                                           "--epochs", "3"])
    assert parsed.epochs == 3 and parsed.folds == 2 and parsed.run_dir == str(tmp_path / "r")
    assert command.startswith("python -m train.fit --config")
    with pytest.raises(ValueError, match="model must be one of"):
        FitConfig(catalog="x", run_dir="y", model="resnet")


def test_bf16_training_runs_and_evaluates_in_fp32(tmp_path):
    metrics = fit(config(tmp_path / "bf16", epochs=1, precision="bf16"))
    assert metrics["cross_validation"]["folds"] == 2
    weights = torch.load(tmp_path / "bf16" / "state" / "fold0_member0.best.pt", weights_only=True)
    assert {v.dtype for v in weights.values() if v.is_floating_point()} == {torch.float32}  # autocast only
    with pytest.raises(ValueError, match="precision must be"):
        config(tmp_path / "x", precision="fp8")


@pytest.mark.slow
def test_precision_may_change_when_a_run_resumes_and_each_epoch_names_its_own(tmp_path, monkeypatch):
    run = dict(epochs=2, fold_limit=1, export_out=str(tmp_path / "export"))
    original = member._save_state

    def stop_after_the_first_epoch(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(member, "_save_state", stop_after_the_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        fit(config(tmp_path / "run", precision="bf16", **run))
    monkeypatch.setattr(member, "_save_state", original)
    state_file = tmp_path / "run" / "state" / "fold0_member0.pt"
    state = torch.load(state_file, weights_only=True)
    assert [epoch["precision"] for epoch in state["state"]["history"]] == ["bf16"]

    metrics = fit(config(tmp_path / "run", precision="fp32", **run))  # resumed in another precision: not refused
    record = json.loads((tmp_path / "run" / "state" / "fold0_member0.best.json").read_text())
    precisions = [epoch["precision"] for epoch in record["history"]]
    assert precisions[0] == "bf16" and set(precisions[1:]) == {"fp32"}
    units = provenance.CPU["matrix_units"]
    assert [(e["cpu"], e["matrix_units"]) for e in record["history"]] == [
        (provenance.CPU["cpu"], units)] * len(precisions)
    assert sorted(metrics["seconds_per_epoch"]) == [f"bf16 on {units}", f"fp32 on {units}"]
    assert metrics["seconds_per_epoch"][f"bf16 on {units}"] == record["history"][0]["seconds"]
    card = ModelSession(tmp_path / "export" / "model.onnx", device="cpu").card
    assert card.provenance["member_precisions"] == [["bf16", "fp32"]]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "fp32"

    record_file = tmp_path / "run" / "state" / "fold0_member0.best.json"
    record_file.write_text(json.dumps({**record, "history": [
        {k: v for k, v in epoch.items() if k != "precision"} for epoch in record["history"]]}))
    before = _files(tmp_path / "run")
    with pytest.raises(ValueError, match=r"fold0_member0\.best\.json: an epoch without its precision"):
        fit(config(tmp_path / "run", precision="bf16", **run))  # refused before anything is written
    assert _files(tmp_path / "run") == before


@pytest.mark.slow
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
    with pytest.raises(ValueError, match="attention must be"):
        config(tmp_path / "x", attention="additive")
    with pytest.raises(ValueError, match="apply to ConvEntion models"):
        config(tmp_path / "x", model="cnn_gru", attention="dot")
    with pytest.raises(ValueError, match="prefix_truncation must be"):
        config(tmp_path / "x", prefix_truncation=1.5)
    with pytest.raises(ValueError, match="apply to ConvEntion models"):
        config(tmp_path / "x", model="cnn_gru", difference_channel=True)
    dot = fit(config(tmp_path / "dot", epochs=1, attention="dot", prefix_truncation=0.5, difference_channel=True))
    assert dot["cross_validation"]["folds"] == 2
    weights = torch.load(tmp_path / "dot" / "state" / "fold0_member0.best.pt", weights_only=True)
    assert "blocks.0.attention.query.weight" in weights and "blocks.0.attention.logits.weight" not in weights
    assert weights["stem.layers.0.conv.weight"].shape[1] == 3  # stamp, difference, band plane


def test_prefix_truncation_cuts_training_draws_only(tmp_path):
    prepared = protocol.prepare(config(tmp_path / "run"))
    data, card = prepared.data, prepared.card
    indices = np.arange(len(data))
    full = batches.model_inputs(data, indices, card, rng=np.random.default_rng(0))
    cut = batches.model_inputs(data, indices, card, rng=np.random.default_rng(0), prefix_truncation=1.0)
    frames = lambda inputs: (inputs[1] != 0).sum(dim=1)  # noqa: E731
    assert (frames(cut) <= frames(full)).all() and (frames(cut) < frames(full)).any()
    inference = batches.model_inputs(data, indices, card, prefix_truncation=1.0)  # no rng: inference windows
    torch.testing.assert_close(frames(inference), frames(batches.model_inputs(data, indices, card)))


def test_an_event_window_run_names_it_in_its_card_and_trains_on_jittered_event_windows(tmp_path):
    from convention_rt.transform import to_inputs
    from train.checkpoint import Checkpoint

    prepared = protocol.prepare(config(tmp_path / "run", window="event"))
    assert prepared.card.window == prepared.model_config.window == "event"
    assert protocol.prepare(config(tmp_path / "other")).card.window == "latest"
    checkpoint = Checkpoint(name="x", version="1", preset="compact", config=prepared.model_config, members=[{}],
                            bands=prepared.bands, normalisation={b: (s.mean, s.std) for b, s in prepared.stats.items()})
    assert checkpoint.card().window == "event"  # what an export writes
    data = prepared.data
    card = dataclasses.replace(prepared.card, seq_len=6)  # the sample's objects are longer than 6 frames
    indices = np.arange(len(data))
    chunk = data.chunk(indices)
    assert (np.diff(chunk.offsets) > 6).all()
    # inference: the card's window
    expected = to_inputs(chunk, card, mode="event")
    np.testing.assert_array_equal(batches.model_inputs(data, indices, card)[0].numpy(), expected.sequences.stamps)
    # training: event windows of the kept frames, moved by up to event_jitter(seq_len) frames
    jitter = batches.event_jitter(card.seq_len)
    seeds = np.random.default_rng(5).integers(0, 2**63, size=len(indices), dtype=np.uint64)
    drawn = to_inputs(chunk, card, mode="event", seeds=seeds, drop_prob=0.1, jitter=jitter)
    np.testing.assert_array_equal(
        batches.model_inputs(data, indices, card, rng=np.random.default_rng(5), frame_drop=0.1)[0].numpy(),
        drawn.sequences.stamps)
    moved = set()
    for seed in range(8):
        undropped = to_inputs(chunk, card, mode="event", seeds=seeds + np.uint64(seed), jitter=jitter).sequences
        for i in range(len(indices)):
            mjd = np.sort(chunk.mjd[chunk.offsets[i]:chunk.offsets[i + 1]])
            start = int(np.searchsorted(mjd, undropped.mjd[i, 0]))
            np.testing.assert_array_equal(undropped.mjd[i], mjd[start:start + 6])  # a run of consecutive frames
            shift = start - int(np.searchsorted(mjd, expected.sequences.mjd[i, 0]))
            assert abs(shift) <= jitter
            moved.add(shift)
    assert len(moved) > 1


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


@pytest.mark.slow
def test_folds_trained_by_separate_passes_gather_into_the_run_of_one_pass(tmp_path, monkeypatch):
    one_pass = fit(config(tmp_path / "one", folds=3, epochs=1, export_out=str(tmp_path / "one-export")))
    split = tmp_path / "split"
    later = fit(config(split, folds=3, epochs=1, only_folds="2,1", export_out=str(tmp_path / "split-export")))
    assert later["folds"] == [1, 2] and later["per_fold"] == one_pass["per_fold"][1:]
    assert not (split / "metrics.json").exists() and not (tmp_path / "split-export").exists()
    assert not (split / "fold0.json").exists()
    fit(config(split, folds=3, epochs=1, only_folds="0"))

    def no_training(*args, **kwargs):
        raise AssertionError("the gathering pass trained a member")

    monkeypatch.setattr(protocol, "train_member", no_training)
    gathered = fit(config(split, folds=3, epochs=1, export_out=str(tmp_path / "split-export")))
    assert gathered["per_fold"] == one_pass["per_fold"]
    assert gathered["cross_validation"] == one_pass["cross_validation"]
    onnx = pytest.importorskip("onnx")
    weights = [{t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path / "model.onnx")).graph.initializer}
               for path in (tmp_path / "one-export", tmp_path / "split-export")]
    assert weights[0].keys() == weights[1].keys()
    assert all(np.array_equal(weights[0][name], weights[1][name]) for name in weights[0])


@pytest.mark.parametrize("only_folds", ["3", "-1", "1,x", ""])
def test_only_folds_outside_the_run_are_refused(tmp_path, only_folds):
    with pytest.raises(ValueError, match="only_folds must"):
        config(tmp_path / "run", folds=3, only_folds=only_folds)


@pytest.mark.slow
def test_folds_published_on_another_machine_are_restored_not_trained_again(tmp_path, monkeypatch):
    records = tmp_path / "records"
    first = fit(config(tmp_path / "first", folds=3, epochs=1, early=True, records_dir=str(records)))

    def no_training(*args, **kwargs):
        raise AssertionError("a published fold was trained again")

    monkeypatch.setattr(protocol, "train_member", no_training)
    fresh = tmp_path / "fresh"  # another machine: the records, not the run directory
    again = fit(config(fresh, folds=3, epochs=1, early=True, records_dir=str(records)))
    assert again["per_fold"] == first["per_fold"]
    assert again["cross_validation"] == first["cross_validation"]
    assert again["seconds_per_epoch"] == first["seconds_per_epoch"]
    for name in ("fold0.json", "fold1.predictions.json", "fold2.early.json", "fold2.calibration.json", "early.json",
                 "metrics.json"):
        assert (fresh / name).is_file()
    assert not list((fresh / "state").glob("*.pt"))
    with pytest.raises(ValueError, match="export needs their weights"):
        fit(config(tmp_path / "exporting", folds=3, epochs=1, early=True, records_dir=str(records),
                   export_out=str(tmp_path / "export")))
    assert not (tmp_path / "exporting").exists()


def test_records_of_another_computation_are_refused_before_anything_is_written(tmp_path):
    records = tmp_path / "records"
    fit(config(tmp_path / "first", folds=2, epochs=1, records_dir=str(records)))
    with pytest.raises(ValueError, match="another configuration; use another --records-dir"):
        fit(config(tmp_path / "other", folds=2, epochs=1, learning_rate=1e-2, records_dir=str(records)))
    architecture = json.loads((records / "architecture.json").read_text())
    (records / "architecture.json").write_text(json.dumps({**architecture, "head_width": 7}))  # the preset changed
    with pytest.raises(ValueError, match="another architecture.*records folder"):
        fit(config(tmp_path / "wider", folds=2, epochs=1, records_dir=str(records)))
    (records / "architecture.json").write_text(json.dumps(architecture))
    (records / "folds.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(ValueError, match="other folds"):
        fit(config(tmp_path / "folds", folds=2, epochs=1, records_dir=str(records)))
    assert not any((tmp_path / name).exists() for name in ("other", "wider", "folds"))


def test_an_architecture_recorded_before_a_field_existed_means_its_default(tmp_path):
    run = config(tmp_path / "run", epochs=1)
    fit(run)
    record = tmp_path / "run" / "architecture.json"
    saved = json.loads(record.read_text())
    del saved["lightcurve_summary"], saved["scene_summary"]  # as written by an older version
    record.write_text(json.dumps(saved))
    assert fit(run)["cross_validation"]["folds"] == 2
    record.write_text(json.dumps({**saved, "scene_summary": 4}))  # a field recorded: compared
    with pytest.raises(ValueError, match="another architecture"):
        fit(run)


@pytest.mark.slow
def test_members_of_a_run_of_the_same_training_are_reused_not_trained_again(tmp_path, monkeypatch):
    smaller = fit(config(tmp_path / "one-member", folds=2, epochs=1))
    trained = []
    original = protocol.train_member

    def counted(*args, fold: int, member: int, **kwargs):
        trained.append((fold, member))
        return original(*args, fold=fold, member=member, **kwargs)

    monkeypatch.setattr(protocol, "train_member", counted)
    larger = fit(config(tmp_path / "two-members", folds=2, members=2, epochs=1,
                        reuse_from=str(tmp_path / "one-member")))
    assert trained == [(0, 1), (1, 1)]
    for fold in range(2):
        for suffix in (".best.pt", ".best.json"):
            name = f"state/fold{fold}_member0{suffix}"
            assert (tmp_path / "two-members" / name).read_bytes() == (tmp_path / "one-member" / name).read_bytes()
    probabilities = [json.loads((tmp_path / run / "fold0.predictions.json").read_text())["probabilities"]
                     for run in ("one-member", "two-members")]
    assert probabilities[0] != probabilities[1]  # two members' mean, not member 0's alone
    assert len(larger["per_fold"]) == len(smaller["per_fold"]) == 2
    with pytest.raises(ValueError, match=r"trained otherwise \(learning_rate differ\)"):
        fit(config(tmp_path / "other", folds=2, members=2, epochs=1, learning_rate=1e-2,
                   reuse_from=str(tmp_path / "one-member")))
    with pytest.raises(ValueError, match="not a run directory of train.fit"):
        fit(config(tmp_path / "nowhere", folds=2, epochs=1, reuse_from=str(tmp_path / "missing")))
    assert not (tmp_path / "other").exists() and not (tmp_path / "nowhere").exists()


def test_the_frames_cache_maps_what_the_catalog_reads(tmp_path, monkeypatch):
    import os

    from train.data import dataset

    catalog = tmp_path / "catalog.fits"
    catalog.write_bytes(sample_catalog_path().read_bytes())
    in_memory = dataset.load_labelled(catalog, "3class")
    cached = dataset.load_labelled(catalog, "3class", frames_cache=tmp_path / "cache")
    files = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert files == [".f32", ".lock", ".npz"]  # no temporaries left
    for name in ("object_ids", "labels", "typing", "frames", "band", "mjd", "offsets"):
        expected, actual = getattr(in_memory, name), getattr(cached, name)
        floats = actual.dtype.kind == "f"
        assert actual.dtype == expected.dtype and np.array_equal(actual, expected, equal_nan=floats), name
    assert (cached.classes, cached.bands) == (in_memory.classes, in_memory.bands)
    assert isinstance(cached.frames, np.memmap) and not cached.frames.flags.writeable
    assert np.array_equal(cached.chunk([3, 0, 3]).frames, in_memory.chunk([3, 0, 3]).frames, equal_nan=True)

    def unread(*args):
        raise AssertionError("the catalog was read again")

    with monkeypatch.context() as patch:
        patch.setattr(dataset, "_read_labelled", unread)
        again = dataset.load_labelled(catalog, "3class", frames_cache=tmp_path / "cache")
    assert np.array_equal(again.frames, in_memory.frames, equal_nan=True)
    frames_file = next((tmp_path / "cache").glob("*.f32"))
    for damage in ("truncate", "remove"):  # a damaged or missing copy is written again
        if damage == "truncate":
            os.truncate(frames_file, frames_file.stat().st_size - 4096)
        else:
            frames_file.unlink()
        repaired = dataset.load_labelled(catalog, "3class", frames_cache=tmp_path / "cache")
        assert np.array_equal(repaired.frames, in_memory.frames, equal_nan=True), damage
    limited = dataset.load_labelled(catalog, "3class", max_objects=5, frames_cache=tmp_path / "cache")
    assert len(limited) <= 5 and limited.offsets[-1] == limited.frames.shape[0]
    status = catalog.stat()
    os.utime(catalog, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # the catalog changed: a new copy
    dataset.load_labelled(catalog, "3class", frames_cache=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 3
    with pytest.raises(ValueError, match="catalog.fits: the frames cache must be a folder"):
        dataset.load_labelled(catalog, frames_cache=catalog)
    with pytest.raises(Exception, match="missing.fits"):  # the reader's own error, not the cache's
        dataset.load_labelled(tmp_path / "missing.fits", frames_cache=tmp_path / "cache")


def test_runs_starting_side_by_side_write_one_frames_cache(tmp_path, monkeypatch):
    import threading
    import time

    from train.data import dataset

    reads = []
    original = dataset._read_labelled

    def slow_read(*args, **kwargs):
        reads.append(1)
        time.sleep(0.5)  # the other start arrives while this one writes
        return original(*args, **kwargs)

    monkeypatch.setattr(dataset, "_read_labelled", slow_read)
    loaded = []
    starts = [threading.Thread(target=lambda: loaded.append(
        dataset.load_labelled(sample_catalog_path(), frames_cache=tmp_path / "cache"))) for _ in range(2)]
    for start in starts:
        start.start()
    for start in starts:
        start.join()
    assert len(reads) == 1 and len(loaded) == 2  # the second waited for the first's copy and mapped it
    assert np.array_equal(loaded[0].frames, loaded[1].frames, equal_nan=True)


def test_the_frames_cache_key_follows_its_version_not_the_source(tmp_path, monkeypatch):
    from train.data import dataset

    catalog = tmp_path / "catalog.fits"
    catalog.write_bytes(sample_catalog_path().read_bytes())
    key = dataset._cache_key(catalog, "4class", None, 32)
    assert dataset._cache_key(catalog, "4class", None, 32) == key
    read_bytes, read_text = Path.read_bytes, Path.read_text

    def edited_bytes(path):  # every source file of the reader and of this package, as if edited
        return read_bytes(path) + (b"\n# edited\n" if path.suffix == ".py" else b"")

    def edited_text(path, *args, **kwargs):
        return read_text(path, *args, **kwargs) + ("\n# edited\n" if path.suffix == ".py" else "")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", edited_bytes)
        patch.setattr(Path, "read_text", edited_text)
        assert Path(dataset.__file__).read_bytes().endswith(b"# edited\n")  # the edit is seen
        assert dataset._cache_key(catalog, "4class", None, 32) == key
    monkeypatch.setattr(dataset, "FRAMES_CACHE_VERSION", dataset.FRAMES_CACHE_VERSION + 1)
    assert dataset._cache_key(catalog, "4class", None, 32) != key
    monkeypatch.undo()
    assert dataset._cache_key(catalog, "3class", None, 32) != key  # the reading arguments still count
    dataset.load_labelled(catalog, "4class", frames_cache=tmp_path / "cache")
    monkeypatch.setattr(dataset, "FRAMES_CACHE_VERSION", dataset.FRAMES_CACHE_VERSION + 1)
    dataset.load_labelled(catalog, "4class", frames_cache=tmp_path / "cache")  # another version: another copy
    assert len(list((tmp_path / "cache").glob("*.f32"))) == 2


def test_head_units_active_counts_the_hidden_units_that_fire(tmp_path):
    from train.data.dataset import load_labelled
    from train.model import build_model

    run = config(tmp_path / "run")
    data = load_labelled(run.catalog, run.task)
    model_config = run.model_config(data.classes, len(data.bands) + 1)
    card = ModelCard(name="t", version="0", preset="compact", classes=data.classes, bands=data.bands,
                     stamp_size=32, seq_len=model_config.seq_len, stem_window=model_config.stem_window,
                     normalisation=band_statistics(data))
    idx = np.arange(len(data))
    torch.manual_seed(0)
    model = build_model(model_config)
    active, width = member.head_units_active(model, data, idx, card)
    assert width == model_config.head_width and active > member.DEAD_HEAD_SHARE * width
    assert member.head_units_active(model, data, idx, card, batch_size=5) == (active, width)
    np.testing.assert_allclose(evaluation.predict(model, data, idx, card, batch_size=5),
                               evaluation.predict(model, data, idx, card), atol=1e-6)  # memory, not results
    assert not member.head_is_dead((active, width))
    hidden = model.head.layers[2]
    with torch.no_grad():
        hidden.bias[:] = -1e6  # every unit negative for every object: no gradient reaches the body
        hidden.bias[0] = 1e6
    assert member.head_units_active(model, data, idx, card) == (1, width)
    assert member.head_is_dead((1, width)) and member.head_is_dead((3, 32))
    assert not member.head_is_dead((4, 32)) and not member.head_is_dead(None)
    baseline = build_model(config(tmp_path / "b", model="cnn_gru").model_config(data.classes, len(data.bands) + 1))
    assert member.head_units_active(baseline, data, idx, card) is None


def test_member_seed_of_the_first_attempt_is_unchanged():
    run = config("unused")
    assert member.member_seed(run, 1, 2) == member.member_seed(run, 1, 2, 0) == [0, 1, 2]  # as before
    seeds = {tuple(member.member_seed(run, 1, 2, k)) for k in range(member.MAX_RESTARTS + 1)}
    assert len(seeds) == member.MAX_RESTARTS + 1


def _declare_dead_once(monkeypatch):
    """The first head check on each validation set (one per fold) reports a dead head; later ones measure."""
    original = member.head_units_active
    checked: set = set()

    def dead_once(model, data, idx, card, batch_size=256):
        key = tuple(idx.tolist())
        if key not in checked:
            checked.add(key)
            return (0, 32)
        return original(model, data, idx, card, batch_size)

    monkeypatch.setattr(member, "head_units_active", dead_once)


def test_member_with_a_dead_head_starts_again_from_a_fresh_seed(tmp_path, monkeypatch):
    straight = fit(config(tmp_path / "straight", fold_limit=1))
    _declare_dead_once(monkeypatch)
    restarted = fit(config(tmp_path / "restarted", fold_limit=1))
    record = json.loads((tmp_path / "restarted" / "state" / "fold0_member0.best.json").read_text())
    assert record["restarts"] == 1
    attempts = [entry["attempt"] for entry in record["history"]]
    assert attempts[0] == 0 and attempts[-1] == 1 and record["epochs"] == len(attempts)
    assert record["head_units_active"][1] == 32
    straight_record = json.loads((tmp_path / "straight" / "state" / "fold0_member0.best.json").read_text())
    assert straight_record["restarts"] == 0 and len(straight_record["history"]) < len(attempts)
    first = json.loads((tmp_path / "straight" / "fold0.predictions.json").read_text())["probabilities"]
    second = json.loads((tmp_path / "restarted" / "fold0.predictions.json").read_text())["probabilities"]
    assert first != second  # the second attempt is another draw, not the first one again
    assert restarted["per_fold"][0]["n"] == straight["per_fold"][0]["n"]


def test_run_stopped_after_a_restart_resumes_to_the_same_result(tmp_path, monkeypatch):
    _declare_dead_once(monkeypatch)
    reference = fit(config(tmp_path / "straight", fold_limit=1))
    _declare_dead_once(monkeypatch)
    calls = {"n": 0}
    original = member._save_state

    def stop_after_the_restart(path, model, optimizer, state, group=SINGLE_PROCESS):
        original(path, model, optimizer, state, group)
        calls["n"] += 1
        if state.restarts == 1 and state.epochs_run == 2 and state.epoch == 0:  # just restarted
            raise KeyboardInterrupt

    monkeypatch.setattr(member, "_save_state", stop_after_the_restart)
    with pytest.raises(KeyboardInterrupt):
        fit(config(tmp_path / "resumed", fold_limit=1))
    monkeypatch.setattr(member, "_save_state", original)
    resumed = fit(config(tmp_path / "resumed", fold_limit=1))
    assert resumed["per_fold"] == reference["per_fold"]
    for run in ("straight", "resumed"):
        assert json.loads((tmp_path / run / "state" / "fold0_member0.best.json").read_text())["restarts"] == 1


@pytest.mark.parametrize("yaml_text, message", [
    ("catalog: {catalog}\nepochs: lots\n", "field 'epochs' must be an integer, got 'lots'"),
    ("catalog: {catalog}\nepoch: 3\n", "unknown field(s) epoch"),
    ("catalog: {catalog}\nlearning_rate: fast\n", "field 'learning_rate' must be a number"),
    ("- {catalog}\n- 2\n", "must be a mapping of FitConfig fields"),
    ("catalog: {catalog}\nfolds: [1\n", "not valid YAML"),
    ("catalog: {catalog}\nfold_limit: 9\n", "fold_limit must be in [1, folds=5]"),
    ("catalog: {catalog}\nmodel: resnet\n", "model must be one of"),
    ("catalog: null\n", "field 'catalog' must be a string, got None"),
    ("epochs: 3\n", "missing --catalog"),
])
def test_bad_configuration_is_one_line_and_writes_nothing(tmp_path, capsys, yaml_text, message):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text(yaml_text.format(catalog=sample_catalog_path()))
    if "missing" in message:
        with pytest.raises(SystemExit) as stopped:
            command_line.main(["--config", str(yaml_path), "--run-dir", str(tmp_path / "run")])
        assert stopped.value.code == 2
    else:
        assert command_line.main(["--config", str(yaml_path), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_yaml_numbers_and_nulls_are_read_as_their_fields(tmp_path):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("catalog: c.fits\nrun_dir: r\nlearning_rate: 1e-3\ndropout: 0\nfold_limit: null\n")
    parsed, _ = command_line._parse(["--config", str(yaml_path)])
    assert parsed.learning_rate == 0.001 and parsed.dropout == 0.0 and parsed.fold_limit is None


def test_boolean_fields_are_flags_on_the_command_line_and_booleans_in_yaml(tmp_path):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("catalog: c.fits\nrun_dir: r\nearly: true\ndifference_channel: true\n")
    parsed, _ = command_line._parse(["--config", str(yaml_path)])
    assert parsed.early is True and parsed.difference_channel is True and parsed.records_dir is None
    parsed, _ = command_line._parse(["--config", str(yaml_path), "--no-early", "--records-dir", "results/x"])
    assert parsed.early is False and parsed.records_dir == "results/x"
    parsed, _ = command_line._parse(["--catalog", "c.fits", "--run-dir", "r", "--early"])
    assert parsed.early is True and parsed.difference_channel is False
    yaml_path.write_text("catalog: c.fits\nrun_dir: r\nearly: 1\n")
    with pytest.raises(UsageError, match="field 'early' must be true or false, got 1"):
        command_line._parse(["--config", str(yaml_path)])


def test_bad_input_is_refused_before_the_run_directory_is_touched(tmp_path, capsys):
    run_dir = tmp_path / "run"
    not_fits = tmp_path / "notes.fits"
    not_fits.write_text("not a catalog")
    assert command_line.main(["--catalog", str(tmp_path / "missing.fits"), "--run-dir", str(run_dir)]) == 1
    assert command_line.main(["--catalog", str(not_fits), "--run-dir", str(run_dir)]) == 1
    # 6 objects of the sample's 24 in 2 folds: too few of some class
    assert command_line.main(["--catalog", str(sample_catalog_path()), "--run-dir", str(run_dir),
                              "--max-objects", "6", "--folds", "2"]) == 1
    (tmp_path / "exports" / "x").mkdir(parents=True)
    assert command_line.main(["--catalog", str(sample_catalog_path()), "--run-dir", str(run_dir),
                              "--export-out", str(tmp_path / "exports")]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines)
    assert "missing.fits: no such file" in lines[0] and "notes.fits" in lines[1]
    assert "cannot be split into 2 folds" in lines[2] or "too few" in lines[2]
    assert "holds x" in lines[3]
    assert not run_dir.exists()
    run_dir.mkdir()
    (run_dir / "folds.json").write_text("{broken")
    assert command_line.main(["--catalog", str(sample_catalog_path()), "--run-dir", str(run_dir)]) == 1
    assert "folds.json: not a folds file" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == ["folds.json"]


def _symmetries(frames: torch.Tensor) -> list[torch.Tensor]:
    """The 8 images of ``(M, H, W)`` frames under the rotations and flips of the square."""
    turned = [torch.rot90(frames, k, dims=(-2, -1)) for k in range(4)]
    return turned + [t.flip(-1) for t in turned]


def test_augment_applies_one_symmetry_of_the_square_per_object():
    stamps = torch.randn(64, 3, 5, 5)
    out = batches.augment(stamps, torch.Generator().manual_seed(0))
    used = []
    for original, augmented in zip(stamps, out):
        matches = [k for k, image in enumerate(_symmetries(original)) if torch.equal(image, augmented)]
        assert len(matches) == 1  # the same transform for every frame of the object
        used.append(matches[0])
    assert len(set(used)) == 8  # every symmetry is drawn
    again = batches.augment(stamps, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # the generator alone decides


def test_balanced_draws_give_every_class_an_equal_share():
    labels = np.repeat([0, 1, 2, 3], [5, 200, 60, 1000])
    weights = batches.balanced_weights(labels)
    assert weights.shape == labels.shape and weights.sum() == pytest.approx(1.0)
    draws = np.random.default_rng(0).choice(labels.size, size=200_000, replace=True, p=weights)
    shares = np.bincount(labels[draws], minlength=4) / draws.size
    assert np.abs(shares - 0.25).max() < 0.01
    # the unweighted shares would be 0.4 % to 79 %: the weights are what balances them
    assert np.bincount(labels)[0] / labels.size < 0.01


@pytest.mark.parametrize("text", ["{broken", "[]", '{"folds": []}', '{"held_out": 5}', '{"held_out": []}',
                                  '{"held_out": [["1"], 2]}', '{"held_out": [["1"], [2]]}', "\udcff"])
def test_read_folds_refuses_what_make_folds_did_not_write(tmp_path, text):
    path = tmp_path / "folds.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match=r"folds\.json: not a folds file of train\.fit"):
        folds.read_folds(path)
    path.write_text('{"seed": 0, "held_out": [["a", "b"], ["c"]]}')
    assert folds.read_folds(path) == [["a", "b"], ["c"]]


def test_weights_of_another_architecture_are_refused_in_one_line(tmp_path):
    from train.model import build_model, get_preset

    config = dataclasses.replace(get_preset("compact"), head_norm=False)
    before = build_model(config).state_dict()
    changed = build_model(dataclasses.replace(config, head_norm=True))
    path = tmp_path / "state" / "fold0_member0.pt"
    with pytest.raises(ValueError) as caught:
        member.load_weights(changed, before, path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "another architecture" in message
    member.load_weights(changed, changed.state_dict(), path)  # matching weights load


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_architecture_record_without_a_field_meant_its_default(tmp_path):
    """A record written before a field existed: the field's default, and a model that differs from it is refused."""
    from train.checkpoint import config_to_dict

    run_dir = tmp_path / "run"
    args = ["--catalog", str(sample_catalog_path()), "--run-dir", str(run_dir)]
    model_config = protocol.prepare(command_line._parse(args)[0]).model_config
    record = config_to_dict(model_config)
    del record["attention"]
    run_dir.mkdir()
    (run_dir / "architecture.json").write_text(json.dumps(record))
    protocol.check_architecture(run_dir, model_config)  # "published", the default
    with pytest.raises(ValueError, match=r"\(attention differ\)"):
        protocol.check_architecture(run_dir, dataclasses.replace(model_config, attention="dot"))


def test_a_run_of_another_architecture_is_refused_before_anything_is_written(tmp_path, capsys):
    from train.checkpoint import config_to_dict
    from train.model import build_model

    run_dir = tmp_path / "run"
    args = ["--catalog", str(sample_catalog_path()), "--run-dir", str(run_dir)]
    prepared = protocol.prepare(command_line._parse(args)[0])
    earlier = dataclasses.replace(prepared.model_config, head_norm=not prepared.model_config.head_norm)
    # saved states without architecture.json: refused
    (run_dir / "state").mkdir(parents=True)
    torch.save({"model": build_model(earlier).state_dict(), "optimizer": {}, "state": {}},
               run_dir / "state" / "fold0_member0.pt")
    before = _files(run_dir)
    assert command_line.main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "holds saved states (fold0_member0.pt) but no architecture.json" in lines[0]
    assert _files(run_dir) == before
    # with the record a run writes, the differing fields are named
    (run_dir / "state" / "fold0_member0.pt").unlink()
    (run_dir / "architecture.json").write_text(json.dumps(config_to_dict(earlier)))
    before = _files(run_dir)
    assert command_line.main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "architecture.json: the run was trained with another architecture (head_norm" in lines[0]
    assert _files(run_dir) == before
    (run_dir / "architecture.json").write_text(json.dumps(config_to_dict(prepared.model_config)))
    protocol.check_architecture(run_dir, prepared.model_config)  # the same architecture passes


def test_source_revision_names_the_commit_and_local_changes(monkeypatch):
    import subprocess

    answers = {"rev-parse": "0123456789abcdef0123456789abcdef01234567\n", "status": ""}

    def fake_git(command, **kwargs):
        assert "--no-optional-locks" in command  # never takes the index lock of a user's git
        assert command[command.index("-C") + 1] == str(Path(__file__).resolve().parents[1])  # the checkout
        if "rev-parse" in command:
            return subprocess.CompletedProcess(command, 0, answers["rev-parse"], "")
        return subprocess.CompletedProcess(command, 0, answers["status"], "")

    monkeypatch.setattr(provenance.subprocess, "run", fake_git)
    assert provenance.source_revision() == "0123456789abcdef0123456789abcdef01234567"
    answers["status"] = " M train/fit/member.py\n"
    assert provenance.source_revision() == "0123456789abcdef0123456789abcdef01234567+modified"

    def no_git(command, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    assert provenance.source_revision() is None


def _noise_reference(frames: np.ndarray, band: np.ndarray, bands: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """NumPy reference of band_statistics(kind="noise"): per band, the median of the frames' median pixels and of
    their 1.4826 x median absolute deviations, frames without a finite pixel left out."""
    expected = {}
    for b, name in enumerate(bands):
        levels, noises = [], []
        for frame in frames[band == b].astype(np.float64):
            good = frame[np.isfinite(frame)]
            if good.size:
                levels.append(np.median(good))
                noises.append(1.4826 * np.median(np.abs(good - np.median(good))))
        if levels:
            expected[name] = (float(np.median(levels)), float(np.median(noises)) or 1.0)
    return expected


def test_noise_statistics_against_numpy_and_unmoved_by_outlier_frames(tmp_path, monkeypatch):
    from train.data import dataset

    data = protocol.prepare(config(tmp_path / "run")).data
    frames = np.array(data.frames)
    rng = np.random.default_rng(3)
    frames[rng.choice(len(frames), 5, replace=False)] *= 1e6  # a few enormous frames
    frames[7] = np.nan  # and one without a finite pixel
    frames[9, :3] = np.inf
    data = dataclasses.replace(data, frames=frames)
    noise = band_statistics(data, kind="noise")
    reference = _noise_reference(frames, data.band, data.bands)
    assert set(noise) == set(reference)
    for name, (centre, scale) in reference.items():
        assert noise[name].mean == pytest.approx(centre, rel=1e-12, abs=1e-12)
        assert noise[name].std == pytest.approx(scale, rel=1e-12)
    clean = band_statistics(dataclasses.replace(data, frames=np.nan_to_num(np.array(protocol.prepare(
        config(tmp_path / "run")).data.frames))), kind="noise")
    moments = band_statistics(data)
    for name in noise:  # the outliers move the moments by orders of magnitude, the noise scale hardly at all
        assert noise[name].std == pytest.approx(clean[name].std, rel=0.05)
    assert max(moments[name].std / noise[name].std for name in noise) > 1e3
    # at most NOISE_SAMPLE_FRAMES evenly spaced frames per band
    monkeypatch.setattr(dataset, "NOISE_SAMPLE_FRAMES", 10)
    sampled = band_statistics(data, kind="noise")
    for b, name in enumerate(data.bands):
        rows = np.flatnonzero(data.band == b)
        rows = rows[np.linspace(0, rows.size - 1, 10).round().astype(np.int64)]
        centre, scale = _noise_reference(frames[rows], data.band[rows], data.bands)[name]
        assert (sampled[name].mean, sampled[name].std) == pytest.approx((centre, scale), rel=1e-12, abs=1e-12)
    with pytest.raises(ValueError, match="kind must be one of"):
        band_statistics(data, kind="median")


def test_noise_normalisation_reaches_the_card_and_stretches_the_image_networks(tmp_path):
    prepared = protocol.prepare(config(tmp_path / "run", normalisation="noise"))
    expected = band_statistics(prepared.data, kind="noise")
    assert {b: (s.mean, s.std) for b, s in prepared.card.normalisation.items()} == {
        b: (s.mean, s.std) for b, s in expected.items()}
    assert prepared.model_config.input_stretch == "asinh"
    assert protocol.prepare(config(tmp_path / "other")).model_config.input_stretch == "linear"
    classes, bands = prepared.data.classes, len(prepared.data.bands) + 1
    assert config(tmp_path / "g", model="cnn_gru", normalisation="noise").model_config(
        classes, bands).input_stretch == "asinh"
    assert config(tmp_path / "l", model="lc_lstm", normalisation="noise").model_config(
        classes, bands).input_stretch == "linear"  # its photometry stays linear
    with pytest.raises(ValueError, match="normalisation must be 'moments' or 'noise'"):
        config(tmp_path / "x", normalisation="robust")
    assert "normalisation" in TRAINING_FIELDS  # members trained on other statistics are not reused
