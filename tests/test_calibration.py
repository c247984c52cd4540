"""Temperature scaling and calibration measures against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")  # the train extra (scipy, torch)
from train.calibration import (  # noqa: E402
    choose_way,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability,
    tempered,
)

pytestmark = pytest.mark.torch


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_tempered_is_the_member_mean_at_one_and_the_tempered_softmax_otherwise() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 4)) * 3
    members = softmax(logits)
    np.testing.assert_allclose(tempered(members, 1.0), members.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(tempered(members, 2.5), softmax(logits / 2.5).mean(axis=0), rtol=1e-10)


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_at(true_temperature: float) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(20_000, 4)) * 2
    truth = softmax(logits / true_temperature)
    labels = (truth.cumsum(axis=1) > rng.random((20_000, 1))).argmax(axis=1)
    fitted = fit_temperature(softmax(logits)[None], labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    at_fit = negative_log_likelihood(tempered(softmax(logits)[None], fitted), labels)
    assert at_fit < negative_log_likelihood(softmax(logits), labels) - 0.01


def test_expected_calibration_error_by_hand() -> None:
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    labels = np.array([0, 1, 1, 0])
    table = reliability(probabilities, labels, bins=10)
    assert table["count"][8] == 2 and table["count"][5] == 2 and sum(table["count"]) == 4
    assert table["accuracy"][8] == pytest.approx(0.5) and table["confidence"][8] == pytest.approx(0.9)
    assert table["accuracy"][5] == pytest.approx(1.0) and table["confidence"][5] == pytest.approx(0.6)
    assert table["accuracy"][0] is None and table["count"][0] == 0
    assert expected_calibration_error(probabilities, labels, bins=10) == pytest.approx((2 * 0.4 + 2 * 0.4) / 4)


def test_a_calibrated_predictor_has_a_small_error_and_an_overconfident_one_a_large_one() -> None:
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50_000, 3)) * 2
    truth = softmax(logits)
    labels = (truth.cumsum(axis=1) > rng.random((50_000, 1))).argmax(axis=1)
    assert expected_calibration_error(truth, labels) < 0.01
    assert expected_calibration_error(softmax(logits * 3), labels) > 0.1


def test_fit_temperature_needs_objects() -> None:
    with pytest.raises(ValueError, match="no objects"):
        fit_temperature(np.zeros((1, 0, 3)), np.zeros(0, dtype=int))


def test_a_way_is_chosen_only_when_it_lowers_both_the_log_likelihood_and_the_calibration_error() -> None:
    def fold(nll, ece, inner, other):
        return {"nll": nll, "ece": ece, "inner_validation": {"nll": inner[0], "ece": inner[1]},
                "other_folds": {"nll": other[0], "ece": other[1]}}

    assert choose_way([fold(0.40, 0.04, (0.41, 0.03), (0.39, 0.03))]) == "other_folds"
    assert choose_way([fold(0.40, 0.04, (0.38, 0.04), (0.39, 0.03))]) == "inner_validation"
    # the CNN + GRU case: a lower log-likelihood bought with a worse calibration error
    assert choose_way([fold(0.3642, 0.020, (0.37, 0.03), (0.3640, 0.025))]) == "none"
    assert choose_way([]) == "none"
