"""Output files written whole or not at all: a temporary name beside the output, then one publishing step.

Every writer of convention-rt (prediction tables, streamed FITS tables and so
catalogs, the sample copy, the Spark dataset folder) writes under a hidden
temporary name beside its output, ``.OUT.<pid>.<hex>.part``, and
:func:`publish` puts it in place once it is complete:

* without ``overwrite`` the output must not exist at that moment.  A file is
  hard-linked to the output's name (``link`` fails when the name is taken)
  and the temporary name removed; on a filesystem without hard links the name
  is first claimed with ``O_CREAT | O_EXCL``, then replaced.  A folder claims
  the name with ``mkdir``, then replaces the empty folder.  Of two runs writing
  the same output, the one that finishes second fails with
  :class:`~convention_rt.errors.OutputExistsError` and the first one's result
  stays.
* with ``overwrite`` a file replaces the output in one rename; a folder moves
  the existing output aside first and removes it once the new one is in
  place.  A file never replaces a folder.

The process id in the temporary name lets a later run to the same output tell
leftovers of a killed run (their process no longer runs on this host: they are
removed) from the work of a run still going (it is named in an ``info`` line
and left alone).  System errors (no permission, a full disk) become
:class:`~convention_rt.errors.OutputError`, naming the output and the
system's reason, never the temporary name.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from convention_rt.errors import ConventionError, OutputError, OutputExistsError, UsageError

__all__ = ["NAME_MAX", "AtomicWriter", "StagedOutput", "clean_stale", "output_error", "output_path",
           "process_running", "publish", "temporary_path"]

log = logging.getLogger(__name__)

TEMPORARY_SUFFIX = ".part"
#: Longest file name, in bytes, of the filesystems convention-rt writes to (ext4, XFS, APFS, NTFS...).
NAME_MAX = 255
# Longest output name kept whole in a temporary name: room for ".", ".<pid of up to 10 digits>.<8 hex>.part".
_STEM_MAX = NAME_MAX - len(".." + "9" * 10 + "." + "f" * 8 + TEMPORARY_SUFFIX)
_TEMPORARY_FIELDS = re.compile(r"(?P<pid>[0-9]+)\.[0-9a-f]+")
# link(2) errors meaning "this filesystem makes no hard links": claim the name with O_EXCL instead.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK, errno.EXDEV})
_HINTS = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
          errno.EACCES: "choose a folder you can write to", errno.EPERM: "choose a folder you can write to",
          errno.EROFS: "choose a folder you can write to", errno.EFBIG: "write to a filesystem that allows "
          "larger files, or split the input"}


def output_path(path: Any) -> Path:
    """``path`` as a Path, or a :class:`~convention_rt.errors.UsageError` for what cannot name a file.

    A file name longer than :data:`NAME_MAX` bytes is refused here, before any work.
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise UsageError(f"an output must be named by a non-empty str or Path, got {path!r}")
    path = Path(path)
    length = len(os.fsencode(path.name))
    if length > NAME_MAX:
        raise UsageError(f"{path}: the file name is {length} bytes long, more than the {NAME_MAX} a file name may "
                         f"have; choose a shorter name")
    return path


def _stem(name: str) -> str:
    """The part of an output's name its temporary names carry: all of it, or its first bytes when long.

    Room is kept for the longest process id, so the temporary name of any
    output name of up to :data:`NAME_MAX` bytes fits, and every run to the same
    output uses the same stem (which :func:`clean_stale` looks for).
    """
    encoded = os.fsencode(name)
    if len(encoded) <= _STEM_MAX:
        return name
    return os.fsdecode(encoded[:_STEM_MAX])  # a character cut in two stays its bytes (surrogate escapes)


