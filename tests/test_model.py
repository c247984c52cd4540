"""Tests of the ConvEntion model: configuration, shapes, size, padding, references, export."""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from helpers import assert_reads_asinh_stamps, randomise_norms, tiny_config, with_padding  # noqa: E402
from train.model import (  # noqa: E402
    PRESETS,
    ConvEntion,
    ModelConfig,
    StemLayer,
    build_model,
    example_inputs,
    get_preset,
    measure,
    to_conv2d_stem,
    training_form,
)
from train.model.__main__ import main  # noqa: E402
from train.model.attention import ConvAttention, ConvDotAttention  # noqa: E402
from train.model.convention import FeatureNorm, MaskedLayerNorm  # noqa: E402
from train.model.loops import loop_attention, loop_forward  # noqa: E402
from train.model.stem import StemBlock  # noqa: E402

pytestmark = pytest.mark.torch

PAPER_PARAMS = 1_253_108  # the authors' released model, 4 classes, 10 band ids


@pytest.fixture(scope="module")
def paper_model() -> ConvEntion:
    torch.manual_seed(0)
    return randomise_norms(ConvEntion(get_preset("paper")))


# --- configuration -----------------------------------------------------------------


def test_presets_are_registered_and_unknown_names_list_them() -> None:
    assert PRESETS == ("paper", "compact", "broker")
    for name in PRESETS:
        assert isinstance(get_preset(name), ModelConfig)
    with pytest.raises(KeyError, match="paper, compact"):
        get_preset("huge")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq_len": 100}, "not a multiple of stem_window"),
        ({"heads": 3}, "not divisible by heads"),
        ({"stamp_size": 4}, "leaves no output"),
        ({"d_model": 8, "heads": 2}, "must have d_model=8"),
        ({"logit_kernel": 4}, "odd"),
        ({"stamp_channels": 5}, "set band_embedding=False"),
        ({"band_input": "stacked"}, "set band_embedding=False"),
        ({"band_input": "grouped", "band_embedding": False}, "band_input"),
        ({"positional_encoding": "learned"}, "positional_encoding"),
        ({"classes": ("a", "a")}, "distinct"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_stretch": "log"}, "input_stretch"),
        ({"stem": (StemLayer(channels=4, kernel=3, time_kernel=1),)}, "length 1"),
    ],
)
def test_config_rejects_inconsistent_values(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_config(**changes)


@pytest.mark.parametrize("changes", [{}, {"scene_summary": 4, "difference_channel": True}])
def test_an_asinh_stretch_is_the_linear_model_on_asinh_stamps(changes: dict) -> None:
    torch.manual_seed(0)
    linear = randomise_norms(ConvEntion(tiny_config(**changes))).eval()
    stretched = ConvEntion(tiny_config(input_stretch="asinh", **changes)).eval()
    assert_reads_asinh_stamps(linear, stretched, batch=2, real_frames=4)


def test_config_is_frozen() -> None:
    config = get_preset("paper")
    with pytest.raises(AttributeError):
        config.d_model = 16  # type: ignore[misc]


# --- the paper preset ----------------------------------------------------------------


def test_paper_preset_matches_the_released_model() -> None:
    config = get_preset("paper")
    assert (config.stamp_size, config.seq_len, config.stem_window, config.n_positions) == (32, 99, 3, 33)
    assert config.stem_channels == (64, 128, 64, 8)
    assert (config.d_model, config.heads, config.layers, config.head_width) == (8, 4, 2, 256)
    assert config.classes == ("AGN", "SNIa", "SNOther", "Variable")
    assert config.n_band_ids == 10
    assert config.positional_encoding == "sinusoidal"
    assert config.stem_shapes() == ((13, 13, 3), (13, 13, 5), (11, 11, 3), (9, 9, 1))


def test_paper_parameter_count(paper_model: ConvEntion) -> None:
    count = sum(p.numel() for p in paper_model.parameters())
    assert count == PAPER_PARAMS
    assert abs(count - PAPER_PARAMS) / PAPER_PARAMS < 0.005


def test_paper_stage_shapes_at_batch_size_one(paper_model: ConvEntion) -> None:
    shapes: list[tuple[int, ...]] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
             for layer in paper_model.stem.layers]
    stem_out: list[tuple[int, ...]] = []
    hooks.append(paper_model.stem.register_forward_hook(lambda m, i, o: stem_out.append(tuple(o.shape))))
    try:
        with torch.no_grad():
            logits = paper_model(*example_inputs(paper_model.config, 1))
    finally:
        for hook in hooks:
            hook.remove()
    # (windows, channels, time, height, width): 13x13x3 -> 13x13x5 -> 11x11x3 -> 9x9x1
    assert shapes == [(33, 64, 3, 13, 13), (33, 128, 5, 13, 13), (33, 64, 3, 11, 11), (33, 8, 1, 9, 9)]
    assert stem_out == [(1, 33, 8, 9, 9)]
    assert logits.shape == (1, 4)
    assert torch.isfinite(logits).all()


