"""Tests of the static-scene branch (``scene_summary=S``): per-band coadds through a small CNN."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from helpers import (  # noqa: E402
    assert_cost_is_the_flop_counters,
    assert_export_matches_pytorch,
    assert_logits_follow_real_frames_only,
    randomise_norms,
    tiny_config,
    with_padding,
)
from train.model import ConvEntion, example_inputs, get_preset, measure  # noqa: E402
from train.model.convention import SceneSummary  # noqa: E402

pytestmark = pytest.mark.torch


def coadds_by_loop(stamps: np.ndarray, band_ids: np.ndarray, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy reference: the mean stamp of each band's real frames, and the share of frames per band."""
    batch, _, height, width = stamps.shape
    means = np.zeros((batch, n_bands, height, width), np.float64)
    share = np.zeros((batch, n_bands), np.float64)
    for row in range(batch):
        real = band_ids[row] != 0
        for band in range(1, n_bands + 1):
            chosen = band_ids[row] == band
            if chosen.any():
                means[row, band - 1] = stamps[row, chosen].mean(axis=0)
                share[row, band - 1] = chosen.sum() / real.sum()
    return means, share


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_features_equal_the_cnn_on_coadds_made_by_a_loop(seed: int) -> None:
    torch.manual_seed(seed)
    config = tiny_config(scene_summary=5)
    scene = SceneSummary(config).eval()
    stamps, band_ids, _ = example_inputs(config, 3, seed=seed)
    band_ids = with_padding(band_ids, [1, 7, config.seq_len])
    stamps = stamps * (band_ids != 0)[:, :, None, None]
    means, share = coadds_by_loop(stamps.numpy(), band_ids.numpy(), config.n_band_ids - 1)
    with torch.no_grad():
        features = scene.convolutions(torch.from_numpy(means).float()).flatten(1)
        expected = torch.tanh(scene.project(torch.cat([features, torch.from_numpy(share).float()], dim=1)))
        torch.testing.assert_close(scene(stamps, band_ids), expected, atol=1e-5, rtol=1e-5)


def test_scene_features_ignore_frame_order_and_padding_content() -> None:
    torch.manual_seed(0)
    config = tiny_config(scene_summary=4)
    scene = SceneSummary(config).eval()
    stamps, band_ids, _ = example_inputs(config, 2, seed=3)
    band_ids = with_padding(band_ids, [5, config.seq_len])
    order = torch.randperm(config.seq_len)
    zeroed = stamps * (band_ids != 0)[:, :, None, None]
    with torch.no_grad():
        reference = scene(zeroed, band_ids)
        torch.testing.assert_close(scene(zeroed[:, order], band_ids[:, order]), reference, atol=1e-5, rtol=1e-5)


def test_an_object_without_frames_gets_finite_features() -> None:
    config = tiny_config(scene_summary=3)
    scene = SceneSummary(config).eval()
    stamps = torch.zeros(1, config.seq_len, config.stamp_size, config.stamp_size)
    band_ids = torch.zeros(1, config.seq_len, dtype=torch.int64)
    with torch.no_grad():
        assert torch.isfinite(scene(stamps, band_ids)).all()


@pytest.mark.parametrize("make", [lambda: tiny_config(scene_summary=4, recency_summary=3, difference_channel=True),
                                  lambda: tiny_config(scene_summary=4),
                                  lambda: replace(get_preset("broker"), scene_summary=32)])
def test_cut_sequences_the_loop_and_the_exported_copy_give_the_same_logits(make) -> None:
    torch.manual_seed(0)
    assert_logits_follow_real_frames_only(randomise_norms(ConvEntion(make())))


def test_a_steady_host_changes_the_scene_features() -> None:
    torch.manual_seed(0)
    config = tiny_config(scene_summary=4)
    model = randomise_norms(ConvEntion(config)).eval()
    stamps, band_ids, times = example_inputs(config, 1, seed=4)
    with torch.no_grad():
        before = model.scene(stamps * (band_ids != 0)[:, :, None, None], band_ids)
        host = torch.zeros_like(stamps)
        host[..., 2:6, 2:6] = 3.0
        after = model.scene((stamps + host) * (band_ids != 0)[:, :, None, None], band_ids)
    assert not torch.allclose(before, after, atol=1e-4)


def test_broker_with_a_scene_branch_fits_three_members_in_a_quarter_gmac() -> None:
    model = ConvEntion(replace(get_preset("broker"), scene_summary=32))
    assert 3 * assert_cost_is_the_flop_counters(model) <= 250_000_000
    assert "scene" in {s.name for s in measure(model).stages}


@pytest.mark.parametrize("changes", [{"scene_summary": -1}, {"scene_summary": 4, "stamp_size": 10},
                                     {"scene_summary": 4, "band_input": "stacked", "band_embedding": False}])
def test_bad_scene_settings_are_refused(changes: dict) -> None:
    with pytest.raises(ValueError, match="scene_summary"):
        replace(tiny_config(), **changes)


@pytest.mark.slow
def test_exported_graph_reproduces_pytorch_at_every_length(tmp_path) -> None:
    config = tiny_config(scene_summary=4, recency_summary=3, difference_channel=True, norm_affine="channel")
    assert_export_matches_pytorch(config, tmp_path / "scene", [2, config.stem_window + 1, 4 * config.stem_window],
                                  seed=7)
