"""The ``convention-rt`` entry point: ``--version`` answered before the runtime is loaded.

Loading the command line imports astropy and ONNX Runtime (about a second);
``convention-rt --version`` needs neither.  Everything else goes to
:func:`convention_rt.cli.main`.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

#: The global options of the command line that take no value, besides ``--version``
#: (:mod:`convention_rt.cli.app`): given with them only, ``--version`` answers as alone.
_GLOBAL_FLAGS = frozenset({"--debug"})


def main(args: list[str] | None = None) -> int:
    """Run the command line, as :func:`convention_rt.cli.main` does.

    Parameters
    ----------
    args : list of str, optional
        The arguments; ``None`` reads ``sys.argv`` and exits with the exit code.

    Returns
    -------
    int
        The exit code (when ``args`` is given).
    """
    given = sys.argv[1:] if args is None else [str(a) for a in args]
    if "--version" in given and set(given) <= _GLOBAL_FLAGS | {"--version"}:
        from convention_rt._version import __version__

        print(f"convention-rt {__version__}")
        if args is None:
            sys.exit(0)
        return 0
    from convention_rt.cli import main as cli_main

    return cli_main(args)