def test_paper_multiply_accumulates(paper_model: ConvEntion) -> None:
    cost = measure(paper_model, "paper")
    stages = {stage.name: stage for stage in cost.stages}
    windows = 33
    assert stages["stem.conv2"].macs == windows * (128 * 13 * 13 * 5) * (64 * 5 * 5 * 3)
    assert stages["stem.conv1"].macs == windows * (64 * 13 * 13 * 3) * (2 * 11 * 11 * 3)
    assert cost.params == PAPER_PARAMS
    assert 20.5e9 < cost.macs < 20.7e9
    assert "other" not in stages


# --- the compact preset --------------------------------------------------------------


def test_compact_preset_is_a_cheap_convention_with_the_same_interface() -> None:
    paper, compact = get_preset("paper"), get_preset("compact")
    for field in ("stamp_size", "seq_len", "stem_window", "n_band_ids", "classes", "stamp_channels"):
        assert getattr(compact, field) == getattr(paper, field)
    model = ConvEntion(compact)
    cost = measure(model, "compact")
    assert cost.macs <= 0.25e9
    assert 20_000 <= cost.params <= 100_000
    assert model.band_embedding is not None and compact.layers >= 1
    logits = model.eval()(*example_inputs(compact, 1))
    assert logits.shape == (1, 4)


# --- multiply-accumulate counting ------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_config, lambda: get_preset("compact")])
def test_summary_agrees_with_torch_flop_counter(make) -> None:
    model = ConvEntion(make()).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*example_inputs(model.config, 1))
    cost = measure(model)
    assert cost.macs == counter.get_total_flops() // 2
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert [s.name for s in cost.stages][:2] == ["embedding", "stem.conv1"]


def test_summary_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--preset", "compact", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cost = measure(build_model("compact"), "compact")
    assert report["macs"] == cost.macs and report["params"] == cost.params
    names = [stage["name"] for stage in report["stages"]]
    assert names == ["embedding", "stem.conv1", "stem.conv2", "stem.conv3", "layer1.attention",
                     "layer1.ffn", "layer2.attention", "layer2.ffn", "head"]


def test_summary_command_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--preset", "paper"]) == 0
    out = capsys.readouterr().out
    assert "stem.conv2" in out and "1,253,108" in out and "20.623 GMAC" in out


# --- attention -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    valid=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_batched_attention_equals_the_pairwise_loop(valid: list[list[bool]], seed: int) -> None:
    torch.manual_seed(seed)
    attention = ConvAttention(channels=4, heads=2, logit_kernel=5)
    x = torch.randn(len(valid), 5, 4, 6, 6)
    mask = torch.tensor(valid)
    with torch.no_grad():
        expected = loop_attention(attention, x, mask)
        actual = attention(x, mask)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", [ConvAttention, ConvDotAttention])
def test_attention_ignores_masked_keys(kind) -> None:
    torch.manual_seed(0)
    attention = kind(channels=4, heads=2)
    x = torch.randn(1, 5, 4, 6, 6)
    valid = torch.tensor([[True, False, True, False, False]])
    changed = x.clone()
    changed[:, [1, 3, 4]] = torch.randn(1, 3, 4, 6, 6) * 100
    with torch.no_grad():
        out, out_changed = attention(x, valid), attention(changed, valid)
    torch.testing.assert_close(out[:, [0, 2]], out_changed[:, [0, 2]])


def test_attention_output_does_not_depend_on_the_query() -> None:
    """conv(Q_n) is constant over the softmax axis m and cancels (see docs/model.md)."""
    torch.manual_seed(0)
    attention = ConvAttention(channels=8, heads=4)
    x = torch.randn(2, 6, 8, 9, 9)
    valid = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        mixed = attention(x, valid)
        merged_first = mixed[:, :1].expand_as(mixed)
    torch.testing.assert_close(mixed, merged_first, atol=1e-5, rtol=1e-5)


# --- normalisation and positional encoding -----------------------------------------------


