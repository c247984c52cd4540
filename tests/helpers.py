"""What several test modules build: tiny seeded catalogs (valid and deliberately broken),
tiny models and their cards, the command line in-process, and stand-ins for the system.

Test modules import from here, never from one another; the fixtures built on these
live in ``conftest.py``.  This module imports only the runtime's dependencies: the
PyTorch helpers at the end import the train extra when called, so a module calls them
only after ``pytest.importorskip("torch")``.
"""

from __future__ import annotations

import copy
import errno
import gzip
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from astropy.io import fits

from convention_rt.catalog import FORMAT_NAME, FORMAT_VERSION
from convention_rt.catalog_writer import CatalogWriter
from convention_rt.photometry import Photometry

if TYPE_CHECKING:
    import torch

    from convention_rt.model_card import ModelCard
    from train.checkpoint import Checkpoint
    from train.model import ModelConfig

BANDS = ("g", "r", "i")
#: What the stamps of the test catalogs are said to be: the shipped models' domain.
PHOTOMETRY = Photometry(profile="lsst", pixel_scale=0.2, flux_unit="FLUXCAL", sky_subtracted=True,
                        stamp_kind="science")


# -- catalogs ------------------------------------------------------------------------------------------
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


def stamp_cols(n=1, side=32):
    return frame_columns(np.ones(n), np.arange(n, dtype=float), ["g"] * n,
                         np.zeros((n, side, side), np.float32))


#: (builder, expected message) of every malformed-file case, for the reader, ``validate``/``classify``
#: and ``spark-classify``.
BAD_FILES = [
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(), with_objects=False),
     "missing the OBJECTS HDU"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(), with_epochs=False),
     "missing the EPOCHS HDU"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1])[:4], stamp_cols()),
     "OBJECTS.N_EPOCHS: missing column"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols()[:3]),
     "EPOCHS.STAMP: missing column"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]),
                                 frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32)),
                                               stamp_format="1024D")),
     "EPOCHS.STAMP: must be float32"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]),
                                 frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.float32),
                                               mjd_format="E")),
     "EPOCHS.MJD: must be float64"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]),
                                 frame_columns([1], [0.0], ["g"], np.zeros((1, 32, 32), np.int16),
                                               stamp_format="1024I")),
     "EPOCHS.STAMP: must be float32"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(side=48)),
     "stamps are 48x48, the model needs 32x32 \\(use --stamp-policy crop\\)"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(side=20)),
     "stamps are 20x20, the model needs 32x32 \\(use --stamp-policy pad\\)"),
    (lambda p: write_raw_catalog(p, object_columns([], [], []), stamp_cols()),
     "OBJECTS: the catalog has no objects"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(),
                                 primary_header={"CRTVER": 99}), "format version 99"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(),
                                 epochs_header={"BANDS": ""}), "EPOCHS.BANDS: keyword BANDS"),
    (lambda p: write_raw_catalog(p, object_columns([1], [0], [1]), stamp_cols(),
                                 epochs_header={"LAYOUT": "MOVIE"}), "LAYOUT must be"),
    (lambda p: fits.HDUList([fits.PrimaryHDU()]).writeto(p), "not a convention-rt catalog"),
    (lambda p: Path(p).write_bytes(b"SIMPLE  = this is not FITS" * 200), "not a readable FITS file"),
    (lambda p: Path(p).write_bytes(b""), "not a readable FITS file"),
]


def problem_catalog(tmp_path: Path) -> Path:
    """Objects 1..7: ok, duplicate of 1, no epochs, rows out of range, rows of another
    object, unknown band only, and all-NaN stamps; plus an ok object with a few NaNs."""
    stamps = np.random.default_rng(0).normal(size=(9, 32, 32)).astype(np.float32)
    stamps[5] = np.nan
    stamps[6, :2, :] = np.inf
    epoch_ids = [1, 1, 5, 6, 6, 7, 8, 8, 8]
    bands = ["g", "r", "g", "g", "q", "r", "i", "i", "g"]
    objects = object_columns([1, 1, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 2, 4, 5, 6],
                             [2, 2, 0, 50, 2, 1, 1, 2])
    return write_raw_catalog(tmp_path / "problems.fits", objects,
                             frame_columns(epoch_ids, np.arange(9.0), bands, stamps))


