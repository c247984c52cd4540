"""Command line of the model package: ``python -m train.model summary --preset NAME [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from train.model import MODEL_NAMES, ConvEntion, build_model, measure, to_conv2d_stem


def main(args: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 usage)."""
    parser = argparse.ArgumentParser(prog="python -m train.model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="parameters and multiply-accumulates per stage, per object")
    summary.add_argument("--preset", required=True, choices=MODEL_NAMES, help="model to measure")
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summary.add_argument("--conv2d-stem", action="store_true",
                         help="measure the ConvEntion stem rewritten with Conv2d (as exported)")
    options = parser.parse_args(args)

    model = build_model(options.preset)
    name = options.preset
    if options.conv2d_stem:
        if not isinstance(model, ConvEntion):
            parser.error(f"--conv2d-stem applies to ConvEntion presets, not {options.preset!r}")
        model, name = to_conv2d_stem(model), f"{name} (conv2d stem)"
    cost = measure(model, name)
    print(json.dumps(cost.to_dict(), indent=2) if options.json else cost.table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