@pytest.mark.parametrize("affine", ["element", "channel"])
def test_masked_layer_norm_without_padding_is_layer_norm(affine: str) -> None:
    torch.manual_seed(0)
    norm = MaskedLayerNorm((5, 4, 3, 3), affine)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 5, 4, 3, 3) * 3 + 1
    reference = torch.nn.functional.layer_norm(
        x, (5, 4, 3, 3), norm.weight.expand(5, 4, 3, 3), norm.bias.expand(5, 4, 3, 3), eps=norm.eps
    )
    torch.testing.assert_close(norm(x, torch.ones(2, 5, dtype=torch.bool)), reference)


def test_masked_layer_norm_uses_valid_positions_only() -> None:
    norm = MaskedLayerNorm((4, 2, 3, 3), "channel")
    x = torch.randn(1, 4, 2, 3, 3)
    valid = torch.tensor([[True, True, False, False]])
    out = norm(x, valid)
    reference = torch.nn.functional.layer_norm(x[:, :2], (2, 2, 3, 3))
    torch.testing.assert_close(out[:, :2], reference)
    assert (out[:, 2:] == 0).all()
    assert torch.isfinite(norm(x, torch.zeros(1, 4, dtype=torch.bool))).all()


@pytest.mark.parametrize("affine", ["element", "channel"])
def test_feature_norm_is_layer_norm_of_each_object(affine: str) -> None:
    torch.manual_seed(0)
    norm = FeatureNorm((4, 3, 3), affine)
    assert norm.weight.shape == ((4, 3, 3) if affine == "element" else (4, 1, 1))
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(5, 4, 3, 3) * 7 + 3
    reference = torch.nn.functional.layer_norm(
        x, (4, 3, 3), norm.weight.expand(4, 3, 3), norm.bias.expand(4, 3, 3), eps=norm.eps
    )
    torch.testing.assert_close(norm(x), reference)
    # under bf16 autocast the statistics are still taken in float32
    low = x.bfloat16()
    reference = torch.nn.functional.layer_norm(
        low.float(), (4, 3, 3), norm.weight.expand(4, 3, 3), norm.bias.expand(4, 3, 3), eps=norm.eps
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(norm(low), reference, atol=1e-5, rtol=1e-5)


def test_head_norm_is_the_compact_preset_s_only_addition_to_the_head() -> None:
    plain = ConvEntion(tiny_config())
    normed = ConvEntion(tiny_config(head_norm=True))
    assert isinstance(plain.head.norm, torch.nn.Identity) and isinstance(normed.head.norm, FeatureNorm)
    extra = {k for k in normed.state_dict()} - {k for k in plain.state_dict()}
    assert extra == {"head.norm.weight", "head.norm.bias"}
    assert get_preset("compact").head_norm and not get_preset("paper").head_norm
    # a configuration saved before the field existed (convention-compact 1.0.0) has no head norm
    from train.checkpoint import config_from_dict, config_to_dict
    saved = config_to_dict(get_preset("compact"))
    del saved["head_norm"]
    assert not config_from_dict(saved).head_norm
    # the head sees features of mean 0 and variance 1 per object, whatever their scale
    features = torch.rand(3, normed.config.d_model, normed.config.map_size, normed.config.map_size) * 50
    seen = normed.head.norm(features)
    torch.testing.assert_close(seen.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(seen.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_sinusoidal_encoding_follows_the_paper() -> None:
    model = ConvEntion(tiny_config())
    table = model.positional_encoding.table  # (N, D)
    d = model.config.d_model
    for n in range(model.config.n_positions):
        for i in range(d // 2):
            angle = n / 10000 ** (2 * i / d)
            assert table[n, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[n, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_window_times_are_relative_to_the_first_real_frame() -> None:
    model = ConvEntion(tiny_config(positional_encoding="time"))
    times = torch.tensor([[0.0, 0.0, 100.0, 101.0, 104.0, 0.0] + [200.0] * 12])
    band_ids = torch.tensor([[0, 0, 1, 2, 1, 0] + [3] * 12])
    relative = model.positional_encoding.window_times(times, band_ids != 0)
    expected = torch.tensor([[0.0, 2.5, 100.0, 100.0, 100.0, 100.0]])
    torch.testing.assert_close(relative, expected)


def test_time_encoding_is_invariant_to_a_shift_of_all_times() -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config(positional_encoding="time")))
    stamps, band_ids, _ = example_inputs(model.config, 2)
    times = 59000.0 + torch.arange(18.0).expand(2, 18) * 2.5  # exact in float32
    band_ids = with_padding(band_ids, [18, 10])
    times = times.masked_fill(band_ids == 0, 0.0)
    shifted = (times + 512.0).masked_fill(band_ids == 0, 0.0)
    with torch.no_grad():
        torch.testing.assert_close(model(stamps, band_ids, times), model(stamps, band_ids, shifted))
        sinusoidal = ConvEntion(tiny_config())
        sinusoidal.load_state_dict(model.state_dict())
        assert not torch.allclose(sinusoidal.eval()(stamps, band_ids, times), model(stamps, band_ids, times))


# --- the whole model ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["sinusoidal", "time", "none"])
def test_forward_equals_the_loop_reference(encoding: str) -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config(positional_encoding=encoding)))
    stamps, band_ids, times = example_inputs(model.config, 3)
    band_ids = with_padding(band_ids, [18, 7, 1])
    with torch.no_grad():
        torch.testing.assert_close(model(stamps, band_ids, times), loop_forward(model, stamps, band_ids, times),
                                   atol=1e-5, rtol=1e-5)


def test_padding_content_does_not_change_the_logits() -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config(positional_encoding="time")))
    stamps, band_ids, times = example_inputs(model.config, 2)
    band_ids = with_padding(band_ids, [8, 4])
    padding = band_ids == 0
    noisy_stamps = stamps + 50 * torch.randn_like(stamps) * padding[..., None, None]
    noisy_times = times.masked_fill(padding, 12345.0)
    with torch.no_grad():
        torch.testing.assert_close(model(stamps, band_ids, times), model(noisy_stamps, band_ids, noisy_times))