def temporary_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``: ``.NAME.<pid>.<8 hex digits>.part``.

    NAME is the output's name, cut to its first bytes when the whole would be
    longer than a file name may be (:data:`NAME_MAX` bytes).
    """
    path = Path(path)
    return path.with_name(f".{_stem(path.name)}.{os.getpid()}.{secrets.token_hex(4)}{TEMPORARY_SUFFIX}")


def _temporaries(path: Path) -> Iterator[tuple[Path, int]]:
    """The temporary names of ``path`` present in its folder, with the process id each names."""
    prefix = f".{_stem(path.name)}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:  # a missing or unreadable folder is reported when the temporary file is created
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(TEMPORARY_SUFFIX)):
            continue
        fields = _TEMPORARY_FIELDS.fullmatch(name[len(prefix):-len(TEMPORARY_SUFFIX)])
        if fields is not None:
            yield path.parent / name, int(fields["pid"])


def process_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (True when that cannot be told)."""
    if os.name != "posix":
        return True  # os.kill(pid, 0) would end the process on Windows: never judge there
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    except OverflowError:  # beyond any process id
        return False
    return True


def clean_stale(path: str | Path) -> list[Path]:
    """Remove the temporary files of ``path`` whose process no longer runs; return the others.

    One ``info`` log line names what was removed, another the temporary files
    of processes that still run (another run writing the same output); those
    of this process are left alone silently.

    Parameters
    ----------
    path : str or Path
        An output file or folder.

    Returns
    -------
    list of Path
        Temporary files of ``path`` belonging to other running processes.
    """
    path = Path(path)
    removed: list[str] = []
    running: list[Path] = []
    for temporary, pid in _temporaries(path):
        if pid == os.getpid():
            continue
        if process_running(pid):
            running.append(temporary)
            continue
        try:
            if temporary.is_dir() and not temporary.is_symlink():
                shutil.rmtree(temporary)
            else:
                temporary.unlink()
        except FileNotFoundError:  # removed by another run meanwhile
            continue
        except OSError as exc:
            log.warning("%s: cannot remove %s, left by a run that no longer runs: %s", path, temporary.name,
                        exc.strerror or exc)
            continue
        removed.append(temporary.name)
    if removed:
        log.info("%s: removed %d temporary file(s) left by runs that no longer run: %s", path, len(removed),
                 ", ".join(sorted(removed)))
    if running:
        log.info("%s: another run is writing it too (%s); without --overwrite the run that finishes second fails",
                 path, ", ".join(sorted(t.name for t in running)))
    return running


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """``exc``, a system error met while writing ``path``, as one line naming ``path`` (not a temporary name)."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    hint = _HINTS.get(exc.errno) if exc.errno is not None else None
    error = OutputError(f"{path}: cannot write: {reason}" + (f" ({hint})" if hint else ""))
    error.errno = exc.errno
    return error


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _remove(path: Path) -> None:
    """Remove a file or folder, gone already or not."""
    if _is_folder(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _publish_new(temporary: Path, path: Path) -> None:
    """Move ``temporary`` to ``path`` only if nothing is there; FileExistsError otherwise."""
    if _is_folder(temporary):
        os.mkdir(path)  # claims the name, or fails
        try:
            os.replace(temporary, path)  # an empty folder is replaced in one step
        except BaseException:
            os.rmdir(path)
            raise
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))  # claims the name, or fails
        try:
            os.replace(temporary, path)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return
    temporary.unlink()


def _replace_folder(temporary: Path, path: Path) -> None:
    """Put the folder ``temporary`` at ``path``, moving whatever is there aside and removing it after."""
    if not os.path.lexists(path):
        os.replace(temporary, path)
        return
    previous = temporary_path(path)
    os.replace(path, previous)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.replace(previous, path)
        raise
    _remove(previous)


def publish(temporary: str | Path, path: str | Path, *, overwrite: bool) -> Path:
    """Put the complete file or folder ``temporary`` at ``path``.

    Parameters
    ----------
    temporary : str or Path
        The finished file or folder, in the same folder as ``path``.
    path : str or Path
        The output.
    overwrite : bool
        Replace what is at ``path``; without it, fail if anything is there now.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (another run finished first).
    UsageError
        ``path`` is a folder and ``temporary`` a file.
    OutputError
        The system refused (permissions, a full disk, ...).
    """
    temporary, path = output_path(temporary), output_path(path)
    if _is_folder(path) and not _is_folder(temporary):
        raise UsageError(f"{path}: is a folder; a file does not replace it (choose another output)")
    try:
        if not overwrite:
            _publish_new(temporary, path)
        elif _is_folder(temporary):
            _replace_folder(temporary, path)
        else:
            os.replace(temporary, path)
    except FileExistsError as exc:
        raise OutputExistsError(f"{path}: exists already: another run wrote it while this one ran, and this "
                                "run's result was discarded (add --overwrite to replace it)") from exc
    except OSError as exc:
        raise output_error(path, exc) from exc
    return path


class StagedOutput:
    """The temporary file (or folder) of one output, published whole by :meth:`publish` or dropped by :meth:`discard`.

    Temporary files of the same output left by runs that no longer run are
    removed first (:func:`clean_stale`).

    Parameters
    ----------
    path : str or Path
        The output.
    overwrite : bool
        Replace an output that exists when :meth:`publish` runs.
    text : bool
        Open the temporary file as UTF-8 text (no newline translation) instead of binary.
    folder : bool
        Stage a folder that another writer creates (a Spark dataset): nothing is opened.

    Attributes
    ----------
    path : Path
    temporary : Path
    file : file object or None
        The temporary file open for writing (``"x+b"``, or ``"x"`` as text); None for a folder.

    Raises
    ------
    UsageError
        ``path`` is a folder and a file is staged.
    OutputError
        The temporary file cannot be created (no permission, missing folder, ...).
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False, text: bool = False,
                 folder: bool = False) -> None:
        self.path = output_path(path)
        self.overwrite = bool(overwrite)
        if not folder and _is_folder(self.path):
            raise UsageError(f"{self.path}: is a folder; a file does not replace it (choose another output)")
        clean_stale(self.path)
        self.temporary = temporary_path(self.path)
        self.file: IO[Any] | None = None
        self._done = False
        if folder:
            return
        try:
            if text:
                self.file = open(self.temporary, "x", newline="", encoding="utf-8")  # noqa: SIM115
            else:
                self.file = open(self.temporary, "x+b")  # noqa: SIM115
        except OSError as exc:
            raise output_error(self.path, exc) from exc

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Run a step of writing: a system error discards the temporary file and becomes :class:`OutputError`."""
        try:
            yield
        except ConventionError:
            raise
        except OSError as exc:
            self.discard()
            raise output_error(self.path, exc) from exc

    def publish(self) -> Path:
        """Close the temporary file and put it at :attr:`path` (see :func:`publish`); discard it on failure."""
        if self._done:
            raise UsageError(f"{self.path}: this output was published or discarded already")
        try:
            with self.writing():
                if self.file is not None:
                    self.file.close()
            publish(self.temporary, self.path, overwrite=self.overwrite)
        except BaseException:
            self.discard()
            raise
        self._done = True
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file or folder; safe to call more than once."""
        self._done = True
        try:
            if self.file is not None:
                self.file.close()
        except OSError:  # flushing a failed file fails again; it is removed just below
            pass
        finally:
            _remove(self.temporary)


class AtomicWriter:
    """The writers' context protocol: :meth:`close` (publish) on success, :meth:`abort` (discard) on error.

    Every writer of a file (:class:`~convention_rt.predictions.PredictionWriter`,
    :class:`~convention_rt.fits_stream.StreamingTable` and so
    :class:`~convention_rt.catalog_writer.CatalogWriter`) is one, built on a :class:`StagedOutput`.
    """

    def close(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self):  # noqa: ANN204 (returns the subclass)
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
