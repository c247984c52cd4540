"""``convention-rt classify`` stopped by a signal, as a real process: no temporary file, one line, exit 128 + N.

The child process writes a marker file after its first batch of results and
then takes its time between batches, so that the signal lands mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import write_small_catalog

SLOW_CLASSIFY = """
import os, sys, time
from pathlib import Path
from convention_rt import predictions
from convention_rt.cli import main

write = predictions.PredictionWriter.write

def write_slowly(self, batch):
    write(self, batch)
    Path(os.environ["MARKER"]).touch()  # a batch is in the temporary file
    time.sleep(0.5)

predictions.PredictionWriter.write = write_slowly
sys.exit(main(sys.argv[1:]))
"""


def start_classify(tmp_path: Path, model: Path, out: Path) -> tuple[subprocess.Popen, Path]:
    catalog = write_small_catalog(tmp_path / "survey.fits", n_objects=40)
    marker = tmp_path / "first-batch-written"
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLASSIFY, "classify", str(catalog), "--model", str(model), "--device", "cpu",
         "--threads", "1", "--chunk-size", "1", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "MARKER": str(marker), "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"classify did not start writing: {child.communicate()[1]}")
        time.sleep(0.02)
    return child, marker


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.startswith("p."))


@pytest.mark.parametrize("suffix", [".fits", ".csv"])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_removes_the_temporary_output(tmp_path, tiny_model, suffix, signum, code):
    out = tmp_path / f"p{suffix}"
    child, _ = start_classify(tmp_path, tiny_model[0], out)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".part")]  # the run is writing
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code
    assert err.strip().splitlines() == [f"error: stopped by {signal.Signals(signum).name}; "
                                        "unfinished outputs are removed"]
    assert leftovers(tmp_path) == []


def test_a_killed_run_leaves_a_temporary_file_the_next_run_removes(tmp_path, tiny_model):
    out = tmp_path / "p.csv"
    child, _ = start_classify(tmp_path, tiny_model[0], out)
    child.kill()  # SIGKILL: no clean-up possible
    child.communicate(timeout=60)
    left = [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")]
    assert len(left) == 1 and left[0].startswith(f".p.csv.{child.pid}.")
    result = subprocess.run(
        [sys.executable, "-m", "convention_rt", "classify", str(tmp_path / "survey.fits"), "--model",
         str(tiny_model[0]), "--device", "cpu", "--threads", "1", "-o", str(out)],
        capture_output=True, text=True, check=False, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"info: {out}: removed 1 temporary file(s) left by runs that no longer run: {left[0]}"]
    assert leftovers(tmp_path) == ["p.csv"]
