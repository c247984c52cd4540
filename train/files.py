"""Files written whole or not at all."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

__all__ = ["copy_atomically", "temporary_beside", "write_atomically"]


def temporary_beside(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique to this process and call.

    ``.{name}.{pid}.{8 hex digits}.part``: two processes (or two calls) writing the
    same ``path`` never share a temporary.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a hidden temporary file beside ``path``, then rename it to ``path``.

    Readers see the old file or the whole new one; a failed write leaves neither
    a partial file nor the temporary behind.  Of two processes writing the same
    ``path`` at once, the last rename wins; each file it leaves is whole.
    """
    path = Path(path)
    temporary = temporary_beside(path)
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def copy_atomically(source: Path, path: Path) -> None:
    """Copy ``source`` to ``path`` as :func:`write_atomically` writes: whole or not at all."""
    write_atomically(Path(path), lambda target: shutil.copyfile(source, target))
