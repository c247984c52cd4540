"""Files written whole or not at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a hidden temporary file beside ``path``, then rename it to ``path``.

    Readers see the old file or the whole new one; a failed write leaves neither
    a partial file nor the temporary behind.  Two processes must not write the
    same ``path`` at once (they would share the temporary).
    """
    temporary = path.with_name(f".{path.name}.part")
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
