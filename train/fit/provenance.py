"""What a run records of where it came from: the code's revision, the CPU and the catalog's header."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from train.machine import cpu_description

__all__ = ["CPU", "SOURCE_REVISION", "catalog_provenance", "source_revision"]

#: The checkout holding ``train/`` (this file is ``train/fit/provenance.py``).
REPOSITORY = Path(__file__).resolve().parents[2]


def catalog_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance keywords of a catalog's primary header (source, generator, seed, command, ...)."""
    from astropy.io import fits

    structural = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "COMMENT", "HISTORY", ""}
    header = fits.getheader(path, 0)
    return {key: header[key] for key in header if key not in structural}


def source_revision() -> str | None:
    """Git revision of the training code in this checkout.

    Returns
    -------
    str or None
        The commit, with ``+modified`` when ``train/``, ``convention_rt/`` or
        ``csrc/`` differ from it; None outside a git checkout or without git.
    """
    git = ["git", "--no-optional-locks", "-C", str(REPOSITORY)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no",
                                  "--", "train", "convention_rt", "csrc"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+modified" if changed else "") if commit else None


#: The revision of the code this process imported (read once, before any later edit).
SOURCE_REVISION = source_revision()
#: The CPU this process trains on (model name, matrix units), named in every epoch's record.
CPU = cpu_description()
