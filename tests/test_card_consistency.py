"""A card.json that does not describe its model is refused, by the API and the command line.

Copies of a shipped model with edited cards: export embeds the card in the ONNX
metadata, and the card beside the model must agree with it on every field that
determines what the model computes, and with the model's declared output shape.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from convention_rt import Classifier
from convention_rt.cli import main
from convention_rt.data import sample_catalog_path
from convention_rt.errors import ModelError
from convention_rt.model_card import sha256_of
from convention_rt.registry import resolve_model
from convention_rt.session import ModelSession, load_card
from helpers import tiny_card, write_tiny_onnx

SHIPPED = resolve_model("convention-compact/1.1.0")


def copy_with_card(tmp_path: Path, edit) -> Path:
    """A copy of the shipped model whose card.json went through ``edit(dict)``; returns the folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(SHIPPED.model_path, folder / "model.onnx")
    card = json.loads(SHIPPED.card_path.read_text())
    edit(card)
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    return folder


def reverse_classes(card):
    card["classes"] = card["classes"][::-1]


def extra_band(card):
    card["bands"].append("w")
    card["normalisation"]["w"] = {"mean": 1.0, "std": 2.0}


def other_mean(card):
    card["normalisation"]["g"]["mean"] = 3.0


def other_std(card):
    card["normalisation"]["r"]["std"] = 10.0


def three_classes(card):
    card["classes"] = card["classes"][:3]


def five_classes(card):
    card["classes"] = [*card["classes"], "KN"]


def shorter_sequence(card):
    card["seq_len"] = 96


def time_encoding(card):
    card["time_encoding"] = True


def other_order(card):
    card["bands"] = ["g", "u", "r", "i", "z", "y"]


# (edit, field named in the error, the card's value, the model's value), as they appear in the message
MISMATCHES = [
    (reverse_classes, "classes", "['Variable', 'SNOther', 'SNIa', 'AGN']", "['AGN', 'SNIa', 'SNOther', 'Variable']"),
    (extra_band, "bands", "['u', 'g', 'r', 'i', 'z', 'y', 'w']", "['u', 'g', 'r', 'i', 'z', 'y']"),
    (other_mean, "normalisation.g.mean", "3.0", "2.4130140985099735"),
    (other_std, "normalisation.r.std", "10.0", "48.91830781028379"),
    (three_classes, "classes", "['AGN', 'SNIa', 'SNOther']", "['AGN', 'SNIa', 'SNOther', 'Variable']"),
    (five_classes, "classes", "['AGN', 'SNIa', 'SNOther', 'Variable', 'KN']",
     "['AGN', 'SNIa', 'SNOther', 'Variable']"),
    (shorter_sequence, "seq_len", "96", "99"),
    (time_encoding, "time_encoding", "True", "False"),
    (other_order, "bands", "['g', 'u', 'r', 'i', 'z', 'y']", "['u', 'g', 'r', 'i', 'z', 'y']"),
]
IDS = [m[0].__name__ for m in MISMATCHES]


@pytest.mark.parametrize(("edit", "field", "card_value", "model_value"), MISMATCHES, ids=IDS)
def test_a_card_that_disagrees_with_the_model_is_refused(tmp_path, edit, field, card_value, model_value):
    folder = copy_with_card(tmp_path, edit)
    for load in (lambda: Classifier(folder, device="cpu", threads=1),
                 lambda: load_card(folder / "model.onnx")):
        with pytest.raises(ModelError) as caught:
            load()
        message = str(caught.value)
        assert message.startswith(f"{folder / 'card.json'}: does not describe the model")
        assert f"{field}: card {card_value}, model {model_value}" in message
        assert "\n" not in message


@pytest.mark.parametrize(("edit", "field", "card_value", "model_value"), MISMATCHES[:6], ids=IDS[:6])
def test_the_command_line_exits_3_with_one_line(capsys, tmp_path, edit, field, card_value, model_value):
    folder = copy_with_card(tmp_path, edit)
    out = tmp_path / "out.csv"
    code = main(["classify", str(sample_catalog_path()), "--model", str(folder), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("\n") == 1 and str(folder / "card.json") in err and f"{field}: card {card_value}" in err
    assert not out.exists()
    code = main(["info", str(folder)])
    err = capsys.readouterr().err
    assert code == 3 and f"{field}: card {card_value}" in err


def test_descriptive_fields_may_be_rewritten_and_the_outputs_stay_golden(tmp_path):
    def describe(card):
        card["metrics"] = {}
        card["provenance"] = {"note": "rewritten"}
        card["version"] = "1.1.0-local"

    folder = copy_with_card(tmp_path, describe)
    copied = next(Classifier(folder, device="cpu", threads=1).predict_catalog(sample_catalog_path()))
    shipped = next(Classifier("convention-compact/1.1.0", device="cpu", threads=1)
                   .predict_catalog(sample_catalog_path()))
    np.testing.assert_array_equal(copied.probabilities, shipped.probabilities)
    assert copied.status == shipped.status


def test_without_card_json_the_embedded_card_is_used(tmp_path):
    folder = copy_with_card(tmp_path, lambda card: None)
    (folder / "card.json").unlink()
    session = ModelSession(folder / "model.onnx", device="cpu", threads=1)
    assert session.card.classes == SHIPPED.card().classes and session.card.sha256 == ""


def test_a_card_object_is_checked_too(tmp_path):
    card = replace(SHIPPED.card(), classes=("A", "B", "C", "D"))
    with pytest.raises(ModelError, match=r"the model card given: does not describe the model .*classes: card "
                                         r"\['A', 'B', 'C', 'D'\]"):
        ModelSession(SHIPPED.model_path, card=card, device="cpu")


@pytest.mark.parametrize(("changes", "field"), [
    ({"classes": ("AGN", "SNIa", "SNOther")}, r"classes: card \['AGN', 'SNIa', 'SNOther'\] \(3\), model outputs 2"),
    ({"members": 3}, "members: card 3, model 1"),
])
def test_without_an_embedded_card_the_output_shape_is_checked(tmp_path, changes, field):
    model = write_tiny_onnx(tmp_path / "model.onnx")  # no card in its metadata, output (n, 1, 2)
    card = replace(tiny_card(**changes), sha256=sha256_of(model))
    (tmp_path / "card.json").write_text(card.to_json())
    with pytest.raises(ModelError, match=rf"card.json: does not describe the model .*{field}"):
        ModelSession(model, device="cpu")
    with pytest.raises(ModelError, match=field):
        load_card(model)