@pytest.mark.parametrize("make", [
    tiny_config,
    lambda: tiny_config(positional_encoding="time", norm_affine="channel", head_norm=True),
    lambda: get_preset("compact"),
    lambda: replace(get_preset("compact"), attention="dot"),
])
def test_a_sequence_cut_to_its_real_windows_gives_the_padded_logits(make) -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(make()))
    config = model.config
    stamps, band_ids, times = example_inputs(config, 3, seed=4)
    window = config.stem_window
    real = [1, window + 1, 2 * window]  # 1 and 2 windows hold real frames
    band_ids = with_padding(band_ids, real)
    with torch.no_grad():
        padded = model(stamps, band_ids, times)
        for row, count in enumerate(real):
            cut = -(-count // window) * window
            short = model(stamps[row:row + 1, :cut], band_ids[row:row + 1, :cut], times[row:row + 1, :cut])
            torch.testing.assert_close(short, padded[row:row + 1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="whole number of windows"):
        model(stamps[:, :window + 1], band_ids[:, :window + 1], times[:, :window + 1])


def test_batch_members_are_independent_and_batch_size_one_works() -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config()))
    stamps, band_ids, times = example_inputs(model.config, 3)
    band_ids = with_padding(band_ids, [18, 5, 12])
    with torch.no_grad():
        batch = model(stamps, band_ids, times)
        single = torch.cat([model(stamps[i:i + 1], band_ids[i:i + 1], times[i:i + 1]) for i in range(3)])
        features, summary = model.forward_features(stamps, band_ids, times)
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=1e-5)
    assert features.shape == (3, 4, 4, 4) and summary is None
    torch.testing.assert_close(model.forward_head(features), batch)


def test_nearly_and_fully_padded_sequences_are_finite_and_differentiable() -> None:
    torch.manual_seed(0)
    model = ConvEntion(tiny_config()).train()
    stamps, band_ids, times = example_inputs(model.config, 3)
    band_ids = with_padding(band_ids, [1, 0, 18])
    logits = model(stamps, band_ids, times)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.band_embedding.weight.grad[0].abs().sum() == 0  # padding id stays zero


def test_without_band_embedding_and_with_multi_band_frames() -> None:
    config = tiny_config(band_embedding=False)
    model = ConvEntion(config)
    assert model.band_embedding is None
    assert model.stem.layers[0].conv.in_channels == 1
    full = sum(p.numel() for p in ConvEntion(tiny_config()).parameters())
    conv1 = config.stem[0]
    assert sum(p.numel() for p in model.parameters()) == (
        full - 4 * 12 * 12 - conv1.channels * conv1.kernel**2 * conv1.time_kernel
    )
    multi = ConvEntion(tiny_config(band_embedding=False, stamp_channels=5)).eval()
    stamps, band_ids, times = example_inputs(multi.config, 2)
    assert stamps.shape == (2, 18, 5, 12, 12)
    assert multi(stamps, band_ids, times).shape == (2, 3)