def orphan_catalog(tmp_path: Path) -> Path:
    """Objects 1 (rows 0-1) and 2 (row 4); rows 2-3 (OBJECT_ID 9) and 5 (OBJECT_ID 2) belong to no object."""
    stamps = np.random.default_rng(1).normal(size=(6, 32, 32)).astype(np.float32)
    return write_raw_catalog(tmp_path / "orphans.fits", object_columns([1, 2], [0, 4], [2, 1]),
                             frame_columns([1, 1, 9, 9, 2, 2], np.arange(6.0), ["g"] * 6, stamps))


def rename_column(path: Path, old: str, new: str) -> Path:
    """Rename a column in place in the header bytes (astropy will not write duplicate names)."""
    data = path.read_bytes()
    before, after = f"'{old:<8}'".encode(), f"'{new:<8}'".encode()
    assert data.count(before) == 1 and len(before) == len(after)
    path.write_bytes(data.replace(before, after))
    return path


def stamp_data(image: np.ndarray) -> bytes:
    """A gzipped big-endian float32 FITS cut-out, as ZTF writes them."""
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.asarray(image, dtype=">f4")).writeto(buffer)
    return gzip.compress(buffer.getvalue())


# -- tiny models ---------------------------------------------------------------------------------------
#: The tiny test models' domain: the test catalogs' photometry; never low information (min_frames 1,
#: no distance from uniform required), so that their statuses stay those of the data.
TINY_DOMAIN = dict(photometry=PHOTOMETRY, frames_range=(1, 6), min_frames=1, min_frames_rule="tests",
                   min_uniform_distance=0.0)


def tiny_card(**changes) -> ModelCard:
    from convention_rt.model_card import BandStats, Domain, ModelCard

    values = dict(name="tiny-test", version="0.0.1", preset="tiny", classes=("AGN", "SNIa"),
                  bands=("g", "r"), stamp_size=32, seq_len=6, stem_window=3,
                  normalisation={"g": BandStats(50.0, 5.0), "r": BandStats(40.0, 4.0)},
                  domain=Domain(**TINY_DOMAIN))
    values.update(changes)
    return ModelCard(**values)


#: The tiny model of :func:`write_tiny_onnx`'s defaults, built once by it and kept, so that the
#: runtime's tests run where the ``onnx`` package is not installed (a runtime-only install).
TINY_ONNX = Path(__file__).parent / "data" / "tiny.onnx"


def write_tiny_onnx(path: Path, *, seq_len: int = 6, stamp: int = 32, classes: int = 2,
                    input_names=("stamps", "band_ids", "times")) -> Path:
    """A small ONNX graph with the runtime's signature: softmax of a linear map of stamp means.

    With the default arguments and without the ``onnx`` package, the kept copy
    :data:`TINY_ONNX` is written (``test_the_kept_tiny_model_is_what_the_builder_makes``
    checks it is the same bytes).
    """
    defaults = (seq_len, stamp, classes, tuple(input_names)) == (6, 32, 2, ("stamps", "band_ids", "times"))
    try:
        import onnx
    except ImportError:
        if not defaults:
            pytest.skip("the onnx package builds tiny models other than the kept one")
        path.write_bytes(TINY_ONNX.read_bytes())
        return path
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


# -- Rubin alert packets -------------------------------------------------------------------------------
#: The fields of the ``lsst-alert-packet`` schema (v11.1) that ingest reads, in a reduced schema declared
#: here rather than a copy of the package's schema files (GPL-3.0).
RUBIN_DIA_SOURCE = {
    "type": "record", "name": "diaSource", "namespace": "test.rubin",
    "fields": [
        {"name": "diaSourceId", "type": "long"},
        {"name": "diaObjectId", "type": ["null", "long"], "default": None},
        {"name": "midpointMjdTai", "type": "double"},
        {"name": "ra", "type": "double"},
        {"name": "dec", "type": "double"},
        {"name": "band", "type": ["null", "string"], "default": None},
    ],
}
RUBIN_CUTOUT_FIELDS = ("cutoutDifference", "cutoutScience", "cutoutTemplate")


def rubin_alert_schema(dia_source: dict) -> dict:
    return {
        "type": "record", "name": "alert", "namespace": "test.rubin",
        "fields": [
            {"name": "diaSourceId", "type": "long"},
            {"name": "diaSource", "type": dia_source},
            {"name": "prvDiaSources", "type": ["null", {"type": "array", "items": "test.rubin.diaSource"}],
             "default": None},
            *({"name": name, "type": ["null", "bytes"], "default": None} for name in RUBIN_CUTOUT_FIELDS),
        ],
    }


RUBIN_SCHEMA = rubin_alert_schema(RUBIN_DIA_SOURCE)


