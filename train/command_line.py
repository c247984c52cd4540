"""What the training commands share on the command line: one-line errors and exit codes.

Exit codes: 0 done, 1 bad input, 2 usage, 3 model or export refused.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["OneLineParser", "report_failure"]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``error:`` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def report_failure(exc: BaseException) -> int:
    """Print ``exc`` as one ``error:`` line on stderr; return its exit code (1 unless it carries one)."""
    print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
    return getattr(exc, "exit_code", 1)