def test_inputs_are_checked_at_the_boundary() -> None:
    model = ConvEntion(tiny_config())
    stamps, band_ids, times = example_inputs(model.config, 2)
    with pytest.raises(ValueError, match="seq_len=18"):
        model(stamps[:, :16], band_ids[:, :16], times[:, :16])
    longer = torch.cat([stamps, stamps[:, :3]], dim=1)
    with pytest.raises(ValueError, match="seq_len=18"):
        model(longer, torch.cat([band_ids, band_ids[:, :3]], dim=1), torch.cat([times, times[:, :3]], dim=1))
    with pytest.raises(ValueError, match="band_ids"):
        model(stamps, band_ids[:1], times)
    with pytest.raises(TypeError, match=r"\.long\(\)"):
        model(stamps, band_ids.int(), times)


# --- Conv2d stem ---------------------------------------------------------------------------


def test_conv2d_stem_equals_conv3d_stem_on_the_paper_model(paper_model: ConvEntion) -> None:
    converted = to_conv2d_stem(paper_model)
    assert not any(isinstance(m, torch.nn.Conv3d) for m in converted.modules())
    stamps, band_ids, times = example_inputs(paper_model.config, 1)
    band_ids = with_padding(band_ids, [40])
    with torch.no_grad():
        torch.testing.assert_close(converted(stamps, band_ids, times), paper_model(stamps, band_ids, times),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [tiny_config, lambda: get_preset("compact")])
