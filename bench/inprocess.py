"""CPU per request of `bench.app` in one process: no server, no network.

`python -m bench.inprocess MODE [MODE ...]` runs the catalogue app of each
mode in a child process of its own, monkey-patched by gevent, a greenlet per
request (as uWSGI's and gunicorn's gevent loops run them), 32 at a time, with
the benchmark's route mix, and prints the process CPU per request (export
thread included) for each, over `--rounds` rounds taken in turn; then the
time spent in the garbage collector per request and the longest full
collection (which holds every greenlet). The modes that export talk to a
collector stand-in (`bench.collector`) on loopback.

It is steadier than the servers' figures (no wrk, no sockets, no uWSGI), so
it is the quick way to see what a change to the request path moves;
`py-spy record --gil -- python -m bench.inprocess --child MODE` profiles one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.modes import MODES


def _child(mode: str, requests: int, endpoint: str) -> None:
    import gc

    from gevent import monkey

    monkey.patch_all()
    import io
    import time

    os.environ["BENCH_MODE"] = mode
    os.environ.setdefault("OTEL_SERVICE_NAME", "bench-inprocess")
    if MODES[mode].protocol is not None:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint

    import gevent

    from bench.app import app
    from bench.loadgen import route_sequence

    def environ(path: str) -> dict[str, Any]:
        route, _, query = path.partition("?")
        return {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": route,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_USER_AGENT": "bench-inprocess",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": io.StringIO(),
            "wsgi.version": (1, 0),
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return lambda data: None

    def serve(path: str) -> None:
        body = app(environ(path), start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()

    paths = route_sequence(requests, seed=11)
    for path in paths[:2000]:
        gevent.spawn(serve, path).join()
    collections = _CollectionTimes()
    gc.callbacks.append(collections)
    started = time.process_time()
    for first in range(0, requests, 32):
        batch = paths[first : first + 32]
        gevent.joinall([gevent.spawn(serve, path) for path in batch])
    used = time.process_time() - started
    gc.callbacks.remove(collections)
    print(
        json.dumps(
            {
                "mode": mode,
                "cpu_us_per_request": used / requests * 1e6,
                "gc_us_per_request": collections.total / requests * 1e6,
                "full_collections": collections.full,
                "longest_full_ms": collections.longest_full * 1e3,
            }
        )
    )


class _CollectionTimes:
    """A `gc.callbacks` entry: wall time in the collector, and the longest
    full collection (the one that stops every greenlet longest)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.full = 0
        self.longest_full = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
            return
        took = now - self._started
        self.total += took
        if info["generation"] == 2:
            self.full += 1
            self.longest_full = max(self.longest_full, took)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.inprocess", description=__doc__.splitlines()[0]
    )
    parser.add_argument("modes", nargs="+", choices=sorted(MODES), metavar="MODE")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    if args.child:
        _child(args.modes[0], args.requests, args.endpoint)
        return 0

    from bench.run import CollectorProcess

    collector = CollectorProcess(cpu=None)
    endpoint = f"http://127.0.0.1:{collector.http_port}"
    collected: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.modes}
    try:
        for _ in range(args.rounds):
            for mode in args.modes:
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bench.inprocess",
                        "--child",
                        mode,
                        "--requests",
                        str(args.requests),
                        "--endpoint",
                        endpoint,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=600,
                )
                if done.returncode != 0:
                    print(done.stderr[-2000:], file=sys.stderr)
                    return 1
                result = json.loads(done.stdout.strip().splitlines()[-1])
                collected[mode].append(result)
    finally:
        collector.close()

    for mode, results in collected.items():
        values = [r["cpu_us_per_request"] for r in results]
        print(
            f"{mode:20} median {statistics.median(values):7.1f} µs/request "
            f"(min {min(values):.1f}, max {max(values):.1f}, {len(values)} rounds)"
        )
    print("garbage collection, medians over the rounds:")
    for mode, results in collected.items():
        gc_us = statistics.median(r["gc_us_per_request"] for r in results)
        full = statistics.median(r["full_collections"] for r in results)
        longest = statistics.median(r["longest_full_ms"] for r in results)
        print(
            f"{mode:20} {gc_us:5.1f} µs/request in the collector; "
            f"{full:g} full collections, the longest {longest:.1f} ms"
        )

    return 0


if __name__ == "__main__":
    sys.exit(main())
