"""An open-loop load generator: requests leave on a fixed schedule, answered or not.

`python -m bench.loadgen --port P --rate R --seconds S` sends R requests per
second for S seconds over keep-alive HTTP/1.1 connections (opening more when
every open one is busy), with the same mix of routes as bench/mix.lua, and
prints one JSON line of results.

Latency is measured from the moment a request was *due*, not from when it was
written, so a server that stalls is charged for the requests it delayed
(no coordinated omission). Requests still unanswered when the run ends are
reported as `unfinished` and enter the percentiles with the time they had
waited, a lower bound.

Limitation: it is Python on one core; above a few thousand requests per
second its own scheduling lateness enters the latencies (it errs towards
reporting the server slower, never faster). `achieved_rate` shows when it
could not keep up.

Written here because Debian packages no open-loop HTTP load tool (wrk, ab and
hey all wait for each answer before sending the next request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field

__all__ = ["ROUTE_MIX", "percentile", "route_sequence", "run"]

# (weight, path template); `{id}` and `{q}` are filled per request. The same
# mix as bench/mix.lua.
ROUTE_MIX = (
    (30, "/items?limit=20"),
    (40, "/items/{id}"),
    (25, "/search?q={q}"),
    (5, "/fail"),
)
_QUERIES = ("drama", "live", "kids", "award", "season", "zzz")


def route_sequence(count: int, seed: int = 1) -> list[str]:
    """`count` request paths drawn from the mix, the same for every run."""
    chooser = random.Random(seed)
    weights = [weight for weight, _ in ROUTE_MIX]
    templates = [template for _, template in ROUTE_MIX]
    paths = []
    for template in chooser.choices(templates, weights, k=count):
        paths.append(
            template.format(id=chooser.randrange(200), q=chooser.choice(_QUERIES))
        )

    return paths


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values fall (nearest rank)."""
    if not sorted_values:
        return float("nan")
    index = min(
        len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1)
    )

    return sorted_values[index]


@dataclass
class _Results:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    dropped: int = 0


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer

    async def get(self, request: bytes) -> tuple[int, bool]:
        """Send one request; return the status and whether the connection lives on."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        keep_alive = True
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                keep_alive = False
        if length:
            await self.reader.readexactly(length)

        return status, keep_alive

    def close(self) -> None:
        self.writer.close()


async def run(
    host: str,
    port: int,
    rate: float,
    seconds: float,
    max_in_flight: int = 512,
    grace_seconds: float = 1.0,
) -> dict[str, object]:
    """Send `rate` requests per second for `seconds`; return the measurements."""
    loop = asyncio.get_running_loop()
    count = max(1, int(rate * seconds))
    paths = route_sequence(count)
    idle: list[_Connection] = []
    results = _Results()
    pending: dict[asyncio.Task[None], float] = {}

    async def one(due: float, path: str) -> None:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        connection = idle.pop() if idle else None
        try:
            if connection is None:
                connection = _Connection(*await asyncio.open_connection(host, port))
            status, keep_alive = await connection.get(request)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            results.errors += 1
            if connection is not None:
                connection.close()
            return
        results.latencies.append(loop.time() - due)
        results.statuses[status] = results.statuses.get(status, 0) + 1
        if keep_alive:
            idle.append(connection)
        else:
            connection.close()

    start = loop.time() + 0.05
    for index, path in enumerate(paths):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(pending) >= max_in_flight:
            # The server is so far behind that the generator would need more
            # connections than it allows itself; the request is not sent.
            results.dropped += 1
            continue
        task = loop.create_task(one(due, path))
        pending[task] = due
        task.add_done_callback(lambda done: pending.pop(done, None))
    sent_seconds = loop.time() - start

    unfinished_waits: list[float] = []
    if pending:
        await asyncio.wait(list(pending), timeout=grace_seconds)
        now = loop.time()
        for task, due in list(pending.items()):
            unfinished_waits.append(now - due)
            task.cancel()
    for connection in idle:
        connection.close()

    latencies = sorted(results.latencies + unfinished_waits)
    ok = sum(n for status, n in results.statuses.items() if status < 500)

    return {
        "offered_rate": rate,
        "seconds": sent_seconds,
        "sent": count - results.dropped,
        "completed": len(results.latencies),
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(results.statuses.items())},
        "errors": results.errors,
        "dropped": results.dropped,
        "unfinished": len(unfinished_waits),
        "achieved_rate": len(results.latencies) / sent_seconds if sent_seconds else 0,
        "latency_ms": {
            "p50": percentile(latencies, 0.50) * 1000,
            "p90": percentile(latencies, 0.90) * 1000,
            "p99": percentile(latencies, 0.99) * 1000,
            "max": (latencies[-1] if latencies else float("nan")) * 1000,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-in-flight", type=int, default=512)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be positive")

    started = time.perf_counter()
    result = asyncio.run(
        run(args.host, args.port, args.rate, args.seconds, args.max_in_flight)
    )
    result["wall_seconds"] = time.perf_counter() - started
    print(json.dumps(result), flush=True)

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
