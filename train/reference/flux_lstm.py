"""The light-curve LSTM on difference fluxes with their errors, and its training.

The ``lc_lstm`` row measures each frame's flux on the science stamp by aperture
photometry (host light included, no error).  This model is the same LSTM (the
``lc_lstm`` baseline's band embedding, hidden size, layers, time-gap input and
read-out at the last real step, :mod:`train.model.baselines`) fed with what a
light-curve classifier of survey alerts gets: the PLAsTiCC difference flux and its
error at every epoch the catalog rendered, all of them (not the latest 99).

Each step's input is ``asinh(flux / s_b)`` and ``asinh(flux_err / s_b)``, with
``s_b`` the median ``flux_err`` of band ``b`` over the fold's training objects
(computed per fold and saved with the member), the embedding of the band, and
``log1p`` of the days since the previous epoch.

Training follows the table's protocol (:func:`train.fit.train_member`): pre-training
on ``phot`` objects, fine-tuning on ``spec`` objects, each stage stopped early on the
validation macro-F1, objects drawn with inverse-frequency weights, Adam, cross-entropy;
the augmentation is the frame drop (no stamps to rotate).  A fold is trained in one go
(a few minutes): a stopped run starts the unfinished fold again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from train.data.dataset import LabelledObjects
from train.fit import CPU, balanced_weights, scores, stages_of
from train.model.baselines import (
    _gather_real_first,
    _last_real,
    _step_context,
    get_baseline,
)
from train.reference.difference_flux import DifferenceFluxes

__all__ = ["DifferenceFluxLSTM", "FluxLSTMConfig", "FluxLSTMTraining", "flux_inputs", "flux_scale",
           "predict_flux_lstm", "train_flux_lstm"]

log = logging.getLogger("train")


@dataclass(frozen=True, kw_only=True)
class FluxLSTMConfig:
    """Shape of :class:`DifferenceFluxLSTM`.

    Attributes
    ----------
    classes : tuple of str
    n_band_ids : int
        Band ids ``1 .. n_band_ids - 1``; 0 marks padding.
    band_features, hidden_size, rnn_layers, dropout
        As in :class:`train.model.baselines.BaselineConfig`.
    """

    classes: tuple[str, ...]
    n_band_ids: int
    band_features: int
    hidden_size: int
    rnn_layers: int
    dropout: float

    def __post_init__(self) -> None:
        if len(self.classes) < 2 or self.n_band_ids < 2 or min(self.band_features, self.hidden_size,
                                                                self.rnn_layers) < 1:
            raise ValueError("FluxLSTMConfig: at least two classes and two band ids, and positive sizes, are needed")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FluxLSTMConfig: dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def like_lc_lstm(cls, classes: tuple[str, ...], n_bands: int, dropout: float) -> FluxLSTMConfig:
        """The ``lc_lstm`` baseline's sizes for ``classes`` and ``n_bands`` bands."""
        base = get_baseline("lc_lstm")
        return cls(classes=classes, n_band_ids=n_bands + 1, band_features=base.band_features,
                   hidden_size=base.hidden_size, rnn_layers=base.rnn_layers, dropout=dropout)


#: Values per step besides the band embedding and the time gap: scaled flux and flux error.
STEP_VALUES = 2


class DifferenceFluxLSTM(nn.Module):
    """LSTM over difference-flux light curves with errors.

    Parameters
    ----------
    config : FluxLSTMConfig
    """

    def __init__(self, config: FluxLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.band_embedding = nn.Embedding(config.n_band_ids, config.band_features, padding_idx=0)
        self.rnn = nn.LSTM(STEP_VALUES + config.band_features + 1, config.hidden_size, num_layers=config.rnn_layers,
                           batch_first=True, dropout=config.dropout if config.rnn_layers > 1 else 0.0)
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(config.hidden_size, len(config.classes)))

    def forward(self, values: Tensor, band_ids: Tensor, times: Tensor) -> Tensor:
        """Logits ``(B, classes)`` float32.

        Parameters
        ----------
        values : Tensor, shape (B, M, 2), float32
            ``asinh(flux / s_b)``, ``asinh(flux_err / s_b)`` per step.
        band_ids : Tensor, shape (B, M), int64
            0 for padding (anywhere in the sequence).
        times : Tensor, shape (B, M), float32
            Days, increasing over the real steps.
        """
        if values.ndim != 3 or values.shape[2] != STEP_VALUES or tuple(band_ids.shape) != tuple(values.shape[:2]) \
                or tuple(times.shape) != tuple(values.shape[:2]):
            raise ValueError(f"values (B, M, {STEP_VALUES}), band_ids (B, M) and times (B, M) must agree, got "
                             f"{tuple(values.shape)}, {tuple(band_ids.shape)}, {tuple(times.shape)}")
        real = band_ids != 0
        values = values.masked_fill(~real.unsqueeze(-1), 0.0)
        values, band_ids, times, real = _gather_real_first(real, values, band_ids, times, real)
        steps = torch.cat([values, self.band_embedding(band_ids), _step_context(times, real)], dim=-1)
        outputs, _ = self.rnn(steps)
        return self.head(_last_real(outputs, real))