def test_conv2d_stem_equals_conv3d_stem(make) -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(make()))
    frames = model.frames(*example_inputs(model.config, 2)[:2])
    with torch.no_grad():
        torch.testing.assert_close(model.stem.to_conv2d()(frames), model.stem(frames), atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    time_in=st.integers(1, 5),
    time_kernel=st.integers(1, 3),
    time_stride=st.integers(1, 2),
    time_padding=st.integers(0, 2),
    channels_in=st.integers(1, 3),
    training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_time_stacked_stem_block_equals_the_conv3d_block(time_in: int, time_kernel: int, time_stride: int,
                                                         time_padding: int, channels_in: int, training: bool,
                                                         seed: int) -> None:
    """Output, input and parameter gradients, running statistics: float64, any time geometry."""
    if time_in + 2 * time_padding < time_kernel:
        return
    torch.manual_seed(seed)
    layer = StemLayer(channels=3, kernel=3, stride=2, padding=1, time_kernel=time_kernel, time_stride=time_stride,
                      time_padding=time_padding)
    block = randomise_norms(StemBlock(channels_in, layer), seed).double().train(training)
    stacked = copy.deepcopy(block)
    x = torch.randn(4, channels_in, time_in, 7, 7, dtype=torch.float64, requires_grad=True)
    x_stacked = x.detach().transpose(1, 2).flatten(1, 2).contiguous(memory_format=torch.channels_last)
    x_stacked.requires_grad_(True)
    expected = block(x)  # (W, C, T', H', W')
    actual = stacked.forward_time_stacked(x_stacked, time_in)
    time_out = stacked.time_out(time_in)
    assert expected.shape[2] == time_out
    assert actual.shape == (4, time_out * 3, *expected.shape[3:])
    torch.testing.assert_close(actual.unflatten(1, (time_out, 3)).transpose(1, 2), expected)
    weights = torch.randn(expected.shape, dtype=torch.float64)
    (expected * weights).sum().backward()
    (actual * weights.transpose(1, 2).flatten(1, 2)).sum().backward()
    torch.testing.assert_close(x_stacked.grad, x.grad.transpose(1, 2).flatten(1, 2))
    for (name, a), b in zip(block.named_parameters(), stacked.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, msg=name)
    for (name, a), b in zip(block.named_buffers(), stacked.buffers(), strict=True):
        torch.testing.assert_close(b, a, msg=name)


def test_training_form_time_stacks_narrow_stems_only(paper_model: ConvEntion) -> None:
    assert training_form(ConvEntion(get_preset("compact"))).stem.time_stacked
    assert not training_form(copy.deepcopy(paper_model)).stem.time_stacked  # 64-128 channels: Conv3d is faster


@pytest.mark.parametrize("make", [tiny_config, lambda: get_preset("compact")])
@pytest.mark.parametrize("training", [True, False])
def test_time_stacked_stem_equals_the_conv3d_stem(make, training: bool) -> None:
    """float64: in training mode the batch statistics amplify float32 summation-order rounding."""
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(make())).double().train(training)
    stacked = copy.deepcopy(model.stem)
    stacked.time_stacked = True
    stamps, band_ids = example_inputs(model.config, 2)[:2]
    frames = model.frames(stamps.double(), band_ids).detach()
    with torch.no_grad():
        torch.testing.assert_close(stacked(frames), model.stem(frames), atol=1e-9, rtol=1e-9)
    for (name, a), b in zip(model.stem.named_buffers(), stacked.buffers(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-9, msg=name)


# --- ONNX export ---------------------------------------------------------------------------


@pytest.mark.parametrize(("conv2d_stem", "encoding", "head_norm"),
                         [(False, "time", False), (True, "sinusoidal", True)])
@pytest.mark.slow
def test_onnx_export_with_dynamic_batch_matches_torch(tmp_path, conv2d_stem: bool, encoding: str,
                                                      head_norm: bool) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config(positional_encoding=encoding, head_norm=head_norm)))
    if conv2d_stem:
        model = to_conv2d_stem(model)
    path = tmp_path / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's own deprecation and progress notices
        torch.onnx.export(
            model, example_inputs(model.config, 2), str(path), dynamo=True,
            input_names=["stamps", "band_ids", "times"], output_names=["logits"],
            dynamic_shapes={"stamps": {0: batch}, "band_ids": {0: batch}, "times": {0: batch}},
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    conv3d = any(node.op_type == "Conv" and len(node.input) and _conv_rank(proto, node) == 3
                 for node in proto.graph.node)
    assert conv3d is not conv2d_stem
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["stamps", "band_ids", "times"]
    for size in (1, 3):
        stamps, band_ids, times = example_inputs(model.config, size, seed=size)
        band_ids = with_padding(band_ids, [18, 2, 0][:size])
        with torch.no_grad():
            expected = model(stamps, band_ids, times).numpy()
        (actual,) = session.run(None, {"stamps": stamps.numpy(), "band_ids": band_ids.numpy(),
                                       "times": times.numpy()})
        np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


def _conv_rank(proto, node) -> int:
    """Spatial rank of an ONNX Conv node, from its weight initializer."""
    weights = {init.name: init for init in proto.graph.initializer}
    weight = weights.get(node.input[1])
    return len(weight.dims) - 2 if weight is not None else 0


# --- exact fast paths of the exported copy ----------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    valid=st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=3),
    kernel=st.sampled_from([1, 3, 5]),
    seed=st.integers(0, 2**16),
)
def test_attention_once_per_sequence_equals_the_pairwise_loop(valid: list[list[bool]], kernel: int,
                                                               seed: int) -> None:
    torch.manual_seed(seed)
    attention = ConvAttention(channels=4, heads=2, logit_kernel=kernel)
    x = torch.randn(len(valid), 5, 4, 6, 6) * 3
    mask = torch.tensor(valid)
    with torch.no_grad():
        expected = loop_attention(attention, x, mask)
        attention.once_per_sequence = True
        actual = attention(x, mask)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("encoding", ["sinusoidal", "time"])
def test_exported_copy_equals_the_loop_reference(encoding: str) -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config(positional_encoding=encoding)))
    converted = to_conv2d_stem(model)
    assert all(block.attention.once_per_sequence for block in converted.blocks)
    assert not any(block.attention.once_per_sequence for block in model.blocks)
    stamps, band_ids, times = example_inputs(model.config, 4)
    band_ids = with_padding(band_ids, [18, 7, 1, 0])
    with torch.no_grad():
        expected = loop_forward(model, stamps, band_ids, times)
        torch.testing.assert_close(converted(stamps, band_ids, times), expected, atol=1e-5, rtol=1e-5)


