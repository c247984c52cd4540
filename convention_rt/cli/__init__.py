"""The ``convention-rt`` command line (Typer): one module per command, each one library call.

* :mod:`~convention_rt.cli.app`: the Typer app, its global options and its commands;
* :mod:`~convention_rt.cli.main`: :func:`main`, which runs the app and turns
  errors into one line and an exit code (0 success, 1 bad input, 2 usage, 3 model
  or runtime error; 128 + N when stopped by signal N);
* :mod:`~convention_rt.cli.options`: the options shared by commands;
* one module per command: :mod:`~convention_rt.cli.validate`,
  :mod:`~convention_rt.cli.classify`, :mod:`~convention_rt.cli.models`
  (``info``, ``models``), :mod:`~convention_rt.cli.sample`,
  :mod:`~convention_rt.cli.ingest` (``ingest ztf|rubin``),
  :mod:`~convention_rt.cli.spark` (``spark-classify``).

``convention-rt --version`` is answered by :mod:`convention_rt.launcher` before
this package (and so astropy and ONNX Runtime) is imported.
"""

from __future__ import annotations

from convention_rt.cli.app import app
from convention_rt.cli.main import main

__all__ = ["app", "main"]