@dataclass(frozen=True)
class FluxLSTMTraining:
    """The training protocol (the table's, :data:`train.results.TABLE_PROTOCOL`).

    Attributes
    ----------
    epochs, patience, batch_size, learning_rate, dropout, frame_drop, seed
        As in :class:`train.fit.FitConfig`.
    eval_batch_size : int
        Objects per evaluation batch.
    """

    epochs: int = 30
    patience: int = 6
    batch_size: int = 128
    learning_rate: float = 1e-3
    dropout: float = 0.3
    frame_drop: float = 0.1
    seed: int = 0
    eval_batch_size: int = 256


def flux_scale(objects: LabelledObjects, fluxes: DifferenceFluxes, indices: NDArray[np.int64],
               n_bands: int) -> NDArray[np.float64]:
    """Median ``flux_err`` per band ``(n_bands,)`` float64 over the epochs of the objects ``indices``.

    A band without epochs among them gets the median over all their epochs.
    """
    rows = np.concatenate([np.arange(objects.offsets[i], objects.offsets[i + 1]) for i in indices])
    errors, bands = fluxes.flux_err[rows], fluxes.passband[rows]
    overall = float(np.median(errors))
    return np.array([float(np.median(errors[bands == b])) if (bands == b).any() else overall
                     for b in range(n_bands)])


