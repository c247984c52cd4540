"""Tests of the baselines and of the model factory."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from helpers import assert_reads_asinh_stamps  # noqa: E402
from train.model import (  # noqa: E402
    BASELINES,
    MODEL_NAMES,
    BaselineConfig,
    ConvEntion,
    build_model,
    example_inputs,
    get_baseline,
    get_preset,
    measure,
)
from train.model.baselines import AperturePhotometry, FrameRNNClassifier, LightCurveLSTM  # noqa: E402

pytestmark = pytest.mark.torch

# The paper's table: CNN+GRU 1.993M, CNN+LSTM 2.190M, LSTM on light curves 60K.
TABLE_PARAMS = {"cnn_gru": 1_993_000, "cnn_lstm": 2_190_000, "lc_lstm": 60_000}
MEASURED_PARAMS = {"cnn_gru": 1_994_420, "cnn_lstm": 2_189_060, "lc_lstm": 59_652}


def tiny(name: str) -> BaselineConfig:
    return replace(get_baseline(name), stamp_size=16, seq_len=12, conv_channels=(4, 8),
                   frame_features=16, hidden_size=8, annulus=(5.0, 8.0))


def eval_model(config: BaselineConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(config).eval()


@pytest.mark.parametrize("name", BASELINES)
def test_parameter_counts_match_the_paper_table(name: str) -> None:
    model = build_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert count == MEASURED_PARAMS[name]
    assert abs(count - TABLE_PARAMS[name]) / TABLE_PARAMS[name] < 0.01
    assert measure(model).params == count


@pytest.mark.parametrize("name", BASELINES)
def test_full_size_forward_at_batch_sizes_one_and_two(name: str) -> None:
    model = eval_model(get_baseline(name))
    stamps, band_ids, times = example_inputs(model.config, 2)
    band_ids[1, 30:] = 0
    with torch.no_grad():
        pair = model(stamps, band_ids, times)
        single = model(stamps[1:], band_ids[1:], times[1:])
    assert pair.shape == (2, 4) and single.shape == (1, 4)
    torch.testing.assert_close(pair[1:], single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_padding_position_and_content_do_not_matter(name: str) -> None:
    model = eval_model(tiny(name))
    stamps, band_ids, times = example_inputs(model.config, 1)
    band_ids[:, 7:] = 0
    # The same 7 real frames, spread out with padding in between and garbage in the padding.
    spread = torch.tensor([0, 2, 3, 6, 8, 9, 11])
    padding = torch.tensor([1, 4, 5, 7, 10])
    stamps2 = torch.randn_like(stamps) * 30
    band_ids2 = torch.zeros_like(band_ids)
    times2 = torch.full_like(times, 7.0)
    stamps2[:, spread], band_ids2[:, spread], times2[:, spread] = stamps[:, :7], band_ids[:, :7], times[:, :7]
    assert (band_ids2[:, padding] == 0).all()
    with torch.no_grad():
        torch.testing.assert_close(model(stamps, band_ids, times), model(stamps2, band_ids2, times2),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", BASELINES)
def test_empty_sequences_are_finite_and_differentiable(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny(name)).train()
    stamps, band_ids, times = example_inputs(model.config, 3)
    band_ids[0] = 0
    band_ids[1, 1:] = 0
    logits = model(stamps, band_ids, times)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["cnn_gru", "cnn_lstm"])
def test_the_frame_cnn_is_conv_relu_pool_in_the_published_order(name: str) -> None:
    """The frame CNN pools before its ReLU, channels-last: values and gradients of Conv + ReLU + MaxPool."""
    torch.manual_seed(0)
    model = build_model(tiny(name)).train()
    convs = [m for m in model.cnn if isinstance(m, torch.nn.Conv2d)]
    published = [layer for conv in convs for layer in (conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2))]
    reference = torch.nn.Sequential(*published, torch.nn.Flatten())
    frames = torch.randn(40, 1, 16, 16)
    frames[:5] = -frames[:5].abs()  # all-negative frames: every ReLU output 0, ties in every pooling window
    ours = model.cnn(frames.contiguous(memory_format=torch.channels_last))
    ours_grads = torch.autograd.grad(ours.square().sum(), [c.weight for c in convs])
    expected = reference(frames.contiguous())
    expected_grads = torch.autograd.grad(expected.square().sum(), [c.weight for c in convs])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
    for got, want in zip(ours_grads, expected_grads):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_aperture_photometry_recovers_a_point_source_on_a_background() -> None:
    photometry = AperturePhotometry(32, 3.0, (6.0, 10.0))
    stamps = torch.full((1, 2, 32, 32), 7.5)
    stamps[0, 0, 17, 14] += 40.0  # inside the aperture, 2.2 pixels from the centre pixel (16, 16)
    stamps[0, 1, 0, 0] += 40.0  # outside aperture and annulus
    torch.testing.assert_close(photometry(stamps), torch.tensor([[40.0, 0.0]]), atol=1e-4, rtol=0)
    assert photometry.functional_macs(stamps) == 2 * 32 * 32


def test_light_curve_model_reads_only_the_photometry() -> None:
    model = eval_model(tiny("lc_lstm"))
    stamps, band_ids, times = example_inputs(model.config, 2)
    weights = model.photometry.weights
    outside = weights == 0  # pixels in neither the aperture nor the annulus
    assert outside.any()
    changed = stamps + 100 * torch.randn_like(stamps) * outside
    with torch.no_grad():
        torch.testing.assert_close(model(stamps, band_ids, times), model(changed, band_ids, times))


@pytest.mark.parametrize("name", BASELINES)
def test_summary_counts_recurrent_layers_from_their_shapes(name: str) -> None:
    config = tiny(name)
    model = build_model(config)
    stages = {stage.name: stage for stage in measure(model).stages}
    gates = 3 if name == "cnn_gru" else 4
    steps, hidden = config.seq_len, config.hidden_size
    step_input = (1 if name == "lc_lstm" else config.frame_features) + config.band_features + 1
    per_step = sum(gates * hidden * (size + hidden)
                   for size in [step_input] + [hidden] * (config.rnn_layers - 1))
    assert stages["rnn"].macs == steps * per_step
    assert "other" not in stages


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.slow
def test_onnx_export_with_dynamic_batch_matches_torch(tmp_path, name: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = eval_model(tiny(name))
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and progress notices
        torch.onnx.export(
            model, example_inputs(model.config, 2), str(path), dynamo=True,
            input_names=["stamps", "band_ids", "times"], output_names=["logits"],
            dynamic_shapes={"stamps": {0: batch}, "band_ids": {0: batch}, "times": {0: batch}},
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in (1, 3):
        stamps, band_ids, times = example_inputs(model.config, size, seed=size)
        band_ids[-1, 4:9] = 0
        with torch.no_grad():
            expected = model(stamps, band_ids, times).numpy()
        (actual,) = session.run(None, {"stamps": stamps.numpy(), "band_ids": band_ids.numpy(),
                                       "times": times.numpy()})
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


# --- factory and configuration --------------------------------------------------------------


def test_build_model_covers_every_name() -> None:
    assert MODEL_NAMES == ("paper", "compact", "broker", "cnn_gru", "cnn_lstm", "lc_lstm")
    kinds = {"paper": ConvEntion, "compact": ConvEntion, "broker": ConvEntion, "cnn_gru": FrameRNNClassifier,
             "cnn_lstm": FrameRNNClassifier, "lc_lstm": LightCurveLSTM}
    for name in MODEL_NAMES:
        assert type(build_model(name)) is kinds[name]
    assert isinstance(build_model("cnn_gru").rnn, torch.nn.GRU)
    assert isinstance(build_model("cnn_lstm").rnn, torch.nn.LSTM)
    with pytest.raises(KeyError, match="paper, compact, broker, cnn_gru"):
        build_model("transformer")
    with pytest.raises(TypeError):
        build_model(3)  # type: ignore[arg-type]


def test_build_model_accepts_ablation_configs() -> None:
    no_band = build_model(replace(get_preset("paper"), band_embedding=False))
    assert isinstance(no_band, ConvEntion) and no_band.band_embedding is None
    no_position = build_model(replace(get_preset("compact"), positional_encoding="none"))
    assert no_position.positional_encoding.kind == "none"
    assert type(build_model(get_baseline("lc_lstm"))) is LightCurveLSTM


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "cnn_rnn"}, "kind"),
        ({"hidden_size": 0}, "positive"),
        ({"conv_channels": (4,) * 6}, "poolings"),
        ({"aperture_radius": 7.0}, "aperture_radius"),
        ({"dropout": -0.1}, "dropout"),
        ({"input_stretch": "log"}, "input_stretch"),
    ],
)
def test_baseline_config_rejects_inconsistent_values(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(get_baseline("cnn_gru"), **changes)


def test_the_light_curve_baseline_refuses_a_stretch_of_its_photometry() -> None:
    with pytest.raises(ValueError, match="lc_lstm measures aperture fluxes"):
        replace(get_baseline("lc_lstm"), input_stretch="asinh")


@pytest.mark.parametrize("name", ["cnn_gru", "cnn_lstm"])
def test_an_asinh_stretch_is_the_linear_network_on_asinh_stamps(name: str) -> None:
    stretched = build_model(replace(tiny(name), input_stretch="asinh")).eval()
    assert_reads_asinh_stamps(eval_model(tiny(name)), stretched, batch=3, real_frames=5)


def test_unknown_baseline_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="cnn_gru, cnn_lstm, lc_lstm"):
        get_baseline("gru")
