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


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="showmax-otel",
        description="OpenTelemetry for Falcon services on uWSGI and gunicorn "
        "with gevent.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module_name=module_name)
        # Only the chosen command's module is imported: `showmax-otel
        # check-collector-config` should not load gevent or Falcon.
        if args_list[:1] == [name]:
            import_module(module_name).add_arguments(sub)
    args = parser.parse_args(args_list)
    run: Callable[[argparse.Namespace], int] = import_module(args.module_name).run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