def flux_inputs(objects: LabelledObjects, fluxes: DifferenceFluxes, indices: NDArray[np.int64],
                scale: NDArray[np.float64], *, rng: np.random.Generator | None = None,
                frame_drop: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Padded model inputs of the objects ``indices``: every epoch, or with frames dropped when ``rng`` is given.

    Returns
    -------
    values : Tensor, shape (B, M, 2), float32
    band_ids : Tensor, shape (B, M), int64
        PLAsTiCC passband + 1; 0 for padding at the end.
    times : Tensor, shape (B, M), float32
        Days since each object's first kept epoch.

    M is the longest kept sequence of the batch.  Each epoch is dropped with
    probability ``frame_drop`` (at least one is kept).
    """
    parts = []
    for i in indices:
        rows = np.arange(objects.offsets[i], objects.offsets[i + 1])
        if rng is not None and frame_drop > 0:
            keep = rng.random(rows.size) >= frame_drop
            if not keep.any():
                keep[rng.integers(rows.size)] = True
            rows = rows[keep]
        parts.append(rows)
    length = max(rows.size for rows in parts)
    values = np.zeros((len(parts), length, STEP_VALUES), dtype=np.float32)
    band_ids = np.zeros((len(parts), length), dtype=np.int64)
    times = np.zeros((len(parts), length), dtype=np.float32)
    for k, rows in enumerate(parts):
        band = fluxes.passband[rows]
        values[k, :rows.size, 0] = np.arcsinh(fluxes.flux[rows] / scale[band])
        values[k, :rows.size, 1] = np.arcsinh(fluxes.flux_err[rows] / scale[band])
        band_ids[k, :rows.size] = band + 1
        times[k, :rows.size] = objects.mjd[rows] - objects.mjd[rows[0]]
    return torch.from_numpy(values), torch.from_numpy(band_ids), torch.from_numpy(times)


def predict_flux_lstm(model: DifferenceFluxLSTM, objects: LabelledObjects, fluxes: DifferenceFluxes,
                      indices: NDArray[np.int64], scale: NDArray[np.float64],
                      batch_size: int = 256) -> NDArray[np.float32]:
    """Class probabilities ``(len(indices), classes)`` float32 from every epoch of each object."""
    model.eval()
    out = np.zeros((indices.size, len(model.config.classes)), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, indices.size, batch_size):
            batch = indices[start:start + batch_size]
            out[start:start + batch.size] = torch.softmax(model(*flux_inputs(objects, fluxes, batch, scale)),
                                                          dim=-1).numpy()
    return out


def train_flux_lstm(objects: LabelledObjects, fluxes: DifferenceFluxes, train_idx: NDArray[np.int64],
                    val_idx: NDArray[np.int64], training: FluxLSTMTraining, *, fold: int,
                    n_bands: int = 6) -> tuple[DifferenceFluxLSTM, NDArray[np.float64], dict[str, Any]]:
    """Train one member on the objects ``train_idx``, stopping on ``val_idx``.

    Parameters
    ----------
    objects, fluxes
        The catalog's objects and their difference fluxes.
    train_idx, val_idx : ndarray of int
        The fold's training objects (validation split removed) and its validation objects.
    training : FluxLSTMTraining
    fold : int
        Seeds are drawn from ``[training.seed, fold, 0]``, as member 0 of a ``train.fit`` fold.
    n_bands : int
        PLAsTiCC passbands.

    Returns
    -------
    model : DifferenceFluxLSTM
        With the best weights of the last stage.
    scale : ndarray, shape (n_bands,), float64
        The per-band flux scale of its inputs.
    record : dict
        ``seconds``, ``epochs``, ``restarts`` (0), ``history`` (one entry per epoch, as
        :func:`train.fit.train_member` records them), ``flux_scale``.
    """
    seed = [training.seed, fold, 0]
    torch.manual_seed(int(np.random.default_rng(seed).integers(2**31)))
    model = DifferenceFluxLSTM(FluxLSTMConfig.like_lc_lstm(objects.classes, n_bands, training.dropout))
    optimizer = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    scale = flux_scale(objects, fluxes, train_idx, n_bands)
    loss_function = nn.CrossEntropyLoss()
    history: list[dict[str, Any]] = []
    seconds = 0.0
    for stage, (stage_name, stage_idx) in enumerate(stages_of(objects, train_idx)):
        weights = balanced_weights(objects.labels[stage_idx])
        best_f1, best_state, waited = -1.0, None, 0
        for epoch in range(training.epochs):
            if waited >= training.patience:
                break
            start = time.perf_counter()
            rng = np.random.default_rng(seed + [stage, epoch])
            torch.manual_seed(int(rng.integers(2**31)))
            draws = rng.choice(stage_idx, size=stage_idx.size, replace=True, p=weights)
            model.train()
            total = 0.0
            for first in range(0, draws.size, training.batch_size):
                batch = draws[first:first + training.batch_size]
                inputs = flux_inputs(objects, fluxes, batch, scale, rng=rng, frame_drop=training.frame_drop)
                loss = loss_function(model(*inputs), torch.from_numpy(objects.labels[batch]))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * batch.size
            validation = scores(objects.labels[val_idx],
                                predict_flux_lstm(model, objects, fluxes, val_idx, scale, training.eval_batch_size),
                                objects.classes)
            elapsed = time.perf_counter() - start
            seconds += elapsed
            improved = validation["macro_f1"] > best_f1
            if improved:
                best_f1, waited = validation["macro_f1"], 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
            history.append({"attempt": 0, "stage": stage_name, "epoch": epoch, "loss": total / draws.size,
                            "val_macro_f1": validation["macro_f1"], "val_accuracy": validation["accuracy"],
                            "seconds": elapsed, "precision": "fp32", **CPU})
            log.info("fold %d flux LSTM %s epoch %d: loss %.4f, val macro-F1 %.4f acc %.4f%s (%.1f s)", fold,
                     stage_name, epoch, total / draws.size, validation["macro_f1"], validation["accuracy"],
                     " *" if improved else "", elapsed)
        model.load_state_dict(best_state)  # the next stage starts from this stage's best weights
    record = {"seconds": seconds, "epochs": len(history), "restarts": 0, "history": history,
              "flux_scale": scale.tolist()}
    return model, scale, record
