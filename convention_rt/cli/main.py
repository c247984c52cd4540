"""Run the command line: :func:`main` turns every error into one line on standard error and an exit code.

Exit codes: 0 success, 1 bad input, 2 usage, 3 model or runtime error (and a
system that refused: permissions, space, memory), 128 + N when stopped by
signal N (SIGINT 130, SIGTERM 143).  Warnings of the library are ``warning:``
lines, its info messages ``info:`` lines.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import traceback
import warnings

import typer

from convention_rt.cli.app import app, state
from convention_rt.errors import ConventionError, Interrupted, UsageError

__all__ = ["main"]


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
        if state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: stopped by {signal.Signals(exc.signum).name}{_STOPPED}", err=True)
        code = exc.exit_code
    except MemoryError:
        if state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: out of memory{_STOPPED} (try a smaller --chunk-size or --batch-size)", err=True)
        code = 3
    except ConventionError as exc:
        if state["debug"]:
            traceback.print_exc()
        typer.echo("error: " + " ".join(str(exc).split()), err=True)
        code = exc.exit_code
    except OSError as exc:
        if state["debug"]:
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