def test_the_trained_form_has_the_gradients_of_the_model_as_built() -> None:
    """Attention once per sequence, time-stacked stem (what train.fit trains): same loss, gradients, statistics."""
    torch.manual_seed(0)
    pairs = randomise_norms(ConvEntion(tiny_config())).double().train()  # float64: rounding far below the tolerance
    once = training_form(copy.deepcopy(pairs))
    assert all(block.attention.once_per_sequence for block in once.blocks)
    assert once.stem.time_stacked and not pairs.stem.time_stacked
    assert once.state_dict().keys() == pairs.state_dict().keys()
    stamps, band_ids, times = example_inputs(pairs.config, 4)
    stamps, times = stamps.double(), times.double()
    band_ids = with_padding(band_ids, [18, 7, 1, 0])
    labels = torch.tensor([0, 1, 2, 1])
    losses = []
    for model in (pairs, once):
        torch.manual_seed(3)  # the same dropout masks
        losses.append(torch.nn.functional.cross_entropy(model(stamps, band_ids, times), labels))
        losses[-1].backward()
    torch.testing.assert_close(losses[1], losses[0], atol=1e-6, rtol=1e-6)
    d = pairs.config.d_model
    for (name, a), (_, b) in zip(pairs.named_parameters(), once.named_parameters(), strict=True):
        expected, actual = a.grad, b.grad
        assert actual is not None, name
        if name.endswith("attention.logits.bias"):  # cancels in the softmax: zero up to rounding
            expected = torch.zeros_like(actual)
        if name.endswith(("attention.qkv.weight", "attention.qkv.bias")):  # the Q rows: exactly zero
            assert not actual[:d].any()
            torch.testing.assert_close(expected[:d], torch.zeros_like(expected[:d]), atol=1e-6, rtol=0)
            expected, actual = expected[d:], actual[d:]
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4, msg=name)
    for (name, a), (_, b) in zip(pairs.named_buffers(), once.named_buffers(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=name)


def test_conv2d_stem_skips_the_time_padding_of_the_paper_stem(paper_model: ConvEntion) -> None:
    stages = {stage.name: stage.macs for stage in measure(to_conv2d_stem(paper_model)).stages}
    specified = {stage.name: stage.macs for stage in measure(paper_model).stages}
    windows = 33
    # Real time taps only: conv1 reads 1, 3, 1 input steps; conv2 1, 2, 3, 2, 1; conv3 3 per output step.
    assert stages["stem.conv1"] == windows * 64 * 13 * 13 * 2 * 11 * 11 * (1 + 3 + 1)
    assert stages["stem.conv2"] == windows * 128 * 13 * 13 * 64 * 5 * 5 * (1 + 2 + 3 + 2 + 1)
    assert stages["stem.conv3"] == windows * 64 * 11 * 11 * 128 * 3 * 3 * 3 * 3
    assert stages["stem.conv4"] == specified["stem.conv4"]
    # The compact stem's first layer would save only 2 of 9 taps: it stays one banded Conv2d.
    compact = to_conv2d_stem(build_model("compact"))
    assert [len(layer.groups) for layer in compact.stem.layers] == [1, 1, 1]


def test_conv2d_stem_with_output_steps_on_the_time_padding_only() -> None:
    config = tiny_config(stem=(
        StemLayer(channels=4, kernel=3, stride=2, padding=1, time_kernel=1, time_padding=2),  # 3 -> 7 steps
        StemLayer(channels=4, kernel=3, time_kernel=7),
    ))
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(config))
    frames = model.frames(*example_inputs(config, 2)[:2])
    converted = model.stem.to_conv2d()
    assert converted.layers[0].spans == [(0, 1), (0, 1), (0, 1), (1, 2), (2, 3), (2, 3), (2, 3)]
    with torch.no_grad():
        torch.testing.assert_close(converted(frames), model.stem(frames), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [tiny_config, lambda: get_preset("compact")])
def test_summary_counts_what_the_exported_copy_executes(make) -> None:
    model = to_conv2d_stem(ConvEntion(make()))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*example_inputs(model.config, 1))
    config = model.config
    side = config.map_size
    # The weighted sum over the N keys is an elementwise product and a sum, which the counter skips.
    weighted_sums = config.layers * config.n_positions * config.d_model * side * side
    cost = measure(model)
    assert cost.macs == counter.get_total_flops() // 2 + weighted_sums
    n, d, maps, kernel = config.n_positions, config.d_model, side * side, config.logit_kernel**2
    # K and V projections, key logits, weighted sum over the keys, one merge per sequence.
    once = n * 2 * d * maps * d + n * config.heads * maps * d * kernel + n * d * maps + d * maps * d * 9
    assert {stage.name: stage.macs for stage in cost.stages}["layer1.attention"] == once


# --- the band-separation ablation: zero-filled multi-band frames per night ----------------

