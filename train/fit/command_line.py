"""``python -m train.fit``'s command line: YAML and flags into a :class:`FitConfig`, logging, exit codes."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

from convention_rt.errors import ConventionError, UsageError
from train.command_line import OneLineParser, report_failure
from train.distributed import setup
from train.fit.config import FitConfig
from train.fit.protocol import fit, prepare

__all__ = ["configure_logging", "main"]

log = logging.getLogger("train")

#: Python type of each FitConfig annotation a flag or a YAML value is read as.
_FIELD_TYPES: dict[str, type] = {"int": int, "float": float, "int | None": int, "str | None": str, "str": str,
                                 "bool": bool}


def _typed(name: str, value: Any, source: str) -> Any:
    """A YAML value as its FitConfig field's type, or a UsageError naming ``source`` and the field."""
    annotation = str(next(f.type for f in dataclasses.fields(FitConfig) if f.name == name))
    if value is None and "None" in annotation:
        return None
    if annotation.startswith("dict"):
        if isinstance(value, dict):
            return value
        raise UsageError(f"{source}: field {name!r} must be a mapping, got {value!r}")
    kind = _FIELD_TYPES[annotation]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{source}: field {name!r} must be true or false, got {value!r}")
    if kind is float and isinstance(value, str):  # YAML reads 1e-3 as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    expected = "a number" if kind is float else "an integer" if kind is int else "a string"
    raise UsageError(f"{source}: field {name!r} must be {expected}{' or null' if 'None' in annotation else ''}, "
                     f"got {value!r}")


def _read_yaml(path: Path) -> dict[str, Any]:
    """FitConfig fields from a YAML file, each checked against its field's type."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the configuration ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: must be a mapping of FitConfig fields, got {type(loaded).__name__}")
    known = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(str(k) for k in loaded if k not in known)
    if unknown:
        raise UsageError(f"{path}: unknown field(s) {', '.join(unknown)}; fields: {', '.join(sorted(known))}")
    return {name: _typed(name, value, str(path)) for name, value in loaded.items()}


def _field_help() -> dict[str, str]:
    """Each field's description, from the FitConfig docstring."""
    helps: dict[str, str] = {}
    lines = (FitConfig.__doc__ or "").split("Attributes\n    ----------\n", 1)[-1].splitlines()
    names: list[str] = []
    for line in lines:
        if line.startswith("    ") and not line.startswith("        ") and line.strip():
            names = [n.strip() for n in line.split(":")[0].split(",")]
        elif line.startswith("        ") and names:
            for name in names:
                helps[name] = (helps.get(name, "") + " " + line.strip()).strip()
    return helps


def _parse(argv: list[str] | None) -> tuple[FitConfig, str]:
    """The run's configuration from ``--config`` YAML and flags (flags win), and the command as typed."""
    from train import fit as package  # its docstring's first line describes the command

    parser = OneLineParser(prog="python -m train.fit", description=(package.__doc__ or "").split("\n")[0])
    parser.add_argument("--config", type=Path, help="YAML file of FitConfig fields (flags override it)")
    helps = _field_help()
    for item in dataclasses.fields(FitConfig):
        if item.name == "extra":
            continue
        kind = _FIELD_TYPES.get(str(item.type), str)
        default = "" if item.default is dataclasses.MISSING else f" (default: {item.default})"
        how = {"action": argparse.BooleanOptionalAction} if kind is bool else {"type": kind}  # --early, --no-early
        parser.add_argument(f"--{item.name.replace('_', '-')}", dest=item.name, default=None,
                            help=helps.get(item.name, "").replace("%", "%%") + default, **how)
    options = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_path = options.pop("config")
    if config_path is not None:
        values.update(_read_yaml(config_path))
    values.update({k: v for k, v in options.items() if v is not None})
    missing = [k for k in ("catalog", "run_dir") if not values.get(k)]
    if missing:
        parser.error(f"missing {', '.join('--' + m.replace('_', '-') for m in missing)}")
    command = "python -m train.fit " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        return FitConfig(**values), command
    except ValueError as exc:
        raise UsageError(f"{config_path or 'command line'}: {exc}") from exc


def configure_logging(run_dir: Path, is_main: bool = True) -> None:
    """Log to the console and to ``run_dir/fit.log`` (in the main process; other ranks stay quiet)."""
    handlers: list[logging.Handler] = []
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        console = RichHandler(console=Console(stderr=True), show_path=False)
        console.setFormatter(logging.Formatter("%(message)s"))
        logfile = logging.FileHandler(run_dir / "fit.log")
        logfile.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers = [console, logfile]
    logging.basicConfig(level=logging.WARNING, handlers=handlers or [logging.NullHandler()], force=True)
    log.setLevel(logging.INFO if is_main else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point: 0 done, 1 bad input, 2 usage, 3 model or export refused, 130 interrupted."""
    try:
        config, command = _parse(argv)
        prepared = prepare(config)  # every check before the run directory is touched
    except (ConventionError, ValueError, OSError) as exc:
        return report_failure(exc)
    group = setup()
    configure_logging(Path(config.run_dir), group.is_main)
    if group.distributed:
        log.info("data-parallel training over %d processes", group.world)
    try:
        fit(config, command, group, prepared)
    except (ConventionError, ValueError, OSError) as exc:
        return report_failure(exc)
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume", file=sys.stderr)
        return 130
    finally:
        group.close()
    return 0
