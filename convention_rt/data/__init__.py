"""Data files shipped with convention-rt."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from convention_rt.errors import UsageError
from convention_rt.publish import StagedOutput, output_path

__all__ = ["sample_catalog_path", "write_sample_catalog"]

_COPY_BYTES = 1 << 20


def sample_catalog_path() -> Path:
    """Path of the small sample catalog that ships with the package.

    24 synthetic objects of the four classes in the catalog format; see
    ``docs/data.md`` for the command that generates it.
    """
    return Path(str(resources.files(__name__) / "sample_catalog.fits"))


def write_sample_catalog(out: str | Path, *, overwrite: bool = False) -> Path:
    """Copy the sample catalog to ``out``, whole or not at all.

    Parameters
    ----------
    out : str or Path
        Destination file.
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    UsageError
        ``out`` exists (without ``overwrite``), is a folder, or its folder does
        not exist; or the sample catalog is missing from the installation.
    OutputExistsError
        ``out`` appeared while copying (another run wrote it first) and ``overwrite`` is False.
    OutputError
        The system refused the write (permissions, a full disk, ...).
    """
    out = output_path(out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; give a file name such as {out / 'sample.fits'}")
    if out.exists() and not overwrite:
        raise UsageError(f"{out}: exists already (add --overwrite to replace it)")
    if not out.parent.is_dir():
        raise UsageError(f"{out}: folder {out.parent} does not exist")
    source = sample_catalog_path()
    if not source.is_file():
        raise UsageError(f"{source}: the sample catalog is missing from this installation")
    output = StagedOutput(out, overwrite=overwrite)
    try:
        with source.open("rb") as handle:
            while block := handle.read(_COPY_BYTES):
                with output.writing():
                    output.file.write(block)
        return output.publish()
    except BaseException:
        output.discard()
        raise
