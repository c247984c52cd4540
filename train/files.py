"""Files written whole or not at all, through :func:`convention_rt.publish.publish` like every output."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from convention_rt.publish import publish, temporary_path

__all__ = ["copy_atomically", "write_atomically"]


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a temporary file beside ``path`` (:func:`~convention_rt.publish.temporary_path`), then publish it.

    Readers see the old file or the whole new one; a failed write leaves neither
    a partial file nor the temporary behind.  Of two processes writing the same
    ``path`` at once, the last one wins; each file it leaves is whole.

    Raises
    ------
    convention_rt.errors.OutputError
        The system refused the file (permissions, a full disk, ...).
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        write(temporary)
        publish(temporary, path, overwrite=True)
    finally:
        temporary.unlink(missing_ok=True)


def copy_atomically(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` as :func:`write_atomically` writes: whole or not at all."""
    write_atomically(Path(path), lambda target: shutil.copyfile(source, target))
