"""The ``convention-rt`` command line (Typer).  No logic of its own: it parses,
calls the library, prints, and maps errors to exit codes:
0 success, 1 bad input, 2 usage, 3 model or runtime error.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table

from convention_rt import spark
from convention_rt._version import __version__
from convention_rt.catalog import Catalog, CatalogSummary, summarise
from convention_rt.classifier import Classifier
from convention_rt.data import write_sample_catalog
from convention_rt.errors import ConventionError, Interrupted, UsageError
from convention_rt.ingest.cli import InvalidPolicy
from convention_rt.ingest.cli import app as ingest_app
from convention_rt.predictions import FORMATS, PredictionWriter
from convention_rt.publish import output_error, output_path
from convention_rt.registry import DEFAULT_MODEL, list_models, resolve_model
from convention_rt.session import check_threads, load_card

__all__ = ["app", "main"]

app = typer.Typer(
    name="convention-rt",
    help="Classify astronomical objects from image time series (ConvEntion).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(ingest_app, name="ingest")
app.command("spark-classify")(spark.spark_classify_command)
_state = {"debug": False}
_out = Console(highlight=False)


class StampPolicy(str, Enum):
    error = "error"
    crop = "crop"
    pad = "pad"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


StampPolicyOption = Annotated[
    StampPolicy, typer.Option(help="Stamps of another size: refuse, centre-crop or centre-pad.")]
InvalidPolicyOption = Annotated[
    InvalidPolicy, typer.Option(help="Objects that cannot be classified: flag, warn, or stop.")]


def _version(value: bool) -> None:
    if value:
        _out.print(f"convention-rt {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """Classify astronomical objects from image time series (ConvEntion)."""
    _state["debug"] = debug


def _print_summary(summary: CatalogSummary) -> None:
    _out.print(summary.path, markup=False, soft_wrap=True)
    table = Table(show_header=False)
    table.add_column(style="bold")
    table.add_column()
    height, width = summary.stamp_shape
    table.add_row("layout", f"{summary.layout}, stamps {height}x{width}")
    table.add_row("objects", str(summary.n_objects))
    table.add_row("epochs", str(summary.n_epochs))
    table.add_row("frames", str(summary.n_frames) + "  (single-band, usable)")
    table.add_row("bands", ", ".join(f"{b}: {n}" for b, n in sorted(summary.frames_per_band.items())) or "-")
    table.add_row("classes", ", ".join(f"{c}: {n}" for c, n in sorted(summary.classes.items())) or "-")
    table.add_row("typing", ", ".join(f"{c}: {n}" for c, n in sorted(summary.typing.items())) or "-")
    table.add_row("bad pixels", f"{summary.bad_pixels} (NaN, inf or out of range, replaced by the stamp "
                  f"background)")
    table.add_row("photometry", summary.photometry.describe())
    if summary.domain is not None:
        table.add_row("model domain", summary.domain.reason or "in the model's domain")
    _out.print(table)
    if summary.ok and not summary.notes and not summary.low_information:
        _out.print("problems: none")
        return
    _out.print("problems:")
    for problem in summary.problems:
        _out.print(f"  catalog {problem}", markup=False, soft_wrap=True)
    for counter, kind in ((summary.invalid, "flagged"), (summary.notes, "fixed")):
        for problem, count in sorted(counter.items()):
            examples = ", ".join(summary.examples.get(problem, []))
            _out.print(f"  {kind:7s} {problem}: {count} object(s), e.g. {examples}", markup=False, soft_wrap=True)
    for why, count in sorted(summary.low_information.items()):
        examples = ", ".join(summary.examples.get(f"low_information:{why}", []))
        _out.print(f"  low-info low_information:{why}: {count} object(s), e.g. {examples}", markup=False,
                   soft_wrap=True)


@app.command()
def validate(
    catalog: Annotated[Path, typer.Argument(help="Catalog FITS file.", show_default=False, metavar="CATALOG")],
    model: Annotated[Optional[str], typer.Option(
        help="Also check the catalog against this model's contract (shipped NAME or NAME/VERSION, or a .onnx "
             "path): its stamp size, its training domain (photometry) and its validated minimum of frames; "
             "nothing is classified.", show_default=False)] = None,
    stamp_size: Annotated[Optional[int], typer.Option(
        help="Stamp side the model needs (default: the --model's, else 32).", min=1, show_default=False)] = None,
    stamp_policy: StampPolicyOption = StampPolicy.error,
    on_invalid: InvalidPolicyOption = InvalidPolicy.flag,
) -> None:
    """Check a catalog and print a summary; exit 1 when objects are flagged or the catalog has problems.

    With --model, objects the model could not classify meaningfully (out of its
    domain, fewer frames than its validated minimum) count as problems too.
    """
    card = load_card(resolve_model(model).model_path) if model is not None else None
    if card is not None and stamp_size is not None and stamp_size != card.stamp_size:
        raise UsageError(f"--stamp-size {stamp_size} differs from the model's {card.stamp_size}; leave it out")
    size = card.stamp_size if card is not None else (stamp_size or 32)
    if card is not None and card.domain is None:
        typer.echo(f"warning: {card.name}/{card.version} declares no training domain: the catalog's photometry "
                   f"cannot be checked against it", err=True)
    target = card.domain.photometry if card is not None and card.domain is not None else None
    with Catalog(catalog, stamp_size=size, stamp_policy=stamp_policy.value, on_invalid=on_invalid.value,
                 target=target) as opened:
        summary = summarise(opened, card=card)
    _print_summary(summary)
    if summary.n_invalid:
        typer.echo(f"{catalog}: {summary.n_invalid} object(s) cannot be classified (see problems)", err=True)
        raise typer.Exit(1)
    if not summary.ok:
        typer.echo(f"{catalog}: {len(summary.problems)} problem(s) of the catalog as a whole (see problems)",
                   err=True)
        raise typer.Exit(1)
    if summary.low_information:
        count = sum(summary.low_information.values())
        typer.echo(f"{catalog}: {count} object(s) have fewer frames than the model's validated minimum "
                   f"({card.domain.min_frames}): their classes would be low_information", err=True)
        raise typer.Exit(1)


def _check_output(output: Path, catalog: Path, overwrite: bool) -> None:
    """Errors about the output file, before any work: usage (exit 2), an unwritable folder (exit 3)."""
    output_path(output)  # a name too long for a file
    if output.suffix.lower() not in FORMATS:
        raise UsageError(f"{output}: output must end in .fits, .csv or .parquet")
    if not output.parent.is_dir():
        raise UsageError(f"{output}: folder {output.parent} does not exist")
    if output.is_dir():
        raise UsageError(f"{output}: is a folder; choose a file name")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise output_error(output, PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    if output.exists():
        if catalog.exists() and output.samefile(catalog):
            raise UsageError(f"{output}: is the input catalog; choose another output")
        if not overwrite:
            raise UsageError(f"{output}: exists already (add --overwrite to replace it)")


@app.command()
def classify(
    catalog: Annotated[Path, typer.Argument(help="Catalog FITS file.", show_default=False, metavar="CATALOG")],
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Result file: .fits, .csv or .parquet (default: CATALOG.predictions.fits)",
        show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(
        help=f"Shipped model NAME or NAME/VERSION, or path to a .onnx file (default: {DEFAULT_MODEL})",
        show_default=False)] = None,
    device: Annotated[DeviceChoice, typer.Option(help="auto: CUDA when usable, else CPU.")] = DeviceChoice.auto,
    batch_size: Annotated[int, typer.Option(help="Objects per inference call.", min=1)] = 64,
    threads: Annotated[Optional[int], typer.Option(
        help="ONNX Runtime threads, at most the CPUs available (default: all of them).", min=1,
                                                   show_default=False)] = None,
    chunk_size: Annotated[int, typer.Option(help="Objects read per chunk (bounds memory).", min=1)] = 256,
    stamp_policy: StampPolicyOption = StampPolicy.error,
    on_invalid: InvalidPolicyOption = InvalidPolicy.flag,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Classify every object of a catalog; one output row per object."""
    output = output or catalog.with_name(f"{catalog.stem}.predictions.fits")
    check_threads(threads, "--threads")
    _check_output(output, catalog, overwrite)
    started = time.perf_counter()
    entry = resolve_model(model)
    card = load_card(entry.model_path)
    opened = Catalog(catalog, stamp_size=card.stamp_size, stamp_policy=stamp_policy.value,
                     on_invalid=on_invalid.value, target=card.domain.photometry if card.domain is not None else None)
    try:
        classifier = Classifier(entry.model_path, device=device.value, threads=threads, batch_size=batch_size)
    except BaseException:
        opened.close()
        raise
    header = {"CATALOG": catalog.name, "MODEL": card.name, "MODELVER": card.version,
              "MODELSHA": card.sha256[:16], "DEVICE": classifier.session.device, "CRTVERS": __version__}
    counts: Counter = Counter()
    heads: Counter = Counter()
    flagged = 0
    progress = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} objects/s"), TimeElapsedColumn(),
                        console=Console(stderr=True), transient=True)
    with opened, PredictionWriter(output, card.classes, id_width=opened.id_width, overwrite=overwrite,
                                  header=header) as writer, progress:
        task = progress.add_task("classify", total=opened.n_objects, rate="-")
        for predictions in classifier.predict_opened(opened, chunk_objects=chunk_size):
            writer.write(predictions)
            counts.update(c for c in predictions.predicted if c)
            heads.update(status.split(";", 1)[0] for status in predictions.status)
            flagged += int((~predictions.ok).sum())
            done = writer.rows_written
            progress.update(task, completed=done, rate=f"{done / (time.perf_counter() - started):,.0f}")
    elapsed = time.perf_counter() - started
    _out.print(f"wrote {output}: {writer.rows_written} objects in {elapsed:.1f} s "
               f"({writer.rows_written / elapsed:,.0f} objects/s) with {classifier.model} on "
               f"{classifier.session.device}", markup=False, soft_wrap=True)
    _out.print("classes: " + (", ".join(f"{c}: {counts[c]}" for c in card.classes)) + f"; flagged: {flagged}")
    if card.domain is None:
        typer.echo(f"warning: {card.name}/{card.version} declares no training domain: the catalog's photometry "
                   f"was not checked against it, nor the information of its results", err=True)
    if opened.domain_problem and opened.on_invalid == "flag":  # under warn the reader said it already
        typer.echo(f"warning: {opened.domain_problem}", err=True)
    summary = flag_summary(heads, writer.rows_written)
    if summary:
        typer.echo(f"warning: {summary}", err=True)


