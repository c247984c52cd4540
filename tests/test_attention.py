"""Tests of the query-dependent attention (``attention="dot"``) against a per-pair loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from train.model import ConvEntion, build_model, example_inputs, get_preset, measure, to_conv2d_stem  # noqa: E402
from train.model.attention import ConvAttention, ConvDotAttention  # noqa: E402

pytestmark = pytest.mark.torch


def loop_dot_attention(attention: ConvDotAttention, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The dot-product attention written out pixel by pixel, pair by pair and head by head."""
    batch, n, d, h, w = x.shape
    heads = attention.heads
    group = d // heads
    out = torch.zeros_like(x)
    for b in range(batch):
        q, k, v = attention.qkv(x[b]).chunk(3, dim=1)  # (N, D, h, w)
        q = attention.query(q)
        mixed = torch.zeros(n, d, h, w)
        for t in range(heads):
            channels = slice(t * group, (t + 1) * group)
            for i in range(h):
                for j in range(w):
                    for query in range(n):
                        logits = torch.stack([
                            (q[query, channels, i, j] * k[key, channels, i, j]).sum() / math.sqrt(group)
                            if valid[b, key] else torch.tensor(-math.inf)
                            for key in range(n)
                        ])
                        if not valid[b].any():
                            logits = torch.zeros(n)
                        weights = logits.softmax(dim=0)
                        mixed[query, channels, i, j] = (weights[:, None] * v[:, channels, i, j]).sum(dim=0)
        out[b] = attention.merge(mixed)
    return out


@settings(max_examples=15, deadline=None)
@given(
    valid=st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=2),
    kernel=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
)
def test_dot_attention_equals_the_per_pair_loop(valid: list[list[bool]], kernel: int, seed: int) -> None:
    torch.manual_seed(seed)
    attention = ConvDotAttention(channels=4, heads=2, query_kernel=kernel)
    x = torch.randn(len(valid), 4, 4, 3, 3) * 2
    mask = torch.tensor(valid)
    with torch.no_grad():
        expected = loop_dot_attention(attention, x, mask)
        actual = attention(x, mask)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_dot_attention_depends_on_the_query_where_the_published_one_does_not() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 5, 5)
    valid = torch.ones(2, 6, dtype=torch.bool)
    with torch.no_grad():
        dot = ConvDotAttention(channels=8, heads=4)(x, valid)
        published = ConvAttention(channels=8, heads=4)(x, valid)
    spread = lambda y: (y - y[:, :1]).abs().amax().item()  # noqa: E731
    assert spread(published) < 1e-5
    assert spread(dot) > 1e-2


def test_dot_attention_refuses_an_even_query_kernel_and_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="odd"):
        ConvDotAttention(channels=4, heads=2, query_kernel=2)
    with pytest.raises(ValueError, match="divisible"):
        ConvDotAttention(channels=6, heads=4)


def test_config_selects_the_attention_and_refuses_unknown_kinds() -> None:
    config = replace(get_preset("compact"), attention="dot")
    model = ConvEntion(config)
    assert all(isinstance(block.attention, ConvDotAttention) for block in model.blocks)
    assert all(isinstance(block.attention, ConvAttention) for block in build_model("compact").blocks)
    with pytest.raises(ValueError, match="attention must be"):
        replace(get_preset("compact"), attention="additive")


def test_dot_attention_costs_what_the_summary_says() -> None:
    """The summary's count agrees with torch's flop counter, and the dot form stays at compact cost."""
    from torch.utils.flop_counter import FlopCounterMode

    model = ConvEntion(replace(get_preset("compact"), attention="dot")).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*example_inputs(model.config, 1))
    cost = measure(model)
    assert cost.macs == counter.get_total_flops() // 2
    published = measure(build_model("compact"))
    assert cost.macs < published.macs * 1.05


def test_exported_copy_of_a_dot_attention_model_is_the_same_function() -> None:
    torch.manual_seed(0)
    model = ConvEntion(replace(get_preset("compact"), attention="dot")).eval()
    inputs = example_inputs(model.config, 2, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(to_conv2d_stem(model)(*inputs), model(*inputs), atol=1e-4, rtol=1e-4)