def ccd_cutout(image: np.ndarray, mask: np.ndarray | None = None) -> bytes:
    """A cut-out as Rubin's alert production writes it: astropy CCDData (image, UNCERT, MASK)."""
    from astropy.nddata import CCDData, VarianceUncertainty

    buffer = io.BytesIO()
    CCDData(image.astype(np.float32), unit="nJy", mask=mask,
            uncertainty=VarianceUncertainty(np.full(image.shape, 4.0, np.float32))).write(buffer, format="fits")
    return buffer.getvalue()


def cutout_image(seed: int, shape: tuple[int, int] = (30, 30)) -> np.ndarray:
    """A seeded float32 image of sky at 200 +- 5 (30 x 30 by default)."""
    return np.random.default_rng(seed).normal(200.0, 5.0, shape).astype(np.float32)


def rubin_packet(object_id: int | None, source_id: int, mjd: float, band: str = "r", **cutouts: bytes | None) -> dict:
    """A Rubin alert of ``source_id``; each cut-out is ``cutouts[name]`` or a CCDData of ``cutout_image(source_id)``."""
    default = ccd_cutout(cutout_image(source_id))
    return {
        "diaSourceId": source_id,
        "diaSource": {"diaSourceId": source_id, "diaObjectId": object_id, "midpointMjdTai": mjd,
                      "ra": 150.0 + source_id * 1e-6, "dec": -30.0, "band": band},
        "prvDiaSources": None,
        **{name: cutouts.get(name, default) for name in RUBIN_CUTOUT_FIELDS},
    }


def write_rubin_alerts(path: Path, packets: list[dict], schema: dict = RUBIN_SCHEMA) -> Path:
    """An Avro file of ``packets`` (needs fastavro: the ingest extra)."""
    fastavro = pytest.importorskip("fastavro")
    with open(path, "wb") as handle:
        fastavro.writer(handle, fastavro.parse_schema(copy.deepcopy(schema)), packets)
    return path


# -- the command line and the system -------------------------------------------------------------------
def run(capsys, *args: object) -> tuple[int, str, str]:
    """``convention-rt ARGS...`` in-process (arguments passed as strings); returns (code, out, err)."""
    from convention_rt.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def dead_pid() -> int:
    """A process id no process can have on this host (above the kernel's limit)."""
    limit = Path("/proc/sys/kernel/pid_max")
    return int(limit.read_text()) + 1 if limit.is_file() else 2**22 + 1


class FullDisk:
    """A file that takes ``room`` bytes (or characters), then fails as a full disk does."""

    def __init__(self, handle, room: int) -> None:  # noqa: ANN001
        self._handle, self._room = handle, room

    def write(self, data):  # noqa: ANN001, ANN201
        self._room -= len(data)
        if self._room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._handle.write(data)

    def __getattr__(self, name: str):  # noqa: ANN204 (tell, seek, flush, close, closed, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._handle, name)


# -- PyTorch models (the train extra: call only after pytest.importorskip("torch")) ---------------------
def tiny_config(**changes: object) -> ModelConfig:
    """A small ConvEntion with the paper's stem pattern (time 3 -> 3 -> 5 -> 3 -> 1)."""
    from dataclasses import replace

    from train.model import ModelConfig, StemLayer

    config = ModelConfig(
        stamp_size=12,
        seq_len=18,
        stem=(
            StemLayer(channels=4, kernel=3, stride=2, padding=1, time_stride=2, time_padding=2),
            StemLayer(channels=6, kernel=3, padding=1, time_padding=2),
            StemLayer(channels=6, kernel=3),
            StemLayer(channels=4, kernel=1),
        ),
        d_model=4,
        heads=2,
        layers=2,
        ffn_channels=8,
        head_width=16,
        n_band_ids=4,
        classes=("a", "b", "c"),
    )
    return replace(config, **changes)


def assert_reads_asinh_stamps(linear: torch.nn.Module, stretched: torch.nn.Module, batch: int,
                              real_frames: int) -> None:
    """Check that ``stretched`` (``input_stretch="asinh"``, given ``linear``'s weights here) is ``linear`` fed the
    asinh of stamps far beyond asinh's linear range, and differs from ``linear`` fed them as they are.  The last
    object of the batch keeps only its first ``real_frames`` frames."""
    import torch

    from train.model import example_inputs

    stretched.load_state_dict(linear.state_dict())
    stamps, band_ids, times = example_inputs(linear.config, batch)
    stamps = stamps * 1e4
    band_ids[-1, real_frames:] = 0
    with torch.no_grad():
        torch.testing.assert_close(stretched(stamps, band_ids, times), linear(torch.asinh(stamps), band_ids, times))
        assert not torch.allclose(stretched(stamps, band_ids, times), linear(stamps, band_ids, times))


