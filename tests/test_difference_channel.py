"""Tests of the difference channel (``difference_channel=True``) against a per-frame loop."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from helpers import assert_export_matches_pytorch, randomise_norms, tiny_config, with_padding  # noqa: E402
from train.model import ConvEntion, example_inputs, get_preset, measure, to_conv2d_stem  # noqa: E402
from train.model.convention import BandReference  # noqa: E402


pytestmark = pytest.mark.torch


def loop_difference(stamps: np.ndarray, band_ids: np.ndarray) -> np.ndarray:
    """Reference: each real frame minus the mean of its object's real frames in its band; 0 on padding."""
    out = np.zeros_like(stamps, dtype=np.float64)
    for row in range(stamps.shape[0]):
        for frame in range(stamps.shape[1]):
            band = band_ids[row, frame]
            if band == 0:
                continue
            same = [j for j in range(stamps.shape[1]) if band_ids[row, j] == band]
            out[row, frame] = stamps[row, frame] - np.mean([stamps[row, j] for j in same], axis=0, dtype=np.float64)
    return out


@settings(max_examples=40, deadline=None)
@given(
    band_ids=st.lists(st.lists(st.integers(0, 4), min_size=6, max_size=6), min_size=1, max_size=3),
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([1.0, 1e3]),
)
def test_band_reference_equals_the_per_frame_loop(band_ids: list[list[int]], seed: int, scale: float) -> None:
    ids = torch.tensor(band_ids, dtype=torch.int64)
    stamps = torch.randn(*ids.shape, 4, 4, generator=torch.Generator().manual_seed(seed)) * scale
    stamps = stamps * (ids != 0)[..., None, None]  # the model zeroes padding before the reference
    actual = BandReference(5)(stamps, ids).numpy()
    expected = loop_difference(stamps.numpy(), ids.numpy())
    np.testing.assert_allclose(actual, expected, atol=1e-5 * scale, rtol=1e-5)


def test_band_reference_stays_float32_under_bf16_autocast() -> None:
    """A bright host (1e4) with a faint change (1): bf16 would round the change away."""
    stamps = torch.full((1, 6, 2, 2), 1e4)
    stamps[0, 2] += 1.0
    ids = torch.tensor([[1, 1, 1, 1, 1, 1]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        difference = BandReference(2)(stamps, ids)
    assert difference.dtype == torch.float32
    np.testing.assert_allclose(difference[0, :, 0, 0].numpy(), [-1 / 6] * 2 + [5 / 6] + [-1 / 6] * 3, atol=1e-3)


def test_config_adds_one_stem_channel_and_refuses_stacked_or_multi_band_frames() -> None:
    config = replace(get_preset("compact"), difference_channel=True)
    assert config.frame_channels == get_preset("compact").frame_channels + 1
    model = ConvEntion(config)
    assert model.stem.layers[0].conv.weight.shape[1] == 3  # stamp, difference, band plane
    with pytest.raises(ValueError, match="difference_channel needs"):
        tiny_config(difference_channel=True, band_input="stacked", band_embedding=False)
    with pytest.raises(ValueError, match="difference_channel needs"):
        tiny_config(difference_channel=True, stamp_channels=3, band_embedding=False)


def test_summary_counts_the_reference_and_agrees_with_torch_flop_counter() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = ConvEntion(replace(get_preset("compact"), difference_channel=True)).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*example_inputs(model.config, 1))
    cost = measure(model)
    assert cost.macs == counter.get_total_flops() // 2
    assert dict((s.name, s.macs) for s in cost.stages)["band_reference"] == 2 * 99 * 32 * 32 * 9


def test_padding_content_and_sequence_cuts_leave_the_logits_unchanged() -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(tiny_config(difference_channel=True))).eval()
    config = model.config
    stamps, band_ids, times = example_inputs(config, 2, seed=5)
    window = config.stem_window
    band_ids = with_padding(band_ids, [window + 1, 2 * window])
    noisy = stamps.masked_fill((band_ids == 0)[..., None, None], 77.0)
    with torch.no_grad():
        padded = model(stamps, band_ids, times)
        torch.testing.assert_close(model(noisy, band_ids, times), padded)
        cut = 2 * window
        torch.testing.assert_close(model(stamps[:, :cut], band_ids[:, :cut], times[:, :cut]), padded,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(to_conv2d_stem(model)(stamps, band_ids, times), padded, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_exported_graph_reproduces_pytorch_at_every_length(tmp_path) -> None:
    config = tiny_config(difference_channel=True)
    window = config.stem_window
    assert_export_matches_pytorch(config, tmp_path / "diff", [1, window + 2, 3 * window], seed=6)
