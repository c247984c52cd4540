"""Error classes of convention-rt, each carrying the exit code the CLI returns.

Exit codes: 0 success, 1 bad input, 2 usage, 3 model or runtime error.
"""

from __future__ import annotations

import signal

__all__ = ["ConventionError", "BadInputError", "CatalogError", "UsageError", "ModelError", "OutputExistsError",
           "OutputError", "Interrupted", "InputTypeError"]


class ConventionError(Exception):
    """Base class of every error raised on purpose by convention-rt."""

    exit_code: int = 1


class BadInputError(ConventionError, ValueError):
    """Input data that cannot be used as it is (exit code 1)."""

    exit_code = 1


class InputTypeError(BadInputError, TypeError):
    """An argument of the wrong kind, e.g. band names that are not strings (exit code 1).

    Also a ``TypeError``, for callers that catch the built-in error.
    """


class CatalogError(BadInputError):
    """A catalog file that breaks the catalog format.

    The message names the file and, where known, the HDU, the column and the
    object: ``catalog.fits: EPOCHS.STAMP: object 17: ...``.
    """

    def __init__(
        self,
        path: str,
        message: str,
        *,
        hdu: str | None = None,
        column: str | None = None,
        object_id: object = None,
    ) -> None:
        where = path
        if hdu is not None:
            where += f": {hdu}" + (f".{column}" if column else "")
        if object_id is not None:
            where += f": object {object_id}"
        super().__init__(f"{where}: {' '.join(message.split())}")  # always one line
        self.path = path
        self.hdu = hdu
        self.column = column
        self.object_id = object_id


class UsageError(ConventionError, ValueError):
    """A call or command line that asks for something impossible (exit code 2)."""

    exit_code = 2


class ModelError(ConventionError, RuntimeError):
    """A model file, card or runtime that cannot serve the request (exit code 3)."""

    exit_code = 3


class OutputExistsError(ConventionError, FileExistsError):
    """An output that appeared while the run was writing it: another run finished first (exit code 1).

    An output that exists before the run starts is a :class:`UsageError`.
    """

    exit_code = 1


class OutputError(ConventionError, OSError):
    """An output the system refused to write: no permission, a full disk, a read-only filesystem (exit code 3).

    The message names the output (never its temporary file) and the system's reason.
    """

    exit_code = 3


class Interrupted(BaseException):
    """The command line was stopped by a signal (SIGINT, SIGTERM); exit code 128 + the signal number.

    Raised by the command line's signal handlers.  Like :class:`KeyboardInterrupt`
    it is not an :class:`Exception`: it passes ``except Exception`` clauses, and
    the writers' clean-up (``except BaseException``) removes unfinished outputs.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)
        self.exit_code = 128 + int(signum)
