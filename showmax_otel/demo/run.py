"""`showmax-otel demo`: real requests through the real pipeline, then a report.

Topology: this process runs an OTLP receiver (the backend) and, when
asked, the rotel collector in front of it; the catalogue API runs in a
child process under gevent, as a production worker would, and ships to the
collector (or straight to the receiver). The demo sends a few dozen HTTP
requests, stops the app (which flushes), and checks that every request
produced exactly one server span and one access log, every unhandled
exception exactly one ERROR record with its stack trace, and that every
record carries its request's trace id.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..testing import LogView, OTLPReceiver, SpanView, spans_by_trace

__all__ = ["add_arguments", "run"]


@dataclass(frozen=True)
class Call:
    path: str
    expected_status: int
    raises: bool = False


def _plan(rounds: int) -> list[Call]:
    calls = []
    for round_number in range(rounds):
        item = round_number % 6 + 1
        calls += [
            Call("/items", 200),
            Call(f"/items/{item}", 200),
            Call("/search?q=the&token=demo-secret", 200),
            Call("/items/999", 404),
            Call("/no/such/route", 404),
            Call(f"/crash/{'lookup' if round_number % 2 else 'backend'}", 500, True),
        ]

    return calls


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="rounds of 6 requests each (default: 6, so 36 requests)",
    )
    parser.add_argument(
        "--collector",
        choices=("auto", "rotel", "none"),
        default="auto",
        help="ship through the rotel collector binary (auto: when installed)",
    )
    parser.add_argument(
        "--protocol",
        choices=("http/protobuf", "grpc"),
        default="http/protobuf",
        help="OTLP transport from the app (default: http/protobuf)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="print only the summary line"
    )


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        print("showmax-otel demo: --rounds must be 1 or more", file=sys.stderr)
        return 2
    calls = _plan(args.rounds)
    with (
        OTLPReceiver() as backend,
        _collector(args.collector, backend) as (
            endpoints,
            hop,
        ),
    ):
        endpoint = endpoints["grpc" if args.protocol == "grpc" else "http"]
        if not args.quiet:
            print(f"backend: OTLP receiver at {backend.http_endpoint}")
            print(f"collector: {hop}")
        app_stats, sent = _serve_and_call(endpoint, args.protocol, calls)
        spans, logs = _collect(backend, len(calls))

    return _report(calls, sent, spans, logs, app_stats, quiet=args.quiet)


@contextlib.contextmanager
def _collector(
    choice: str, backend: OTLPReceiver
) -> Iterator[tuple[dict[str, str], str]]:
    direct = {"http": backend.http_endpoint, "grpc": backend.grpc_endpoint}
    if choice == "none":
        yield direct, "none (the app ships straight to the receiver)"
        return
    from .._rotel import find_rotel, start_rotel

    if find_rotel() is None:
        if choice == "rotel":
            raise SystemExit(
                "showmax-otel demo: --collector rotel needs the rotel package "
                "(pip install rotel)"
            )
        yield direct, "none (rotel is not installed; pip install rotel)"
        return
    with start_rotel(backend.http_endpoint) as rotel:
        yield (
            {"http": rotel.http_endpoint, "grpc": rotel.grpc_endpoint},
            f"rotel at {rotel.http_endpoint} (HTTP) and {rotel.grpc_endpoint} (gRPC)",
        )


def _serve_and_call(
    endpoint: str, protocol: str, calls: list[Call]
) -> tuple[dict[str, Any], list[tuple[Call, int]]]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SHOWMAX_"))
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "showmax_otel.demo.server",
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
        ],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        if not first:
            raise SystemExit("showmax-otel demo: the app server did not start")
        port = json.loads(first)["port"]
        sent = [(call, _get(port, call.path)) for call in calls]
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            out, _ = child.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            out, _ = child.communicate()
    last = out.strip().splitlines()[-1] if out.strip() else "{}"

    return json.loads(last), sent


def _get(port: int, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.read()
        return int(error.code)


def _collect(
    backend: OTLPReceiver, expected: int
) -> tuple[list[SpanView], list[LogView]]:
    def server_spans(receiver: OTLPReceiver) -> list[SpanView]:
        return [s for s in receiver.spans() if s.kind == "SPAN_KIND_SERVER"]

    def access_logs(receiver: OTLPReceiver) -> list[LogView]:
        return [r for r in receiver.logs() if r.scope == "falcon.access"]

    # The app flushed before exiting; a collector in between forwards on
    # its own schedule, so wait (bounded) for what must arrive.
    backend.wait_for(
        lambda r: len(server_spans(r)) >= expected and len(access_logs(r)) >= expected,
        timeout_seconds=15,
    )
    return backend.spans(), backend.logs()


def _report(
    calls: list[Call],
    sent: list[tuple[Call, int]],
    spans: list[SpanView],
    logs: list[LogView],
    app_stats: dict[str, Any],
    *,
    quiet: bool,
) -> int:
    server = [s for s in spans if s.kind == "SPAN_KIND_SERVER"]
    access = [r for r in logs if r.scope == "falcon.access"]
    # Exception records by their logger: a 5xx access log is ERROR too.
    errors = [
        r
        for r in logs
        if r.scope == "falcon.error"
        and r.severity_text == "ERROR"
        and "exception.stacktrace" in r.attributes
    ]
    server_traces = {s.trace_id for s in server}
    uncorrelated = [r for r in logs if r.trace_id not in server_traces]
    duplicates = _count_duplicates(server, access, errors)
    expected_crashes = sum(1 for call in calls if call.raises)
    wrong_status = [(c.path, got) for c, got in sent if got != c.expected_status]

    if not quiet:
        for trace_id, trace_spans, trace_logs in spans_by_trace(spans, logs):
            for span in trace_spans:
                if span.kind != "SPAN_KIND_SERVER":
                    continue
                status = span.attributes.get("http.response.status_code", "?")
                print(
                    f"trace {trace_id[:12]}  {span.name:<28} {status}  "
                    f"{span.duration_seconds * 1000:7.2f} ms"
                )
            for record in sorted(trace_logs, key=lambda r: r.time_unix_nano):
                print(f"    {record.severity_text:<7} {record.scope}: {_body(record)}")
        if wrong_status:
            print(f"unexpected statuses: {wrong_status}")
        stats = app_stats.get("stats", {})
        print(f"app pipeline: {json.dumps(stats, sort_keys=True)}")

    ok = (
        len(server) == len(calls)
        and len(access) == len(calls)
        and len(errors) == expected_crashes
        and not uncorrelated
        and not duplicates
        and not wrong_status
        and app_stats.get("delivered") is True
    )
    print(
        f"requests={len(calls)} spans={len(server)} access_logs={len(access)} "
        f"exception_logs={len(errors)} expected_exception_logs={expected_crashes} "
        f"uncorrelated={len(uncorrelated)} duplicates={duplicates} "
        f"records={len(logs)} result={'ok' if ok else 'FAILED'}"
    )

    return 0 if ok else 1


def _count_duplicates(
    server: list[SpanView], access: list[LogView], errors: list[LogView]
) -> int:
    """Extra copies: a second server span, access log or ERROR for one request."""
    duplicates = 0
    for counter in (
        Counter(s.trace_id for s in server),
        Counter(r.span_id for r in access),
        Counter(r.span_id for r in errors),
    ):
        duplicates += sum(n - 1 for n in counter.values() if n > 1)

    return duplicates


def _body(record: LogView) -> str:
    text = str(record.body)
    if "exception.type" in record.attributes:
        text += f" [{record.attributes['exception.type']}, with stack trace]"
    return text if len(text) < 160 else text[:157] + "..."
