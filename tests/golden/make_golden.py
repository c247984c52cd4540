"""Write the golden outputs of a shipped model on its golden inputs, computed with PyTorch.

    python tests/golden/make_golden.py tests/golden/checkpoints/compact-4class.ckpt \
        --out tests/golden/convention-compact-1.0.0.json
    python tests/golden/make_golden.py tests/golden/checkpoints/compact-4class-1.1.0.ckpt --version 1.2.0 \
        --evaluations results/models/compact-4class-1.1.0 --out tests/golden/convention-compact-1.2.0.json

(``tests/golden/checkpoints/<run>.ckpt`` is the ``ensemble.ckpt`` of the run folder
named in the card's provenance, kept with the tests: runs are not in the repository.)

(``--version`` and ``--evaluations`` as for ``python -m train.export``: the same
checkpoint as exported, with its temperature.)

A model of difference stamps reads ``--catalog tests/golden/difference-sample.fits``
(``tests/golden/make_difference_sample.py``) instead: on the sample's science stamps it
would flag every object out of its domain.

The inputs are the sample catalog that ships with the package, preprocessed by the
runtime (:func:`convention_rt.transform.to_inputs` with the checkpoint's
card); the outputs are those of the checkpoint's members in PyTorch (fp32,
evaluation mode), so the runtime's ONNX predictions are checked against the model
as trained, not against themselves.  Statuses say ``low_information`` by the rule of
the domain on the shipped card of the same name and version (the checkpoint's own
card may predate domains): what the runtime must report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convention_rt.catalog import Catalog
from convention_rt.data import sample_catalog_path
from convention_rt.errors import ModelError
from convention_rt.transform import to_inputs
from convention_rt.registry import resolve_model
from train.checkpoint import Checkpoint
from train.export import with_evaluations


def golden_outputs(checkpoint_path: Path | Checkpoint, catalog_path: Path | None = None) -> dict[str, Any]:
    """Per-object outputs of the checkpoint's ensemble (at its temperature) on ``catalog_path`` (default: the
    sample catalog).

    Returns
    -------
    dict
        ``model`` (name/version), ``classes``, and per object: ``object_id``,
        ``probabilities`` (ensemble mean, classes), ``spread`` (std over members
        of the predicted class's probability), ``n_frames``, ``status``
        (NaN probabilities and spread for flagged objects).
    """
    checkpoint = checkpoint_path if isinstance(checkpoint_path, Checkpoint) else Checkpoint.load(checkpoint_path)
    card = checkpoint.card()
    members = checkpoint.build_members()
    with Catalog(catalog_path or sample_catalog_path(), stamp_size=card.stamp_size) as catalog:
        chunk = next(catalog.iter_chunks(max_objects=catalog.n_objects))
    inputs = to_inputs(chunk, card)
    seq = inputs.sequences
    with torch.no_grad():
        tensors = (torch.from_numpy(seq.stamps), torch.from_numpy(seq.band_ids), torch.from_numpy(inputs.times))
        per_member = np.stack([torch.softmax(m(*tensors) / checkpoint.temperature, dim=-1).numpy()
                               for m in members], axis=1)
    mean = per_member.mean(axis=1)
    best = mean.argmax(axis=1)
    spread = per_member[np.arange(len(chunk)), :, best].std(axis=1)
    valid = inputs.valid
    domain = _shipped_domain(card.name, card.version) or card.domain
    if domain is not None:
        inputs.low_information = domain.low_information(np.where(valid[:, None], mean, np.nan),
                                                        np.where(valid, seq.n_frames, 0))
    return {
        "model": f"{card.name}/{card.version}", "classes": list(card.classes),
        "object_id": [str(i) for i in chunk.object_ids],
        "probabilities": np.where(valid[:, None], mean, np.nan).tolist(),
        "spread": np.where(valid, spread, np.nan).tolist(),
        "n_frames": np.where(valid, seq.n_frames, 0).tolist(),
        "status": [inputs.status(i) for i in range(len(chunk))],
    }


def _shipped_domain(name: str, version: str):
    """The domain on the shipped card of ``name/version`` (None when that model is not shipped)."""
    try:
        return resolve_model(f"{name}/{version}").card().domain
    except ModelError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--version", default=None, help="as python -m train.export --version")
    parser.add_argument("--evaluations", type=Path, default=None, metavar="RUN_DIR",
                        help="as python -m train.export --evaluations")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="the golden inputs (default: the sample catalog; tests/golden/difference-sample.fits "
                             "for a model of difference stamps)")
    options = parser.parse_args(argv)
    checkpoint = Checkpoint.load(options.checkpoint)
    if options.version:
        checkpoint = dataclasses.replace(checkpoint, version=options.version)
    if options.evaluations:
        checkpoint = with_evaluations(checkpoint, options.evaluations)
    outputs = golden_outputs(checkpoint, options.catalog)
    options.out.write_text(json.dumps(outputs, indent=1) + "\n")
    print(f"{options.out}: {len(outputs['object_id'])} objects of {outputs['model']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
