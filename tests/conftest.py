"""Fixtures shared by the test modules; what they build comes from ``helpers.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from helpers import FullDisk, tiny_card, write_small_catalog, write_tiny_onnx


@pytest.fixture
def small_catalog(tmp_path: Path) -> Path:
    return write_small_catalog(tmp_path / "small.fits")


@pytest.fixture
def tiny_model(tmp_path: Path):
    """(model path, card) with card.json written beside the model, checksum included."""
    from convention_rt.model_card import sha256_of

    model = write_tiny_onnx(tmp_path / "model.onnx")
    card = replace(tiny_card(), sha256=sha256_of(model))
    (tmp_path / "card.json").write_text(card.to_json())
    return model, card


@pytest.fixture
def classifier(tiny_model):
    """A CPU classifier of the tiny model, one thread, batches of 4."""
    from convention_rt import Classifier

    return Classifier(tiny_model[0], device="cpu", threads=1, batch_size=4)


@pytest.fixture
def sleeping_child():
    """A running process other than this one."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder where no file can be created, by the real system: chmod, or (as root) the immutable attribute."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False) \
        if Path("/usr/bin/chattr").exists() or Path("/bin/chattr").exists() else None
    if made is None or made.returncode != 0:
        pytest.skip("running as root where the immutable attribute cannot be set: no unwritable folder")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.fixture
def full_disk(monkeypatch):
    """Temporary output files that fill the disk after their first 6000 bytes."""
    from convention_rt import publish as crt_publish

    def open_full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return FullDisk(open(*args, **kwargs), 6000)

    monkeypatch.setattr(crt_publish, "open", open_full, raising=False)
