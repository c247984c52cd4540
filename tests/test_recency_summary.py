"""Tests of the recency summary (``recency_summary=R``) and of the broker preset that uses it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from helpers import (  # noqa: E402
    assert_cost_is_the_flop_counters,
    assert_export_matches_pytorch,
    assert_logits_follow_real_frames_only,
    randomise_norms,
    tiny_config,
)
from train.model import ConvEntion, example_inputs, get_preset, measure  # noqa: E402
from train.model.convention import RecencySummary  # noqa: E402

pytestmark = pytest.mark.torch


def test_summary_equals_the_per_object_weighted_mean_of_its_valid_windows() -> None:
    torch.manual_seed(0)
    config = tiny_config(recency_summary=5)
    summary = RecencySummary(config).eval()
    x = torch.randn(3, 6, config.d_model, 2, 2)
    times = torch.cumsum(torch.rand(3, 6) * 10.0, dim=1)
    valid = torch.tensor([[True] * 6, [True, True, False, False, False, False], [False] * 6])
    with torch.no_grad():
        actual = summary(x, times, valid)
        for row, count in enumerate(valid.sum(dim=1).tolist()):
            if count == 0:
                torch.testing.assert_close(actual[row], torch.zeros(5))
                continue
            expected = torch.zeros(5)
            for r in range(5):
                scale = float(torch.exp(summary.log_scale[r]))
                numerator = denominator = 0.0
                for n in range(count):
                    gap = float(times[row, n] - times[row, n - 1]) if n else 0.0
                    step = torch.cat([x[row, n].mean(dim=(1, 2)), x[row, n].amax(dim=(1, 2)),
                                      torch.tensor([math.log1p(gap)])])
                    value = float(torch.tanh(summary.project(step))[r])
                    weight = math.exp(-float(times[row, count - 1] - times[row, n]) / scale)
                    numerator += weight * value
                    denominator += weight
                expected[r] = numerator / denominator
            torch.testing.assert_close(actual[row], expected, atol=1e-5, rtol=1e-5)


def test_window_order_changes_the_logits_with_a_recency_summary_only() -> None:
    """Without it (no positional encoding, norms per channel) the published attention and the max ignore the order."""
    torch.manual_seed(0)
    for width, changes in ((0, False), (6, True)):
        model = randomise_norms(ConvEntion(tiny_config(recency_summary=width, positional_encoding="none",
                                                          norm_affine="channel")))
        stamps, band_ids, times = example_inputs(model.config, 2, seed=1)
        window = model.config.stem_window
        order = torch.arange(stamps.shape[1]).unflatten(0, (-1, window)).flip(0).flatten()
        with torch.no_grad():
            forward = model(stamps, band_ids, times)
            backward = model(stamps[:, order], band_ids[:, order], times[:, order])
        assert (not torch.allclose(forward, backward, atol=1e-5)) is changes


@pytest.mark.parametrize("make", [lambda: tiny_config(recency_summary=4, difference_channel=True),
                                  lambda: get_preset("broker")])
def test_cut_sequences_padding_and_the_exported_copy_give_the_same_logits(make) -> None:
    torch.manual_seed(0)
    assert_logits_follow_real_frames_only(randomise_norms(ConvEntion(make())))


def test_broker_preset_fits_three_members_in_a_quarter_gmac() -> None:
    model = ConvEntion(get_preset("broker"))
    assert 3 * assert_cost_is_the_flop_counters(model) <= 250_000_000
    assert {s.name for s in measure(model).stages} >= {"band_reference", "recency"}


def test_negative_width_is_refused() -> None:
    with pytest.raises(ValueError, match="recency_summary must be"):
        replace(tiny_config(), recency_summary=-1)


@pytest.mark.slow
def test_exported_graph_reproduces_pytorch_at_every_length(tmp_path) -> None:
    config = tiny_config(recency_summary=4, difference_channel=True, norm_affine="channel")
    assert_export_matches_pytorch(config, tmp_path / "recency", [2, config.stem_window + 1, 4 * config.stem_window],
                                  seed=7)
