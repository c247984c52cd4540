"""Data files shipped with convention-rt."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sample_catalog_path"]


def sample_catalog_path() -> Path:
    """Path of the small sample catalog that ships with the package.

    24 synthetic objects of the four classes in the catalog format; see
    ``docs/data.md`` for the command that generates it.
    """
    return Path(str(resources.files(__name__) / "sample_catalog.fits"))
