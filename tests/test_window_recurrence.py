"""Tests of the window recurrence (``window_recurrence=R``) and of the broker preset that uses it."""

from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from test_model import randomise_norms, tiny_config, with_padding  # noqa: E402
from train.model import ConvEntion, example_inputs, get_preset, measure, to_conv2d_stem  # noqa: E402
from train.model.convention import WindowRecurrence  # noqa: E402

pytestmark = pytest.mark.torch


def test_state_is_the_gru_run_over_each_sequence_s_valid_windows_alone() -> None:
    torch.manual_seed(0)
    config = tiny_config(window_recurrence=5)
    recurrence = WindowRecurrence(config).eval()
    x = torch.randn(3, 6, config.d_model, 2, 2)
    times = torch.cumsum(torch.rand(3, 6) * 10.0, dim=1)
    valid = torch.tensor([[True] * 6, [True, True, False, False, False, False], [False] * 6])
    with torch.no_grad():
        state = recurrence(x, times, valid)
        for row, count in enumerate(valid.sum(dim=1).tolist()):
            if count == 0:
                torch.testing.assert_close(state[row], torch.zeros(5))
                continue
            gap = torch.diff(times[row, :count], prepend=times[row, :1])
            steps = torch.cat([x[row, :count].mean(dim=(2, 3)), x[row, :count].amax(dim=(2, 3)),
                               torch.log1p(gap).unsqueeze(-1)], dim=-1)
            _, final = recurrence.gru(steps.unsqueeze(0))
            torch.testing.assert_close(state[row], final[0, 0], atol=1e-6, rtol=1e-5)


def test_window_order_changes_the_logits_with_a_recurrence_only() -> None:
    """Without it (no positional encoding, norms per channel) the published attention and the max ignore the order."""
    torch.manual_seed(0)
    for width, changes in ((0, False), (6, True)):
        model = randomise_norms(ConvEntion(tiny_config(window_recurrence=width, positional_encoding="none",
                                                          norm_affine="channel")))
        stamps, band_ids, times = example_inputs(model.config, 2, seed=1)
        window = model.config.stem_window
        order = torch.arange(stamps.shape[1]).unflatten(0, (-1, window)).flip(0).flatten()
        with torch.no_grad():
            forward = model(stamps, band_ids, times)
            backward = model(stamps[:, order], band_ids[:, order], times[:, order])
        assert (not torch.allclose(forward, backward, atol=1e-5)) is changes


@pytest.mark.parametrize("make", [lambda: tiny_config(window_recurrence=4, difference_channel=True),
                                  lambda: get_preset("broker")])
def test_cut_sequences_padding_and_the_exported_copy_give_the_same_logits(make) -> None:
    torch.manual_seed(0)
    model = randomise_norms(ConvEntion(make()))
    config = model.config
    stamps, band_ids, times = example_inputs(config, 3, seed=2)
    window = config.stem_window
    real = [1, window + 1, 2 * window]
    band_ids = with_padding(band_ids, real)
    noisy_times = times.masked_fill(band_ids == 0, 1e6)
    with torch.no_grad():
        padded = model(stamps, band_ids, times)
        torch.testing.assert_close(model(stamps, band_ids, noisy_times), padded, atol=1e-5, rtol=1e-5)
        for row, count in enumerate(real):
            cut = -(-count // window) * window
            short = model(stamps[row:row + 1, :cut], band_ids[row:row + 1, :cut], times[row:row + 1, :cut])
            torch.testing.assert_close(short, padded[row:row + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(to_conv2d_stem(model)(stamps, band_ids, times), padded, atol=1e-4, rtol=1e-4)


def test_broker_preset_fits_three_members_in_a_quarter_gmac() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = ConvEntion(get_preset("broker")).eval()
    cost = measure(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*example_inputs(model.config, 1))
    assert cost.macs == counter.get_total_flops() // 2
    assert 3 * cost.macs <= 250_000_000
    assert {s.name for s in cost.stages} >= {"band_reference", "recurrence"}


def test_negative_width_is_refused() -> None:
    with pytest.raises(ValueError, match="window_recurrence must be"):
        replace(tiny_config(), window_recurrence=-1)