def loop_stack_by_night(stamps: np.ndarray, band_ids: np.ndarray, times: np.ndarray, n_bands: int):
    """Per-object loop reference of :func:`stack_bands_by_night`."""
    batch, length = band_ids.shape
    out = np.zeros((batch, length, n_bands, *stamps.shape[2:]))
    present = np.zeros((batch, length), dtype=np.int64)
    first = np.zeros((batch, length))
    for b in range(batch):
        nights: list[list[int]] = []
        for m in range(length):
            if band_ids[b, m] == 0:
                continue
            if not nights or times[b, m] - times[b, nights[-1][-1]] > 0.5:
                nights.append([])
            nights[-1].append(m)
        for step, frames in enumerate(nights):
            present[b, step] = 1
            first[b, step] = min(times[b, m] for m in frames)
            for band in range(1, n_bands + 1):
                chosen = [m for m in frames if band_ids[b, m] == band]
                if chosen:
                    out[b, step, band - 1] = np.mean(stamps[b, chosen], axis=0)
    return out, present, first


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 3), length=st.integers(1, 12))
def test_stacking_by_night_matches_a_loop(seed: int, batch: int, length: int) -> None:
    from train.model.convention import stack_bands_by_night

    rng = np.random.default_rng(seed)
    n_real = rng.integers(0, length + 1, size=batch)
    band_ids = np.zeros((batch, length), dtype=np.int64)
    times = np.zeros((batch, length), dtype=np.float32)
    for b in range(batch):
        band_ids[b, :n_real[b]] = rng.integers(1, 4, size=n_real[b])
        # same-night gaps (< 0.5 d) and new nights (> 0.5 d), in time order
        gaps = np.where(rng.random(n_real[b]) < 0.5, rng.uniform(0.0, 0.3, n_real[b]), rng.uniform(0.7, 5, n_real[b]))
        times[b, :n_real[b]] = np.cumsum(gaps) - gaps[0] if n_real[b] else []
    stamps = rng.normal(size=(batch, length, 2, 2)).astype(np.float32)
    got = stack_bands_by_night(torch.from_numpy(stamps), torch.from_numpy(band_ids), torch.from_numpy(times), 3)
    expected = loop_stack_by_night(stamps, band_ids, times, 3)
    np.testing.assert_allclose(got[0].numpy(), expected[0], atol=1e-6)
    np.testing.assert_array_equal(got[1].numpy(), expected[1])
    np.testing.assert_allclose(got[2].numpy(), expected[2], atol=1e-6)


def test_stacked_band_input_model_trains_on_band_separated_inputs() -> None:
    config = tiny_config(band_input="stacked", band_embedding=False)
    model = ConvEntion(config)
    assert model.band_embedding is None and config.frame_channels == config.n_band_ids - 1
    stamps, band_ids, times = example_inputs(config, 3, seed=2)
    logits = model(stamps, band_ids, times)
    assert logits.shape == (3, len(config.classes))
    logits.sum().backward()
    assert next(model.stem.parameters()).grad.abs().sum() > 0


def test_stacking_treats_half_a_day_as_the_same_night() -> None:
    from train.model.convention import stack_bands_by_night

    stamps = torch.arange(4, dtype=torch.float32).reshape(1, 4, 1, 1).expand(1, 4, 2, 2).contiguous()
    band_ids = torch.tensor([[1, 2, 1, 0]])
    times = torch.tensor([[0.0, 0.5, 1.0001, 0.0]])  # 0.5 d apart: same night; 0.5001 d: the next
    stacked, present, first = stack_bands_by_night(stamps, band_ids, times, 2)
    assert present.tolist() == [[1, 1, 0, 0]]
    assert first[0].tolist() == pytest.approx([0.0, 1.0001, 0.0, 0.0])
    assert stacked[0, :2, :, 0, 0].tolist() == [[0.0, 1.0], [2.0, 0.0]]


@pytest.mark.parametrize("encoding", ["sinusoidal", "time", "none"])
def test_stacked_model_costs_are_measured_and_padding_is_ignored(encoding: str) -> None:
    config = tiny_config(band_input="stacked", band_embedding=False, positional_encoding=encoding)
    assert measure(ConvEntion(config)).macs > 0  # shapes only (meta tensors): no data-dependent shapes
    model = randomise_norms(ConvEntion(config)).eval()
    stamps, band_ids, times = example_inputs(config, 2, seed=4)
    band_ids[:, 12:] = 0
    with torch.no_grad():
        reference = model(stamps, band_ids, times)
        stamps[:, 12:] = 1e3  # what padding holds must not matter
        times[:, 12:] = 0.0
        np.testing.assert_allclose(model(stamps, band_ids, times).numpy(), reference.numpy(), atol=1e-5)
