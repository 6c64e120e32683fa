"""What one setting costs: server CPU per request of one mode, with and without it.

`python -m bench.cpu MODE --set NAME=VALUE [--set ...]` serves the benchmark
app in MODE on one server (uWSGI by default, pinned to CPU 0), saturates it
with wrk and the benchmark's route mix (pinned to CPU 1) and prints the
server's CPU µs per request, in rounds that alternate between the mode as
it is and the mode with the given environment variables, then the medians.
Without `--set` it measures the mode alone. For example, what the hub-block
watch costs: `python -m bench.cpu showmax --set
SHOWMAX_OTEL_HUB_BLOCK_THRESHOLD_MILLIS=0`.

Longer runs than the main benchmark's cells (10 s by default) on a single
server lifetime each, so differences of a few µs show; they are still
figures of a shared machine: compare medians, and look at the spread.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from bench.modes import MODES
from bench.run import (
    WRK_MISSING,
    CollectorProcess,
    Plan,
    _cpu_seconds,
    _endpoint,
    _process_tree,
    _run_wrk,
    _warm_up,
    running_server,
)


def _measure(
    server: str,
    mode: str,
    endpoint: str | None,
    extra_env: dict[str, str],
    seconds: float,
    log_dir: Path,
) -> float:
    plan = Plan()
    with running_server(
        server,
        mode,
        endpoint,
        log_dir / f"{server}-{mode}.log",
        plan.stop_wait_later_seconds,
        plan.server_cpu,
        extra_env,
    ) as facts:
        port = facts["port"]
        _warm_up(port)
        # Past the first exports and the caches' filling.
        _run_wrk(port, 2, plan.connections, plan.load_cpu)
        processes = _process_tree(facts["server_pid"])
        before = _cpu_seconds(processes)
        saturation = _run_wrk(port, seconds, plan.connections, plan.load_cpu)
        used = _cpu_seconds(processes) - before
    if not saturation["requests"]:
        raise RuntimeError(f"{mode} served no request; see {log_dir}")

    return used / saturation["requests"] * 1e6


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(
            f"--set takes NAME=VALUE (an environment variable); got {text!r}"
        )
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cpu", description=__doc__.splitlines()[0]
    )
    parser.add_argument("mode", choices=sorted(MODES), metavar="MODE")
    parser.add_argument(
        "--set", dest="settings", type=_setting, action="append", default=[]
    )
    parser.add_argument("--server", choices=["uwsgi", "gunicorn"], default="uwsgi")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.seconds < 1 or args.rounds < 1:
        parser.error("--seconds and --rounds must be at least 1")
    if shutil.which("wrk") is None:
        parser.error(WRK_MISSING)

    variants = {"as it is": {}}
    if args.settings:
        label = " ".join(f"{name}={value}" for name, value in args.settings)
        variants[label] = dict(args.settings)
    figures: dict[str, list[float]] = {label: [] for label in variants}
    collector = CollectorProcess(cpu=None)
    try:
        endpoint = _endpoint(args.mode, "fast", collector, dead_port=0)
        with tempfile.TemporaryDirectory(prefix="bench-cpu-") as logs:
            for number in range(args.rounds):
                for label, extra_env in variants.items():
                    value = _measure(
                        args.server,
                        args.mode,
                        endpoint,
                        extra_env,
                        args.seconds,
                        Path(logs),
                    )
                    figures[label].append(value)
                    print(f"round {number + 1}: {label:40} {value:7.1f} µs/request")
    finally:
        collector.close()

    for label, values in figures.items():
        print(
            f"{args.server} {args.mode} {label}: median {statistics.median(values):.1f}"
            f" µs/request (min {min(values):.1f}, max {max(values):.1f})"
        )

    return 0


if __name__ == "__main__":
    sys.exit(main())
