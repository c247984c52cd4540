"""The model card: validation and JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convention_rt.errors import ModelError
from convention_rt.model_card import BandStats, ModelCard, sha256_of


def make_card(**changes) -> ModelCard:
    values = dict(
        name="convention-test", version="0.0.1", preset="tiny", classes=("AGN", "SNIa"),
        bands=("g", "r"), stamp_size=32, seq_len=6, stem_window=3,
        normalisation={"g": BandStats(10.0, 2.0), "r": BandStats(-1.0, 0.5)},
        metrics={"accuracy": 0.5}, provenance={"data": "tests"},
    )
    values.update(changes)
    return ModelCard(**values)


def test_json_round_trip(tmp_path):
    card = make_card()
    path = tmp_path / "card.json"
    path.write_text(card.to_json())
    assert ModelCard.load(path) == card


def test_band_ids_and_stats_arrays_follow_the_band_order():
    card = make_card()
    assert card.band_id("g") == 1 and card.band_id("r") == 2 and card.band_id("u") == 0
    mean, std = card.stats_arrays()
    np.testing.assert_array_equal(mean, [0.0, 10.0, -1.0])
    np.testing.assert_array_equal(std, [1.0, 2.0, 0.5])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": ("AGN",)}, "at least two distinct"),
        ({"bands": ("g", "g")}, "distinct names"),
        ({"seq_len": 7}, "not a multiple of stem_window"),
        ({"normalisation": {"g": BandStats(0.0, 1.0)}}, "cover exactly the bands"),
        ({"normalisation": {"g": BandStats(0.0, 0.0), "r": BandStats(0.0, 1.0)}}, "std positive"),
        ({"window": "random"}, "not supported"),
        ({"format_version": 9}, "card format 9"),
    ],
)
def test_invalid_cards_are_refused(changes, message):
    with pytest.raises(ModelError, match=message):
        make_card(**changes)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["normalisation"]["g"].update(std=float("nan")), r"band 'g': mean must be finite and std positive"),
    (lambda d: d["normalisation"]["g"].update(std=0.0), r"band 'g': mean must be finite and std positive"),
    (lambda d: d.update(seq_len=7), "seq_len 7 is not a multiple of stem_window"),
    (lambda d: d.update(stem_window=0), "stamp_size, seq_len and stem_window must be positive"),
    (lambda d: d.update(window="random"), "window 'random' is not supported"),
])
def test_a_card_file_with_an_invalid_field_names_the_file_and_the_field(tmp_path, change, message):
    data = make_card().to_dict()
    change(data)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=rf"^{path}: not a valid model card: model card '.*': {message}"):
        ModelCard.load(path)


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match="card.json: model card is not valid JSON"):
        ModelCard.load(path)
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="card.json: not a valid model card"):
        ModelCard.load(path)


def test_sha256_of_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc")
    assert sha256_of(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_model_differences_name_the_fields_that_change_what_the_model_computes():
    card = make_card()
    assert card.model_differences(make_card(metrics={}, provenance={}, version="9.9.9", sha256="ab")) == []
    assert card.model_differences(make_card(normalisation={"g": BandStats(10.0 * (1 + 1e-12), 2.0),
                                                           "r": BandStats(-1.0, 0.5)})) == []  # JSON rounding
    other = make_card(classes=("SNIa", "AGN"), seq_len=9, members=2,
                      normalisation={"g": BandStats(10.0, 2.5), "r": BandStats(-1.0, 0.5)})
    assert card.model_differences(other) == [
        ("classes", ["AGN", "SNIa"], ["SNIa", "AGN"]), ("normalisation.g.std", 2.0, 2.5),
        ("seq_len", 6, 9), ("members", 1, 2)]
    more = make_card(bands=("g", "r", "i"), normalisation={**card.normalisation, "i": BandStats(0.0, 1.0)})
    assert card.model_differences(more) == [("bands", ["g", "r"], ["g", "r", "i"]),
                                            ("normalisation.i.mean", None, 0.0), ("normalisation.i.std", None, 1.0)]
