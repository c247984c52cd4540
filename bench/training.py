"""Training cost per model of the results table: one optimiser step, side by side.

For each model (ConvEntion presets, ablations, baselines) one training step of
``train.fit`` (bf16 autocast or fp32 forward, cross-entropy, backward, Adam) on a
batch of random inputs shaped like the benchmark's, timed in rounds where the
models take turns, so that the load of a shared machine falls on all of them
alike; the best round counts.  Printed per model: seconds per step, objects per
second, and the projected seconds per epoch of the benchmark's stages (an epoch
draws as many objects as the stage has: ``--epoch-objects``, default 2883 and
2229, the ``phot`` and ``spec`` training objects of fold 0 of the benchmark).  The ``paper``
preset is timed on smaller batches, objects/s being what carries over.

Every model trains as ``train.fit`` trains it (``training_form``): the attention
computed once per sequence, the stem's Conv3d blocks as Conv2d over time-stacked
channels.  Two rows undo one form each, for the ratios measured in the same run:
``compact-pairwise`` computes all N x N pairs of the attention, ``compact-conv3d``
runs the stem's Conv3d layers as built; ``paper-stacked`` time-stacks the paper's
stem, which ``train.fit`` leaves as built (``NARROW_STEM_CHANNELS``).  ``cnn_gru-published``
and ``cnn_lstm-published`` run the frame CNN as first written: Conv2d + ReLU + MaxPool in
contiguous (channels-first) memory, the same function as the baselines' channels-last
Conv2d + MaxPool + ReLU.

Usage: ``python bench/training.py [--json] [--models compact cnn_gru ...] [--threads 1]
[--batch 128] [--paper-batch 8] [--repeats 3] [--precision bf16]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.model import (  # noqa: E402
    build_model,
    example_inputs,
    get_baseline,
    get_preset,
    training_form,
)
from train.model.attention import ConvAttention

CLASSES = ("AGN", "SNIa", "SNOther", "Variable")
N_BAND_IDS = 7  # the benchmark's six LSST bands and padding


def configuration(name: str) -> object:
    """The model of a results-table row, for the benchmark's classes and bands."""
    if name in ("paper", "compact", "compact-pairwise", "compact-conv3d", "paper-stacked"):
        return dataclasses.replace(get_preset(name.split("-")[0]), classes=CLASSES)
    if name == "compact-stacked-bands":
        return dataclasses.replace(get_preset("compact"), classes=CLASSES, band_input="stacked",
                                   band_embedding=False, n_band_ids=N_BAND_IDS)
    if name == "compact-no-position":
        return dataclasses.replace(get_preset("compact"), classes=CLASSES, positional_encoding="none")
    return dataclasses.replace(get_baseline(name.removesuffix("-published")), classes=CLASSES)


def published_frame_cnn(model: nn.Module) -> None:
    """Run a frame-RNN baseline's CNN as first written: Conv2d + ReLU + MaxPool, channels-first."""
    convs = [layer.to(memory_format=torch.contiguous_format) for layer in model.cnn if isinstance(layer, nn.Conv2d)]
    model.cnn = nn.Sequential(*[layer for conv in convs for layer in (conv, nn.ReLU(), nn.MaxPool2d(2))],
                              nn.Flatten())


def step_seconds(model: nn.Module, optimiser: torch.optim.Optimizer, inputs: tuple, labels: torch.Tensor,
                 precision: str) -> float:
    """Wall seconds of one training step."""
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = nn.functional.cross_entropy(model(*inputs), labels)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--models", nargs="+", default=["compact", "compact-pairwise", "compact-conv3d",
                                                        "compact-stacked-bands",
                                                        "compact-no-position",
                                                        "cnn_gru", "cnn_gru-published", "cnn_lstm",
                                                        "cnn_lstm-published", "lc_lstm", "paper", "paper-stacked"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--paper-batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--epoch-objects", nargs=2, type=int, default=[2883, 2229], metavar=("PHOT", "SPEC"))
    options = parser.parse_args(argv)
    torch.set_num_threads(options.threads)

    cells = {}
    for name in options.models:
        config = configuration(name)
        batch = options.paper_batch if name.startswith("paper") else options.batch
        torch.manual_seed(0)
        model = build_model(config).train()
        training_form(model)  # as train.fit trains it
        if name.endswith("-pairwise"):
            for module in model.modules():
                if isinstance(module, ConvAttention):
                    module.once_per_sequence = False
        if name.endswith(("-conv3d", "-stacked")):
            model.stem.time_stacked = name.endswith("-stacked")
        if name.endswith("-published"):
            published_frame_cnn(model)
        inputs = example_inputs(config, batch, seed=1)
        inputs = (inputs[0], inputs[1].clamp(max=N_BAND_IDS - 1), inputs[2] - inputs[2][:, :1])
        labels = torch.randint(0, len(CLASSES), (batch,))
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        step_seconds(model, optimiser, inputs, labels, options.precision)  # warm-up
        cells[name] = {"model": model, "optimiser": optimiser, "inputs": inputs, "labels": labels,
                       "batch": batch, "times": [], "parameters": sum(p.numel() for p in model.parameters())}
    for _ in range(options.repeats):
        for cell in cells.values():
            cell["times"].append(step_seconds(cell["model"], cell["optimiser"], cell["inputs"], cell["labels"],
                                              options.precision))

    rows = []
    reference = None
    for name, cell in cells.items():
        best = min(cell["times"])
        per_second = cell["batch"] / best
        reference = reference or per_second
        rows.append({"model": name, "parameters": cell["parameters"], "batch": cell["batch"],
                     "seconds_per_step": best, "objects_per_second": per_second,
                     "relative_to_first": per_second / reference,
                     "pretrain_epoch_seconds": options.epoch_objects[0] / per_second,
                     "finetune_epoch_seconds": options.epoch_objects[1] / per_second})
    if options.json:
        print(json.dumps({"threads": options.threads, "precision": options.precision, "rows": rows}, indent=2))
        return 0
    print(f"training step, {options.threads} thread(s), {options.precision}, best of {options.repeats} rounds")
    print(f"{'model':<24}{'params':>10}{'batch':>7}{'s/step':>9}{'obj/s':>9}{'x first':>9}"
          f"{'s/epoch phot':>14}{'s/epoch spec':>14}")
    for row in rows:
        print(f"{row['model']:<24}{row['parameters']:>10,}{row['batch']:>7}{row['seconds_per_step']:>9.2f}"
              f"{row['objects_per_second']:>9.1f}{row['relative_to_first']:>9.2f}"
              f"{row['pretrain_epoch_seconds']:>14.0f}{row['finetune_epoch_seconds']:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
