"""Shared fixtures: tiny seeded catalogs, valid and deliberately broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.catalog import FORMAT_NAME, FORMAT_VERSION, CatalogWriter
from convention_rt.photometry import Photometry

BANDS = ("g", "r", "i")
#: What the stamps of the test catalogs are said to be: the shipped models' domain.
PHOTOMETRY = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="FLUXCAL", sky_subtracted=True,
                        stamp_kind="science")


def write_small_catalog(path: Path, *, n_objects: int = 6, epochs: int = 5, seed: int = 0,
                        stamp_shape: tuple[int, int] = (32, 32)) -> Path:
    """A valid FRAMES catalog with labelled objects and time-shuffled epochs."""
    rng = np.random.default_rng(seed)
    classes = ["AGN", "SNIa", "SNOther", "Variable"]
    with CatalogWriter(path, BANDS, photometry=PHOTOMETRY, stamp_shape=stamp_shape,
                       header={"SOURCE": "tests"}) as writer:
        for k in range(n_objects):
            writer.add_object(
                100 + k,
                mjd=rng.permutation(np.arange(epochs) * 1.5 + 59000.0),
                stamps=rng.normal(50.0, 5.0, size=(epochs, *stamp_shape)),
                bands=[BANDS[j % 3] for j in range(epochs)],
                ra=10.0 + k, dec=-5.0, label=classes[k % 4], typing="spec" if k % 2 else "phot",
            )
    return path


def write_raw_catalog(path: Path, objects: list[fits.Column], epochs: list[fits.Column], *,
                      epochs_header: dict | None = None, primary_header: dict | None = None,
                      with_objects: bool = True, with_epochs: bool = True,
                      photometry: Photometry | None = PHOTOMETRY) -> Path:
    """Write arbitrary OBJECTS/EPOCHS tables (for malformed-file tests), declaring ``photometry`` (None: nothing)."""
    primary = fits.PrimaryHDU()
    primary.header["CRTFMT"] = FORMAT_NAME
    primary.header["CRTVER"] = FORMAT_VERSION
    for key, (value, comment) in (photometry.header() if photometry is not None else {}).items():
        primary.header[key] = (value, comment)
    for key, value in (primary_header or {}).items():
        primary.header[key] = value
    hdus = [primary]
    if with_epochs:
        table = fits.BinTableHDU.from_columns(epochs, name="EPOCHS")
        table.header["LAYOUT"] = "FRAMES"
        table.header["BANDS"] = ",".join(BANDS)
        for key, value in (epochs_header or {}).items():
            table.header[key] = value
        hdus.append(table)
    if with_objects:
        hdus.append(fits.BinTableHDU.from_columns(objects, name="OBJECTS"))
    fits.HDUList(hdus).writeto(path)
    return path


def frame_columns(ids, mjd, bands, stamps, *, stamp_format: str | None = None,
                  mjd_format: str = "D") -> list[fits.Column]:
    stamps = np.asarray(stamps)
    height, width = stamps.shape[1:]
    return [
        fits.Column("OBJECT_ID", "K", array=np.asarray(ids, dtype=np.int64)),
        fits.Column("MJD", mjd_format, array=np.asarray(mjd)),
        fits.Column("BAND", "8A", array=np.asarray(bands)),
        fits.Column("STAMP", stamp_format or f"{height * width}E", dim=f"({width},{height})", array=stamps),
    ]


def object_columns(ids, first, count) -> list[fits.Column]:
    n = len(ids)
    return [
        fits.Column("OBJECT_ID", "K", array=np.asarray(ids, dtype=np.int64)),
        fits.Column("RA", "D", array=np.zeros(n)),
        fits.Column("DEC", "D", array=np.zeros(n)),
        fits.Column("FIRST_EPOCH", "K", array=np.asarray(first, dtype=np.int64)),
        fits.Column("N_EPOCHS", "K", array=np.asarray(count, dtype=np.int64)),
    ]


@pytest.fixture
def small_catalog(tmp_path: Path) -> Path:
    return write_small_catalog(tmp_path / "small.fits")


#: The tiny test models' domain: the test catalogs' photometry; never low information (min_frames 1,
#: no distance from uniform required), so that their statuses stay those of the data.
TINY_DOMAIN = dict(photometry=PHOTOMETRY, frames_range=(1, 6), min_frames=1, min_frames_rule="tests",
                   min_uniform_distance=0.0)


def tiny_card(**changes):
    from convention_rt.model_card import BandStats, Domain, ModelCard

    values = dict(name="tiny-test", version="0.0.1", preset="tiny", classes=("AGN", "SNIa"),
                  bands=("g", "r"), stamp_size=32, seq_len=6, stem_window=3,
                  normalisation={"g": BandStats(50.0, 5.0), "r": BandStats(40.0, 4.0)},
                  domain=Domain(**TINY_DOMAIN))
    values.update(changes)
    return ModelCard(**values)


def write_tiny_onnx(path: Path, *, seq_len: int = 6, stamp: int = 32, classes: int = 2,
                    input_names=("stamps", "band_ids", "times")) -> Path:
    """A small ONNX graph with the runtime's signature: softmax of a linear map of stamp means."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(seq_len, classes)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceMean", [input_names[0], "axes"], ["mean"], keepdims=0),
        helper.make_node("MatMul", ["mean", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("Unsqueeze", ["p", "one"], ["probabilities"]),
    ]
    inputs = [
        helper.make_tensor_value_info(input_names[0], TensorProto.FLOAT, ["n", seq_len, stamp, stamp]),
        helper.make_tensor_value_info(input_names[1], TensorProto.INT64, ["n", seq_len]),
        helper.make_tensor_value_info(input_names[2], TensorProto.FLOAT, ["n", seq_len]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", inputs,
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 1, classes])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.array([2, 3]), "axes"),
         numpy_helper.from_array(np.array([1]), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture
def tiny_model(tmp_path: Path):
    """(model path, card) with card.json written beside the model, checksum included."""
    from dataclasses import replace

    from convention_rt.model_card import sha256_of

    model = write_tiny_onnx(tmp_path / "model.onnx")
    card = replace(tiny_card(), sha256=sha256_of(model))
    (tmp_path / "card.json").write_text(card.to_json())
    return model, card
