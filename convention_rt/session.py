"""ONNX Runtime session of a ConvEntion model: providers, threads, checksum.

The exported graph (see ``train/export.py``) has three inputs and one output:

* ``stamps``: (n, M, H, W) float32, normalised stamps, zeros on padding;
* ``band_ids``: (n, M) int64, 0 on padding;
* ``times``: (n, M) float32, days since the object's first frame in the
  window, 0 on padding (read only by models with a time encoding);
* ``probabilities``: (n, members, classes) float32, softmax of each ensemble
  member; the runtime averages members and reports their spread.

Device choice: ``cpu``; ``cuda`` (an error naming the providers built into ONNX Runtime when
CUDA cannot be used); ``auto`` (CUDA when its libraries actually load, else the
CPU, announced in one info line, without ONNX Runtime's burst of errors).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import logging
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from convention_rt.errors import ModelError, UsageError
from convention_rt.model_card import ModelCard, sha256_of
from convention_rt.policies import Device

__all__ = [
    "CARD_METADATA_KEY", "INPUT_NAMES", "OUTPUT_NAME", "ModelSession", "available_cpus", "check_card",
    "check_threads", "cuda_unavailable_reason", "frames_needed", "length_buckets", "load_card", "sequence_lengths",
]

log = logging.getLogger("convention_rt")

CARD_METADATA_KEY = "convention_rt.model_card"
INPUT_NAMES = ("stamps", "band_ids", "times")
OUTPUT_NAME = "probabilities"

_PROBABILITY_TOLERANCE = 1e-3  # how far a member's outputs may be from [0, 1] and from summing to 1
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the system has one, else the CPU count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def check_threads(threads: object, name: str = "threads") -> int | None:
    """``threads`` as an int, after checking it is a whole number from 1 to :func:`available_cpus`.

    More threads than CPUs only slow a run down, and a very large number makes
    ONNX Runtime create that many threads (out of memory, or a hang).

    Raises
    ------
    UsageError
        Naming ``name``, the value and the CPUs available.
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer):
        raise UsageError(f"{name} must be a whole number of threads, got {threads!r}")
    cpus = available_cpus()
    if not 1 <= threads <= cpus:
        raise UsageError(f"{name} must be from 1 to {cpus} (the CPUs available to this process), got {threads}; "
                         f"leave it out to use all of them")
    return int(threads)


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA provider cannot run here, or None when it can be tried.

    Loads the CUDA driver and ONNX Runtime's CUDA provider library with
    ``ctypes`` first: a failure there is silent, unlike a failing session.
    """
    if _CUDA not in ort.get_available_providers():
        return "this ONNX Runtime build has no CUDA provider (install onnxruntime-gpu)"
    if importlib.util.find_spec("nvidia") is not None and hasattr(ort, "preload_dlls"):
        # CUDA/cuDNN wheels of the `cuda` extra: load them before the provider looks for them.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                ort.preload_dlls()
            except OSError:
                pass  # the driver check below says what is missing
    driver = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
    provider = Path(ort.__file__).parent / "capi" / (
        "onnxruntime_providers_cuda.dll" if sys.platform == "win32" else "libonnxruntime_providers_cuda.so")
    for library in (driver, str(provider)):
        try:
            ctypes.CDLL(library)
        except OSError as exc:
            return f"CUDA libraries do not load ({exc})"
    return None


def load_card(model_path: str | Path, card: ModelCard | str | Path | None = None, *,
              verify: bool = True) -> ModelCard:
    """The card of a model: given, ``card.json`` beside the model, or embedded in its metadata.

    Parameters
    ----------
    model_path : str or Path
        The ``.onnx`` file.
    card : ModelCard or path, optional
        The card to use; by default ``card.json`` beside the model, else the card
        export embedded in the model's metadata.
    verify : bool
        Check a card given or read from a file against the model (see
        :func:`check_card`): this opens the model once.

    Raises
    ------
    ModelError
        Missing or invalid card, unreadable model, or a card that does not describe the model.
    """
    model_path = Path(model_path)
    given = _given_card(model_path, card)
    if given is not None and not verify:
        return given[0]
    _check_readable(model_path)
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # read, not run
        session = ort.InferenceSession(str(model_path), options, providers=[_CPU])
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ModelError(f"{model_path}: not a loadable ONNX model ({' '.join(str(exc).split())})") from exc
    if given is None:
        found, source = _embedded_card(session, model_path), f"{model_path} (metadata)"
    else:
        found, source = given
    check_card(found, source, model_path, session)
    return found


def _check_readable(model_path: Path) -> None:
    """Refuse a model file that cannot be read (ONNX Runtime's own message shows an errno number only)."""
    try:
        with open(model_path, "rb") as handle:
            handle.read(1)
    except FileNotFoundError:
        raise ModelError(f"{model_path}: model file not found") from None
    except OSError as exc:
        raise ModelError(f"{model_path}: cannot read: {exc.strerror or exc}") from exc


def _given_card(model_path: Path, card: ModelCard | str | Path | None) -> tuple[ModelCard, str] | None:
    """(card, where it comes from) for a card given or ``card.json`` beside the model; None for neither."""
    if isinstance(card, ModelCard):
        return card, "the model card given"
    card_path = Path(card) if card is not None else model_path.with_name("card.json")
    if card_path.is_file():
        return ModelCard.load(card_path), str(card_path)
    if card is not None:
        raise ModelError(f"{card_path}: model card not found")
    return None


def _embedded_card(session: ort.InferenceSession, model_path: Path) -> ModelCard:
    """The card export embedded in the model's metadata."""
    text = session.get_modelmeta().custom_metadata_map.get(CARD_METADATA_KEY)
    if text is None:
        raise ModelError(f"{model_path}: no card.json beside it and no card in its metadata")
    return ModelCard.from_json(text, f"{model_path} (metadata)")


def check_card(card: ModelCard, source: str, model_path: Path, session: ort.InferenceSession) -> None:
    """Refuse a card that does not describe the model it is used with.

    A card beside a model is an ordinary file: one copied from another model or
    edited by hand would otherwise be trusted, and the model would be fed inputs
    it was not trained on (other band order or statistics) or its outputs named
    after the wrong classes.  Two checks:

    * the card export embedded in the model (when it has one) must agree with
      ``card`` on every field of :data:`~convention_rt.model_card.MODEL_FIELDS`;
    * the model's declared output shape (n, members, classes) must match the
      card's ``members`` and number of ``classes``.

    Parameters
    ----------
    card : ModelCard
    source : str
        Where the card comes from (its file), named in the error.
    model_path : Path
    session : onnxruntime.InferenceSession
        A session of ``model_path``.

    Raises
    ------
    ModelError
        Naming ``source``, each field that differs and both values.
    """
    text = session.get_modelmeta().custom_metadata_map.get(CARD_METADATA_KEY)
    if text is not None:
        differences = card.model_differences(ModelCard.from_json(text, f"{model_path} (metadata)"))
        if differences:
            detail = "; ".join(f"{name}: card {mine!r}, model {theirs!r}" for name, mine, theirs in differences)
            raise ModelError(f"{source}: does not describe the model {model_path}: {detail} (restore the card "
                             f"exported with this model, or remove it to use the copy embedded in the model)")
    outputs = [o for o in session.get_outputs() if o.name == OUTPUT_NAME]
    if not outputs:
        return  # the signature check names the outputs
    shape = outputs[0].shape
    if len(shape) != 3:
        raise ModelError(f"{model_path}: output {OUTPUT_NAME!r} has shape {shape}, expected (n, members, classes)")
    members, classes = shape[1], shape[2]
    if isinstance(classes, int) and classes != len(card.classes):
        raise ModelError(f"{source}: does not describe the model {model_path}: classes: card "
                         f"{list(card.classes)} ({len(card.classes)}), model outputs {classes} per member "
                         f"(restore the card exported with this model)")
    if isinstance(members, int) and members != card.members:
        raise ModelError(f"{source}: does not describe the model {model_path}: members: card {card.members}, "
                         f"model {members} (restore the card exported with this model)")


class ModelSession:
    """An ONNX Runtime session of one exported model, with its card.

    Parameters
    ----------
    model_path : str or Path
        The ``.onnx`` file.
    card : ModelCard or path, optional
        The model card; by default ``card.json`` beside the model, else the card
        embedded in the model's metadata.
    device : {"auto", "cpu", "cuda"}
    threads : int, optional
        Intra-op threads, from 1 to the CPUs available to the process (ONNX
        Runtime's default, all cores, when omitted); more is a UsageError.
    verify_checksum : bool
        Refuse a model file whose sha256 differs from the card's.

    Raises
    ------
    ModelError
        Missing or damaged model or card, checksum mismatch, a card that does not
        describe the model (see :func:`check_card`), unexpected graph
        inputs/outputs, or ``device="cuda"`` where CUDA cannot run.
    """

    def __init__(
        self,
        model_path: str | Path,
        card: ModelCard | str | Path | None = None,
        *,
        device: Device = "auto",
        threads: int | None = None,
        verify_checksum: bool = True,
    ) -> None:
        threads = check_threads(threads)
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ModelError(f"{self.model_path}: model file not found")
        _check_readable(self.model_path)
        if device not in Device.values():
            raise ModelError(f"device must be auto, cpu or cuda, got {device!r}")
        given = _given_card(self.model_path, card)
        if given is not None and verify_checksum and given[0].sha256:  # an embedded card has no checksum
            digest = sha256_of(self.model_path)
            if digest != given[0].sha256:
                raise ModelError(f"{self.model_path}: sha256 {digest[:12]}... does not match the card's "
                                 f"{given[0].sha256[:12]}... (damaged or replaced file)")

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        self.device = self._choose_device(device)
        providers = [_CUDA, _CPU] if self.device == "cuda" else [_CPU]
        try:
            with _quiet_onnxruntime(self.device == "cuda"):
                self._session = ort.InferenceSession(str(self.model_path), options, providers=providers)
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ModelError(f"{self.model_path}: cannot load the model ({' '.join(str(exc).split())})") from exc
        if self.device == "cuda" and self._session.get_providers()[0] != _CUDA:
            if device == "cuda":
                raise ModelError(f"CUDA was asked for but the session runs on {self._session.get_providers()}")
            log.info("CUDA provider did not start: running on the CPU")
            self.device = "cpu"
        self.providers: list[str] = self._session.get_providers()
        # without a card file, the card embedded in the model, read from this session
        self.card, card_source = given if given is not None else (
            _embedded_card(self._session, self.model_path), f"{self.model_path} (metadata)")
        check_card(self.card, card_source, self.model_path, self._session)
        self._check_signature()

    @staticmethod
    def _choose_device(device: Device) -> str:
        if device == "cpu":
            return "cpu"
        reason = cuda_unavailable_reason()
        if reason is None:
            return "cuda"
        if device == "cuda":
            raise ModelError(f"device cuda is not available: {reason} (providers built into this onnxruntime: "
                             f"{', '.join(ort.get_available_providers())}); use --device cpu, or install "
                             f"convention-rt[cuda] on a host with an NVIDIA driver")
        log.info("no usable CUDA device (%s): running on the CPU", reason)
        return "cpu"

    def _check_signature(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        if set(inputs) != set(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
            raise ModelError(f"{self.model_path}: graph has inputs {sorted(inputs)} and outputs {outputs}; "
                             f"expected {list(INPUT_NAMES)} -> [{OUTPUT_NAME!r}]")
        shape = inputs["stamps"].shape
        # A symbolic sequence axis (e.g. '3*windows') takes any whole number of stem windows.
        self.variable_length: bool = len(shape) == 4 and isinstance(shape[1], str)
        expected = [self.card.seq_len, self.card.stamp_size, self.card.stamp_size]
        found = [d if isinstance(d, int) else None for d in shape[1:]]
        if self.variable_length:
            found[0] = self.card.seq_len
        if found != expected:
            raise ModelError(f"{self.model_path}: stamps input {shape} does not match the card "
                             f"(M={self.card.seq_len}, {self.card.stamp_size}x{self.card.stamp_size})")

    def run(self, stamps: NDArray[np.float32], band_ids: NDArray[np.int64],
            times: NDArray[np.float32]) -> NDArray[np.float32]:
        """Per-member class probabilities of a batch.

        Parameters
        ----------
        stamps : ndarray, shape (n, M, H, W), float32
        band_ids : ndarray, shape (n, M), int64
        times : ndarray, shape (n, M), float32

        Returns
        -------
        ndarray, shape (n, members, classes), float32

        Raises
        ------
        ModelError
            Inputs of the wrong shape, or finite outputs that are not probabilities
            (outside [0, 1], or a member's not summing to 1 within 1e-3).
        """
        feeds = {
            "stamps": np.ascontiguousarray(stamps, dtype=np.float32),
            "band_ids": np.ascontiguousarray(band_ids, dtype=np.int64),
            "times": np.ascontiguousarray(times, dtype=np.float32),
        }
        n, seq_len = feeds["band_ids"].shape
        size = self.card.stamp_size
        if feeds["stamps"].shape != (n, seq_len, size, size) or seq_len != self.card.seq_len \
                or feeds["times"].shape != (n, seq_len):
            raise ModelError(f"inputs must be stamps (n, {self.card.seq_len}, {size}, {size}), band_ids and "
                             f"times (n, {self.card.seq_len}); got {feeds['stamps'].shape}, "
                             f"{feeds['band_ids'].shape}, {feeds['times'].shape}")
        if n == 0:
            return np.zeros((0, self.card.members, len(self.card.classes)), dtype=np.float32)
        if not self.variable_length:
            return self._checked(self._run_feeds(feeds))
        lengths = sequence_lengths(feeds["band_ids"], self.card.stem_window)
        out = np.empty((n, self.card.members, len(self.card.classes)), dtype=np.float32)
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            group = {name: array[rows, :length] for name, array in feeds.items()} if len(rows) < n else \
                {name: array[:, :length] for name, array in feeds.items()}
            out[rows] = self._run_feeds({name: np.ascontiguousarray(a) for name, a in group.items()})
        return self._checked(out)

    def _checked(self, out: NDArray[np.float32]) -> NDArray[np.float32]:
        """``out`` after checking each member's finite outputs are probabilities: in [0, 1], summing to 1.

        Rows with a NaN or inf are left to the caller (a per-object ``non_finite_output``
        flag); any other value out of range means the model itself is wrong.
        """
        finite = np.isfinite(out).all(axis=-1)
        values = out[finite]
        if values.size == 0:
            return out
        tolerance = _PROBABILITY_TOLERANCE
        if values.min() < -tolerance or values.max() > 1 + tolerance:
            problem = f"values from {values.min():.6g} to {values.max():.6g}, outside [0, 1]"
        else:
            sums = values.astype(np.float64).sum(axis=-1)
            worst = sums[np.argmax(np.abs(sums - 1))]
            if abs(worst - 1) <= tolerance:
                return out
            problem = f"a member's class probabilities sum to {worst:.6g}, not 1"
        raise ModelError(f"{self.model_path}: output {OUTPUT_NAME!r} is not class probabilities ({problem}): "
                         f"the model must end with a softmax over the classes of each member; re-export it")

    def _run_feeds(self, feeds: dict[str, np.ndarray]) -> NDArray[np.float32]:
        if self.device == "cuda":
            return self._run_bound(feeds)
        return self._session.run([OUTPUT_NAME], feeds)[0]

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> NDArray[np.float32]:
        # IOBinding: inputs copied to the GPU once, output allocated there and copied back once.
        # Reviewed against the ONNX Runtime API; not run here (no GPU on the development machines).
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output(OUTPUT_NAME, "cuda", 0)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def metadata(self) -> dict[str, str]:
        """The ONNX model's custom metadata (including the embedded card as JSON)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)


def frames_needed(band_ids: NDArray[np.int64], window: int) -> NDArray[np.int64]:
    """Frames each row needs: up to its last real frame, rounded up to whole windows (one at least).

    Real frames come first in every row (band id 0 is padding); the windows after
    the last real frame change nothing in eval mode, so a row cut there gives the
    padded row's probabilities.

    Parameters
    ----------
    band_ids : ndarray, shape (n, M), int64
    window : int
        Frames per stem window K; M is a multiple of K.

    Returns
    -------
    ndarray, shape (n,), int64
        Multiples of ``window`` in ``[window, M]``.
    """
    seq_len = band_ids.shape[1]
    real = band_ids != 0
    last = np.where(real.any(axis=1), seq_len - np.argmax(real[:, ::-1], axis=1), 1)
    return -(-last // window) * window


def sequence_lengths(band_ids: NDArray[np.int64], window: int) -> NDArray[np.int64]:
    """Frames each row is run at: :func:`frames_needed` rounded up to a length bucket.

    Lengths are rounded up to the buckets of :func:`length_buckets`, which bounds
    the number of runs per batch.

    Parameters
    ----------
    band_ids : ndarray, shape (n, M), int64
    window : int
        Frames per stem window K; M is a multiple of K.

    Returns
    -------
    ndarray, shape (n,), int64
        Multiples of ``window`` in ``[window, M]``.
    """
    buckets = length_buckets(band_ids.shape[1] // window)
    return buckets[np.searchsorted(buckets, frames_needed(band_ids, window) // window)] * window


def length_buckets(n_windows: int) -> NDArray[np.int64]:
    """Window counts the runtime runs a batch at: 1, 2, 3, 4, then about x1.4 per step, up to ``n_windows``.

    A row runs at the smallest bucket that holds its windows, so it computes at
    most a third more windows than it has, and a
    batch needs at most about a dozen runs (11 for N = 33: 1, 2, 3, 4, 6, 8, 11,
    15, 21, 29, 33).
    """
    buckets = [1]
    while buckets[-1] < n_windows:
        buckets.append(max(buckets[-1] + 1, round(buckets[-1] * 1.4)))
    buckets[-1] = n_windows
    return np.array(sorted(set(buckets)), dtype=np.int64)


@contextlib.contextmanager
def _quiet_onnxruntime(active: bool):
    """Silence ONNX Runtime's own logging while a CUDA session is attempted."""
    if not active:
        yield
        return
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)

