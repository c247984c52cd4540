"""The configuration of a ``train.fit`` run: :class:`FitConfig`, its checks and the architecture it builds."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from convention_rt.preprocess import INFERENCE_WINDOWS
from train.data.dataset import NORMALISATIONS, TASKS
from train.model import MODEL_NAMES, PRESETS, BaselineConfig, ModelConfig, get_baseline, get_preset
from train.model.trees import TREES, TreesConfig

__all__ = ["FitConfig"]


#: Most boosting iterations of the tree head unless configured.
_TREE_ITERATIONS = 500


@dataclass(frozen=True)
class FitConfig:
    """Everything a training run depends on (YAML keys = field names).

    Attributes
    ----------
    catalog : str
        Training catalog (convention-rt format, with labels).
    run_dir : str
        Folder of the run's working state (folds, checkpoints, logs, metrics; under
        ``runs/``, which git ignores); reused to resume.  It may be moved: like
        ``threads``, its path may change when a run resumes.
    model : str
        Architecture: paper, compact (ConvEntion presets), cnn_gru, cnn_lstm, lc_lstm (baselines),
        or trees: the tree head alone, one per fold, with no network (``members`` 0,
        ``tree_head``; :class:`train.model.trees.TreesAlone`).
    task : {"4class", "3class"}
        Classes: AGN, SNIa, SNOther, Variable; or AGN, SN, Variable.
    folds : int
        Cross-validation folds.
    members : int
        Network members per fold; 0 for the trees model, whose one member per fold is its trees.
    fold_limit : int or None
        Train and evaluate only the first ``fold_limit`` folds of the ``folds``-fold
        split (the split itself does not change); ``None``: all of them.
    only_folds : str or None
        Comma-separated folds (e.g. ``"1,3"``) this process trains and scores, the
        others being left to other processes on the same run directory (one core
        each: folds side by side).  Such a pass publishes each of its folds as it
        finishes but writes no ``metrics.json`` and exports nothing; a last pass
        without it finds every member finished and gathers the run.  ``None``: all.
    reuse_from : str or None
        A run directory of the same training (catalog, split, architecture and every
        field that enters a member's training; the number of members and folds may
        differ) whose finished members this run copies instead of training them
        again: member m of fold k is the same computation in both.  Refused if the
        training differs.  Like ``threads``, it may change when a run resumes.
    epochs : int
        Maximum epochs per stage.
    patience : int
        Early stopping: epochs without a better validation macro-F1.
    batch_size : int
        Objects per optimiser step.
    eval_batch_size : int
        Objects per evaluation batch (validation, held-out scoring, head check):
        it sets the evaluation's memory (the paper preset's forward holds about
        33 MB per object, the compact preset's far less), not its results. Like
        ``threads``, it may change when a run resumes.
    learning_rate : float
        Adam's learning rate.
    dropout : float
        Dropout probability of the model.
    frame_drop : float
        Probability of dropping each frame (augmentation).
    validation_fraction : float
        Share of the training folds held out for early stopping.
    seed : int
        Seed of the folds, the validation splits, the weights and every draw.
    threads : int
        PyTorch CPU threads.
    precision : {"fp32", "bf16"}
        Training arithmetic; bf16 autocast (weights stay fp32; evaluation and
        export in fp32) is about 1.5x faster on CPUs with bf16 matrix units and
        far slower on CPUs without them. Like ``threads``, it may change when a
        run resumes; each epoch's record names the precision it ran in.
    max_objects : int or None
        Use only the first objects of the catalog (quick runs).
    frames_cache : str or None
        Folder for a memory-mapped copy of the training frames, written on a
        run's first start and shared by later runs on the same catalog (runs side
        by side then hold one copy of the frames in the page cache instead of one
        each in memory); None: each run holds the frames in its own memory. Like
        ``threads``, it may change when a run resumes.
    positional_encoding : str or None
        Override of the preset's encoding (ablation "none").
    band_input : str or None
        Override of the preset's band input: ``"stacked"`` is the ablation without
        band separation and band embedding (zero-filled multi-band frames per night).
    attention : str or None
        Override of the preset's attention: ``"dot"`` (query-dependent) or
        ``"published"`` (see :class:`train.model.config.ModelConfig`).
    difference_channel : bool
        Give ConvEntion frames a difference channel against the object's per-band
        mean frame (:attr:`train.model.config.ModelConfig.difference_channel`).
    scene_summary : int
        Give ConvEntion a static-scene branch of this width over the object's
        per-band coadds (:attr:`train.model.config.ModelConfig.scene_summary`);
        0: the preset's.
    lightcurve_summary : int
        Give ConvEntion a light-curve branch of this width over the fluxes of the
        frames' difference stamps (:attr:`train.model.config.ModelConfig.lightcurve_summary`);
        0: the preset's.
    window : str or None
        Which frames of a longer series the model reads: ``"event"`` (the run
        holding the most brightening, training on jittered event windows) or
        ``"latest"`` (training on random runs); None: the architecture's default,
        ``"latest"`` (:attr:`train.model.config.ModelConfig.window`).
    normalisation : {"moments", "noise"}
        The card's band statistics, with which every stamp is normalised before the
        model (``(pixel - mean) / std``, :func:`train.data.dataset.band_statistics`).
        ``"moments"``: each band's pixel mean and standard deviation.  ``"noise"``:
        each band's median frame level and median frame noise, so that a typical
        frame's noise is about one unit whatever the band's few extreme frames;
        the image networks then read the asinh of the stamps
        (:attr:`train.model.config.ModelConfig.input_stretch`), ``lc_lstm`` its
        photometry as measured.
    tree_head : bool
        Mix each member's probabilities equally with those of gradient-boosted trees
        on the light-curve features measured from its input stamps
        (:mod:`train.model.trees`), fitted once per fold on the fold's training
        objects and stopped on its validation split.  The members train as without
        it, so ``reuse_from`` may name a run without it.  Exports fold 0's members
        (``export_members="fold0"``).
    tree_scene : bool
        The tree head also reads the features of the object's static scene, its
        per-band mean stamps (:class:`train.model.trees.SceneFeatures`), which an
        object's first frame already shows.  Needs ``tree_head``.
    tree_photometry : bool
        The tree head also reads the catalog reference's light-curve features (errors,
        significances, detections, rise and decline times, colours at the peak) of
        the aperture photometry of each stamp
        (:class:`train.model.stamp_photometry.PhotometryFeatures`).  Needs ``tree_head``.
    tree_prefixes : int
        Add this many random prefixes of each training object (cut as
        ``prefix_truncation`` cuts, :func:`train.early.random_prefixes`) to the
        objects the tree head is fitted and stopped on, so that it learns to classify
        first alerts as well as whole series; 0: whole series only.  Needs ``tree_head``.
    tree_iterations : int
        Most boosting iterations of the tree head (each adds a tree per class); the
        validation split chooses how many of them are used.  The head's cost per object
        grows with its trees: about 0.5 microseconds per tree at batch 1 in ONNX Runtime.
    tree_weight_chosen : bool
        Choose the trees' weight in each fold's mixture on the validation split, whole
        and cut as ``tree_prefixes`` cuts, by log-loss among 0.1, 0.2, ..., 0.9
        (:func:`train.fit.tree_head.choose_weight`); else 0.5.  Needs ``tree_head``.
    prefix_truncation : float
        Share of the training draws cut to a random prefix of their frames
        (log-uniform length from 1 frame to all), so that the model learns to
        classify objects from their first alerts (``train.early``); 0: none.
    early : bool
        Score each fold's early-classification curve as soon as the fold is
        finished: :func:`train.early.early_curve` at the frames seen of
        :data:`train.early.FRAMES_SEEN`, on the fold's held-out objects scored, with
        its members; written to ``fold<k>.early.json`` (kept when the run resumes
        with the same fold scores) and gathered in ``early.json`` at the end.  It
        costs a few minutes per fold for the compact preset on one core, against
        hours of training; ``train.results`` sets it for the rows of its early table.
        Like ``threads``, it may change when a run resumes.
    records_dir : str or None
        Folder that receives a copy of the run's text records (:mod:`train.records`:
        configuration, architecture, the digest of the folds, and per finished fold
        its scores, predictions, early curve and members' training records) as each
        fold finishes; ``train.results`` sets it to the row's folder in ``results/``.
        None: the records stay in ``run_dir`` only. Like ``threads``, it may change
        when a run resumes.
    export_out : str or None
        Folder to export the ensemble to at the end.
    export_members : {"fold0", "all"}
        Which members the exported ensemble holds (all = folds x members).
    name : str
        Registry name of the exported model.
    version : str
        Version of the exported model.
    """

    catalog: str
    run_dir: str
    model: str = "compact"
    task: str = "4class"
    folds: int = 5
    members: int = 3
    fold_limit: int | None = None
    only_folds: str | None = None
    reuse_from: str | None = None
    epochs: int = 100
    patience: int = 10
    batch_size: int = 128
    eval_batch_size: int = 256
    learning_rate: float = 1e-3
    dropout: float = 0.3
    frame_drop: float = 0.1
    validation_fraction: float = 0.1
    seed: int = 0
    threads: int = 2
    precision: str = "fp32"
    max_objects: int | None = None
    frames_cache: str | None = None
    positional_encoding: str | None = None
    band_input: str | None = None
    attention: str | None = None
    difference_channel: bool = False
    scene_summary: int = 0
    lightcurve_summary: int = 0
    window: str | None = None
    normalisation: str = "moments"
    tree_head: bool = False
    tree_scene: bool = False
    tree_photometry: bool = False
    tree_prefixes: int = 0
    tree_weight_chosen: bool = False
    tree_iterations: int = _TREE_ITERATIONS
    prefix_truncation: float = 0.0
    early: bool = False
    records_dir: str | None = None
    export_out: str | None = None
    export_members: str = "fold0"
    name: str = "convention-compact"
    version: str = "1.0.0"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in (*MODEL_NAMES, TREES):
            raise ValueError(f"model must be one of {(*MODEL_NAMES, TREES)}, got {self.model!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.model == TREES:
            if self.members != 0 or not self.tree_head or self.tree_weight_chosen:
                raise ValueError("model 'trees' is the tree head alone: it needs members 0 and tree_head, "
                                 "and has no network to weigh the trees against (no tree_weight_chosen)")
        elif self.members < 1:
            raise ValueError(f"members must be at least 1 (0 for model 'trees' only), got {self.members}")
        if self.folds < 2 or self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("folds >= 2, epochs >= 1, batch_size >= 1 and eval_batch_size >= 1 are required")
        if self.fold_limit is not None and not 1 <= self.fold_limit <= self.folds:
            raise ValueError(f"fold_limit must be in [1, folds={self.folds}], got {self.fold_limit}")
        self.selected_folds()  # refuses a bad only_folds now
        if not 0.0 < self.validation_fraction < 0.5 or not 0.0 <= self.frame_drop < 1.0:
            raise ValueError("validation_fraction must be in (0, 0.5) and frame_drop in [0, 1)")
        if not 0.0 <= self.prefix_truncation <= 1.0:
            raise ValueError(f"prefix_truncation must be in [0, 1], got {self.prefix_truncation}")
        if self.export_members not in ("fold0", "all"):
            raise ValueError("export_members must be 'fold0' or 'all'")
        if self.tree_head and self.export_members != "fold0":
            raise ValueError("tree_head fits trees per fold: it exports fold 0's members (export_members='fold0')")
        if (self.tree_scene or self.tree_photometry or self.tree_prefixes or self.tree_weight_chosen
                or self.tree_iterations != _TREE_ITERATIONS) and not self.tree_head:
            raise ValueError("tree_scene, tree_photometry, tree_prefixes, tree_weight_chosen and tree_iterations "
                             "configure the tree head: they need tree_head")
        if self.tree_prefixes < 0:
            raise ValueError(f"tree_prefixes must be 0 or more, got {self.tree_prefixes}")
        if self.tree_iterations < 1:
            raise ValueError(f"tree_iterations must be at least 1, got {self.tree_iterations}")
        if self.band_input not in (None, "separated", "stacked"):
            raise ValueError(f"band_input must be 'separated' or 'stacked', got {self.band_input!r}")
        if self.attention not in (None, "published", "dot"):
            raise ValueError(f"attention must be 'published' or 'dot', got {self.attention!r}")
        for name in ("scene_summary", "lightcurve_summary"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 (the preset's) or a width, got {getattr(self, name)}")
        if self.model not in PRESETS and (self.positional_encoding or self.band_input or self.attention
                                          or self.difference_channel or self.scene_summary
                                          or self.lightcurve_summary):
            raise ValueError("positional_encoding, band_input, attention, difference_channel, scene_summary and "
                             f"lightcurve_summary apply to ConvEntion models, not {self.model}")
        if self.window is not None and self.window not in INFERENCE_WINDOWS:
            raise ValueError(f"window must be 'latest' or 'event', got {self.window!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be 'moments' or 'noise', got {self.normalisation!r}")

    def selected_folds(self) -> tuple[int, ...] | None:
        """The folds of ``only_folds``, sorted, or None for all.

        Raises
        ------
        ValueError
            Not comma-separated integers, or a fold outside the folds the run trains.
        """
        if self.only_folds is None:
            return None
        limit = self.fold_limit or self.folds
        try:
            folds = sorted({int(part) for part in self.only_folds.split(",")})
        except ValueError:
            raise ValueError(f"only_folds must be comma-separated fold numbers, e.g. '1,3'; "
                             f"got {self.only_folds!r}") from None
        if not folds or folds[0] < 0 or folds[-1] >= limit:
            raise ValueError(f"only_folds must name folds in 0..{limit - 1}, got {self.only_folds!r}")
        return tuple(folds)

    def model_config(self, classes: tuple[str, ...], n_band_ids: int) -> ModelConfig | BaselineConfig | TreesConfig:
        """The architecture for this run's classes and bands."""
        if self.model == TREES:
            trees = TreesConfig(classes=classes, n_band_ids=max(TreesConfig.n_band_ids, n_band_ids))
            return trees if self.window is None else dataclasses.replace(trees, window=self.window)
        base = get_preset(self.model) if self.model in PRESETS else get_baseline(self.model)
        changes: dict[str, Any] = {"classes": classes, "dropout": self.dropout,
                                   "n_band_ids": max(base.n_band_ids, n_band_ids)}
        if self.window is not None:
            changes["window"] = self.window
        if self.normalisation == "noise" and not (isinstance(base, BaselineConfig) and base.kind == "lc_lstm"):
            changes["input_stretch"] = "asinh"
        if isinstance(base, ModelConfig):
            if self.positional_encoding is not None:
                changes["positional_encoding"] = self.positional_encoding
            if self.attention is not None:
                changes["attention"] = self.attention
            if self.difference_channel:
                changes["difference_channel"] = True
            if self.scene_summary:
                changes["scene_summary"] = self.scene_summary
            if self.lightcurve_summary:
                changes["lightcurve_summary"] = self.lightcurve_summary
            if self.band_input == "stacked":  # one channel per band of this catalog
                changes.update(band_input="stacked", band_embedding=False, n_band_ids=n_band_ids)
        return dataclasses.replace(base, **changes)
