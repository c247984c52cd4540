"""Data-parallel training with torchrun (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from train.distributed import Group  # noqa: E402

from convention_rt.data import sample_catalog_path  # noqa: E402
from convention_rt.session import ModelSession  # noqa: E402

pytestmark = pytest.mark.torch
ROOT = Path(__file__).resolve().parents[1]


def test_single_process_group_is_the_identity():
    group = Group()
    assert group.is_main and not group.distributed
    np.testing.assert_array_equal(group.shard(np.arange(5)), np.arange(5))
    np.testing.assert_array_equal(group.sum(np.array([1.5, 2.0], dtype=np.float32)), [1.5, 2.0])
    assert Group(rank=1, world=2).shard(np.arange(5)).tolist() == [1, 3]


def torchrun(run_dir: Path, export: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
               "-m", "train.fit", "--catalog", str(sample_catalog_path()), "--run-dir", str(run_dir),
               "--folds", "2", "--members", "1", "--epochs", "1", "--batch-size", "8", "--threads", "1",
               "--export-out", str(export)]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600, check=False)


@pytest.mark.slow
def test_two_process_training_completes_exports_and_resumes(tmp_path):
    run_dir, export = tmp_path / "run", tmp_path / "export"
    first = torchrun(run_dir, export)
    assert first.returncode == 0, first.stderr[-3000:]
    log = (run_dir / "fit.log").read_text()
    assert "data-parallel training over 2 processes" in log
    assert log.count("pretrain_phot epoch 0") == 2  # one line per member, written by rank 0 only
    metrics = json.loads((run_dir / "metrics.json").read_text())
    session = ModelSession(export / "model.onnx", device="cpu")
    assert session.card.metrics["cross_validation"] == metrics["cross_validation"]

    again = torchrun(run_dir, export)  # everything is done: nothing is trained again
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "fit.log").read_text().count("pretrain_phot epoch 0") == 2
    assert json.loads((run_dir / "metrics.json").read_text())["per_fold"] == metrics["per_fold"]