def flag_summary(heads: Counter, total: int) -> str:
    """One line counting the objects that are not plain ``ok``, by the head of their status ("" when none)."""
    others = {head: count for head, count in heads.items() if head != "ok"}
    if not others:
        return ""
    listed = ", ".join(f"{head} x{count}" for head, count in sorted(others.items(), key=lambda item: -item[1]))
    kinds: set[str] = set()
    for head in others:
        kind, _, why = head.partition(":")
        kinds.update([kind] if kind != "low_information" else why.split(","))
    meanings = [meaning for kind, meaning in (
        ("flagged", "flagged: not classified"),
        ("few_frames", "few_frames: classified, on fewer frames than the model's validated minimum"),
        ("near_uniform", "near_uniform: classified, but its probabilities are close to uniform"),
    ) if kind in kinds]
    return (f"{sum(others.values())} of {total} object(s) not ok: {listed} ("
            + "; ".join(meanings + ["see the status column and docs/usage.md"]) + ")")


@app.command()
def info(
    model: Annotated[Optional[str], typer.Argument(
        help=f"Shipped model NAME or NAME/VERSION, or path to a .onnx file (default: {DEFAULT_MODEL})",
        show_default=False)] = None,
) -> None:
    """Print a model's card: classes, bands, inputs, metrics and provenance."""
    entry = resolve_model(model)
    card = load_card(entry.model_path)
    table = Table(show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # checksums and paths wrap instead of being cut
    table.add_row("model", f"{card.name} {card.version} (preset {card.preset}, {card.members} member(s))")
    table.add_row("file", str(entry.model_path))
    table.add_row("sha256", card.sha256)
    table.add_row("classes", ", ".join(card.classes))
    table.add_row("bands", ", ".join(card.bands))
    table.add_row("inputs", f"{card.seq_len} frames x {card.stamp_size}x{card.stamp_size}, window: "
                  f"{card.window}, time encoding: {'yes' if card.time_encoding else 'no'}")
    table.add_row("normalisation", ", ".join(f"{b}: {s.mean:.4g}±{s.std:.4g}" for b, s in card.normalisation.items()))
    domain = card.domain
    if domain is None:
        table.add_row("domain", "not declared (card format 1): catalogs are not checked against this model")
    else:
        table.add_row("domain", domain.photometry.describe())
        table.add_row("frames", f"{domain.frames_range[0]}-{domain.frames_range[1]} per object in training; "
                      f"low_information below {domain.min_frames} ({domain.min_frames_rule}) or within "
                      f"{domain.min_uniform_distance:g} of uniform probabilities")
    cv = card.metrics.get("cross_validation", {})
    if cv:
        table.add_row("metrics", f"accuracy {_score(cv['accuracy'], card.metrics)}, macro-F1 "
                      f"{_score(cv['macro_f1'], card.metrics)} "
                      f"({_folds_text(card.metrics)}, {card.metrics.get('evaluated_on', 'held-out data')})")
    early = card.metrics.get("early")
    if early:
        table.add_row("early", "macro-F1 on the first k frames: " + ", ".join(
            f"{k}: {v:.2f}" for k, v in zip(early["frames_seen"], early["macro_f1"]["mean"]))
            + f" ({early['folds']} folds)")
    calibration = card.metrics.get("calibration")
    if calibration:
        way = calibration["chosen"]
        text = f"temperature {calibration['temperature']:.3f}"
        if way != "none":
            text += (f" (fitted on {way.replace('_', ' ')}): held-out ECE {calibration['ece']['mean']:.3f} -> "
                     f"{calibration[way]['ece']['mean']:.3f}, NLL {calibration['nll']['mean']:.3f} -> "
                     f"{calibration[way]['nll']['mean']:.3f}")
        else:
            text += f" (none helped): held-out ECE {calibration['ece']['mean']:.3f}"
        table.add_row("calibration", text + f" ({calibration['folds']} folds)")
    provenance = card.provenance
    if "training_catalog" in provenance:
        data = provenance.get("training_data", {})
        made_by = ", ".join(str(data[k]) for k in ("SOURCE", "ORIGIN", "GENERATR") if k in data)
        table.add_row("training data", provenance["training_catalog"] + (f" ({made_by})" if made_by else ""))
    for key, label in (("catalog_sha256", "data sha256"), ("command", "command")):
        if key in provenance:
            table.add_row(label, str(provenance[key]))
    _out.print(table)


def _score(value: dict, metrics: dict) -> str:
    """``mean ± std`` over folds; the value alone when there is one fold."""
    one_fold = metrics["cross_validation"].get("folds") == 1
    return f"{value['mean']:.4f}" if one_fold else f"{value['mean']:.4f} ± {value['std']:.4f}"


def _folds_text(metrics: dict) -> str:
    """``5-fold``, or ``2 of 5 folds`` while a cross-validation is incomplete."""
    done, planned = metrics["cross_validation"].get("folds", "?"), metrics.get("folds_planned")
    return f"{done}-fold" if planned in (None, done) else f"{done} of {planned} folds"


@app.command()
def models() -> None:
    """List the models shipped with the package."""
    entries = list_models()
    if not entries:
        _out.print("no models are shipped with this installation")
        return
    table = Table(Column("name", no_wrap=True), "version", "preset", "classes", "held-out macro-F1")
    for entry in entries:
        card = entry.card()
        f1 = card.metrics.get("cross_validation", {}).get("macro_f1")
        table.add_row(entry.name, entry.version, card.preset, ", ".join(card.classes),
                      "-" if f1 is None else f"{_score(f1, card.metrics)} ({_folds_text(card.metrics)})")
    _out.print(table)


@app.command()
def sample(
    out: Annotated[Path, typer.Argument(help="Where to write the copy.")] = Path("sample.fits"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
) -> None:
    """Write a copy of the sample catalog that ships with the package."""
    written = write_sample_catalog(out, overwrite=overwrite)
    _out.print(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", markup=False, soft_wrap=True)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    typer.echo(f"warning: {message}", err=True)


class _InfoLines(logging.Handler):
    """The library's info messages (e.g. the device fall-back) as 'info: ...' lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(f"{record.levelname.lower()}: {record.getMessage()}", err=True)


def _parser_error(exc: Exception) -> int:
    """Show an error of the command-line parser in one line; returns its exit code (re-raises others)."""
    kind = type(exc).__name__
    if kind == "Abort":
        if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C outside the command line's own handler
            typer.echo(f"error: stopped by SIGINT{_STOPPED}", err=True)
            return 128 + signal.SIGINT
        typer.echo("error: aborted", err=True)
        return 1
    if not (callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int)):
        raise exc
    if kind == "NoArgsIsHelpError":  # no arguments: the help text
        exc.show()
        return exc.exit_code
    context = getattr(exc, "ctx", None)
    hint = f" (see '{context.command_path} --help')" if context is not None else ""
    typer.echo("error: " + " ".join(exc.format_message().split()) + hint, err=True)
    return exc.exit_code


# System errors that say the machine refused (permissions, space, resources), not that the input is bad.
_SYSTEM_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                            errno.EIO, errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.ETXTBSY})
_STOPPED = "; unfinished outputs are removed"
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _stop(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM: unwind (the writers remove their temporary files); a second signal ends at once."""
    signal.signal(signum, signal.SIG_DFL)
    raise Interrupted(signum)


def _os_error(exc: OSError) -> tuple[int, str]:
    """A system error not raised by convention-rt: exit code (3 if the system refused, else 1) and one line."""
    if exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return (3 if exc.errno in _SYSTEM_ERRNOS else 1), message


def _arguments(args: object) -> list[str] | None:
    """The command-line words of ``main(args)``: str, paths and numbers as text; anything else a usage error."""
    if args is None:
        return None
    if isinstance(args, (str, bytes)) or not hasattr(args, "__iter__"):
        raise UsageError(f"main() takes a list of words such as ['classify', 'catalog.fits'], got {args!r}")
    words = []
    for word in args:
        if isinstance(word, os.PathLike):
            word = os.fspath(word)
        elif isinstance(word, (int, float)) and not isinstance(word, bool):
            word = str(word)
        if not isinstance(word, str):
            raise UsageError(f"main() takes str, paths and numbers as words, got {word!r}")
        words.append(word)
    return words


def main(args: list[str] | None = None) -> int:
    """Run the command line; returns (and, as a script, exits with) the exit code.

    SIGINT and SIGTERM stop a run cleanly (unfinished outputs are removed) with
    exit code 130 and 143; running out of memory exits with code 3.
    """
    shown_warning = warnings.showwarning
    warnings.showwarning = _show_warning
    library_log = logging.getLogger("convention_rt")
    handler = _InfoLines()
    saved = (library_log.level, library_log.propagate)
    library_log.addHandler(handler)
    library_log.setLevel(logging.INFO)
    library_log.propagate = False
    handlers: dict[int, object] = {}
    try:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for signum in _STOP_SIGNALS:
                handlers[signum] = signal.signal(signum, _stop)
        with warnings.catch_warnings():
            # --on-invalid warn: every warning of the library is a line, each time, whatever the caller's filters
            warnings.simplefilter("always", UserWarning)
            returned = app(args=_arguments(args), prog_name="convention-rt", standalone_mode=False)
        code = returned if isinstance(returned, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Interrupted as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: stopped by {signal.Signals(exc.signum).name}{_STOPPED}", err=True)
        code = exc.exit_code
    except MemoryError:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: out of memory{_STOPPED} (try a smaller --chunk-size or --batch-size)", err=True)
        code = 3
    except ConventionError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo("error: " + " ".join(str(exc).split()), err=True)
        code = exc.exit_code
    except OSError as exc:
        if _state["debug"]:
            traceback.print_exc()
        code, message = _os_error(exc)
        typer.echo("error: " + " ".join(message.split()), err=True)
    except Exception as exc:  # the command-line parser's own errors: bad options and values
        code = _parser_error(exc)
    finally:
        for signum, previous in handlers.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        warnings.showwarning = shown_warning
        library_log.removeHandler(handler)
        library_log.setLevel(saved[0])
        library_log.propagate = saved[1]
    if args is None:
        sys.exit(code)
    return code