def randomise_norms(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    import torch

    from train.model.convention import FeatureNorm, MaskedLayerNorm

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(torch.randn(shape, generator=generator))
                module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.weight.copy_(torch.randn(shape, generator=generator))
                module.bias.copy_(torch.randn(shape, generator=generator))
            if isinstance(module, (MaskedLayerNorm, FeatureNorm)):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
    return model.eval()


def with_padding(band_ids: torch.Tensor, real: list[int]) -> torch.Tensor:
    """Copy of ``band_ids`` keeping ``real[b]`` leading frames of sequence b, the rest padding."""
    band_ids = band_ids.clone()
    for row, count in enumerate(real):
        band_ids[row, count:] = 0
    return band_ids


def assert_logits_follow_real_frames_only(model: torch.nn.Module, seed: int = 2) -> None:
    """Padded, cut after the last real window, with other padding times, looped and exported: the same logits.

    Three sequences of ``model`` (in eval mode) hold 1, K + 1 and 2K real frames.
    """
    import torch

    from train.model import example_inputs, to_conv2d_stem
    from train.model.loops import loop_forward

    config = model.config
    stamps, band_ids, times = example_inputs(config, 3, seed=seed)
    window = config.stem_window
    real = [1, window + 1, 2 * window]
    band_ids = with_padding(band_ids, real)
    with torch.no_grad():
        padded = model(stamps, band_ids, times)
        torch.testing.assert_close(model(stamps, band_ids, times.masked_fill(band_ids == 0, 1e6)), padded,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loop_forward(model, stamps, band_ids, times), padded, atol=1e-5, rtol=1e-5)
        for row, count in enumerate(real):
            cut = -(-count // window) * window
            short = model(stamps[row:row + 1, :cut], band_ids[row:row + 1, :cut], times[row:row + 1, :cut])
            torch.testing.assert_close(short, padded[row:row + 1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(to_conv2d_stem(model)(stamps, band_ids, times), padded, atol=1e-4, rtol=1e-4)


def assert_cost_is_the_flop_counters(model: torch.nn.Module) -> int:
    """The multiply-accumulates :func:`train.model.measure` counts for one object, checked against PyTorch's counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from train.model import example_inputs, measure

    cost = measure(model.eval())
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*example_inputs(model.config, 1))
    assert cost.macs == counter.get_total_flops() // 2
    return cost.macs


def make_checkpoint(config: ModelConfig, members: int = 2) -> Checkpoint:
    """A checkpoint of ``members`` randomised models of ``config``, seeded, with made-up bands and statistics."""
    import torch

    from train.checkpoint import Checkpoint
    from train.model import build_model

    torch.manual_seed(0)
    states = [randomise_norms(build_model(config), seed=k).state_dict() for k in range(members)]
    bands = ("g", "r", "i")[: config.n_band_ids - 1]
    return Checkpoint(name="tiny", version="0.1.0", preset="tiny", config=config, members=states,
                      bands=bands, normalisation={b: (10.0 * k, 2.0 + k) for k, b in enumerate(bands)},
                      metrics={"macro_f1": 0.5}, provenance={"data": "tests"})


def assert_export_matches_pytorch(config: ModelConfig, folder: Path, real_frames: list[int], seed: int) -> None:
    """Export a checkpoint of ``config`` and check ONNX Runtime against PyTorch on sequences of these lengths.

    One object per entry of ``real_frames``, padded after its real frames; the
    session runs them in its length buckets, PyTorch on the padded batch.
    """
    import torch

    from convention_rt.session import ModelSession
    from train import export as export_module

    checkpoint = make_checkpoint(config)
    result = export_module.export_checkpoint(checkpoint, folder / "0.1.0")
    session = ModelSession(result.model_path, device="cpu")
    batch = export_module.example_batch(session.card, len(real_frames), seed=seed)
    batch["band_ids"] = with_padding(torch.from_numpy(batch["band_ids"]), real_frames).numpy()
    members = checkpoint.build_members()
    with torch.no_grad():
        inputs = [torch.from_numpy(batch[k]) for k in ("stamps", "band_ids", "times")]
        expected = torch.stack([torch.softmax(m(*inputs), -1) for m in members], 1).numpy()
    np.testing.assert_allclose(session.run(batch["stamps"], batch["band_ids"], batch["times"]), expected, atol=1e-4)
