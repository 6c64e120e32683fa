"""The `showmax-otel` command: demo, doctor, check-collector-config."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

__all__ = ["main"]

# subcommand -> (module providing add_arguments/run, one-line help)
_COMMANDS: dict[str, tuple[str, str]] = {
    "demo": (
        "showmax_otel.demo.run",
        "serve a Falcon catalogue API under gevent, send real requests, and "
        "check what the collector received",
    ),
    "doctor": (
        "showmax_otel.doctor",
        "look for set-ups that lose, double or slow down telemetry, each with its fix",
    ),
    "check-collector-config": (
        "showmax_otel.collector_config",
        "check an OpenTelemetry Collector config offline against its schemas",
    ),
}


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[..., int]]]:
    parser = argparse.ArgumentParser(
        prog="showmax-otel",
        description="OpenTelemetry for Falcon services on uWSGI and gunicorn with gevent.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    runners: dict[str, Callable[..., int]] = {}
    for name, (module_name, help_text) in _COMMANDS.items():
        module = import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        runners[name] = module.run

    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = _parser()
    args = parser.parse_args(argv)

    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
