"""The collector stand-in: a real OTLP receiver (HTTP and gRPC) that only counts.

Run as `python -m bench.collector`; it prints its ports as one JSON line and
then obeys one command per line on stdin, answering each with one JSON line:

    behave fast|slow|blackhole   how the next export requests are answered
    reset                        start counting afresh (a new cell)
    counts                       what arrived since the last reset

`fast` answers at once, `slow` after 200 ms, `blackhole` reads the request and
never answers (until the behaviour changes, when it drops the connection).
Counting happens when a request has arrived in full, before it is answered,
so a blackholed request is counted as received but never acknowledged.

It runs in its own process, unpatched by gevent, so that its threads and
gRPC's never share a loop with the server it measures. It decodes only what
counting needs, to leave the CPU to the server.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLOW_SECONDS = 0.2
# Held requests wake up this often to notice a change of behaviour.
_HOLD_POLL_SECONDS = 0.05


class Counts:
    """Thread-safe tallies for the current cell."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.spans = 0
            self.logs = 0
            self.requests = 0
            self.other_logs = 0
            self.held = 0
            self.bytes = 0

    def add(self, signal: str, items: tuple[int, int], size_bytes: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += size_bytes
            if signal == "traces":
                self.spans += items[0]
            else:
                self.logs += items[0]
                self.other_logs += items[1]

    def add_held(self) -> None:
        with self._lock:
            self.held += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {
                "spans": self.spans,
                "logs": self.logs,
                "other_logs": self.other_logs,
                "requests": self.requests,
                "held": self.held,
                "bytes": self.bytes,
            }


# Records the app writes (access and exception); anything else (a server's
# own log lines, exporter warnings) is counted apart so it cannot hide a loss.
APP_LOGGERS = frozenset({"falcon.access", "falcon.error"})


def count_items(signal: str, payload: bytes) -> tuple[int, int]:
    """(the app's items, other items) in one OTLP export request."""
    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        traces = ExportTraceServiceRequest.FromString(payload)
        spans = sum(
            len(scope.spans)
            for resource in traces.resource_spans
            for scope in resource.scope_spans
        )
        return spans, 0
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    logs = ExportLogsServiceRequest.FromString(payload)
    app = other = 0
    for resource in logs.resource_logs:
        for scope in resource.scope_logs:
            if scope.scope.name in APP_LOGGERS:
                app += len(scope.log_records)
            else:
                other += len(scope.log_records)

    return app, other


class Collector:
    """HTTP and gRPC OTLP endpoints sharing one behaviour and one tally."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.behaviour = "fast"
        # Bumped on every change of behaviour, so held requests let go.
        self._epoch = 0
        self.http_port = 0
        self.grpc_port = 0

    def set_behaviour(self, behaviour: str) -> None:
        if behaviour not in ("fast", "slow", "blackhole"):
            raise ValueError(f"unknown behaviour {behaviour!r}")
        self.behaviour = behaviour
        self._epoch += 1

    def receive(
        self, signal: str, payload: bytes, still_wanted: Callable[[], bool]
    ) -> bool:
        """Count one request, then delay as the behaviour says.

        Returns False when the request must go unanswered.
        """
        self.counts.add(signal, count_items(signal, payload), len(payload))
        behaviour, epoch = self.behaviour, self._epoch
        if behaviour == "slow":
            time.sleep(SLOW_SECONDS)
        elif behaviour == "blackhole":
            self.counts.add_held()
            while epoch == self._epoch and still_wanted():
                time.sleep(_HOLD_POLL_SECONDS)
            return False

        return True

    def start(self) -> None:
        self._start_http()
        self._start_grpc()

    def _start_http(self) -> None:
        collector = self
        paths = {"/v1/traces": "traces", "/v1/logs": "logs"}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length)
                signal = paths.get(self.path.split("?", 1)[0])
                if signal is None:
                    self._answer(404)
                    return
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    import gzip

                    payload = gzip.decompress(payload)
                if collector.receive(signal, payload, lambda: True):
                    self._answer(200)
                else:
                    self.close_connection = True

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the harness reads stdout."""

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                """A client that hangs up (a killed worker) is not news here."""

        server = QuietServer(("127.0.0.1", 0), Handler)
        self.http_port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def _start_grpc(self) -> None:
        import grpc
        from opentelemetry.proto.collector.logs.v1 import (
            logs_service_pb2,
            logs_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        collector = self

        def handle(signal: str, request: Any, context: Any, response: Any) -> Any:
            if not collector.receive(
                signal, request.SerializeToString(), context.is_active
            ):
                context.abort(grpc.StatusCode.UNAVAILABLE, "never answered")
            return response

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return handle(
                    "traces",
                    request,
                    context,
                    trace_service_pb2.ExportTraceServiceResponse(),
                )

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return handle(
                    "logs",
                    request,
                    context,
                    logs_service_pb2.ExportLogsServiceResponse(),
                )

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=64),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        self.grpc_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server


def main() -> int:
    collector = Collector()
    collector.start()
    print(
        json.dumps(
            {"http_port": collector.http_port, "grpc_port": collector.grpc_port}
        ),
        flush=True,
    )
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        answer: dict[str, Any]
        if words[0] == "behave" and len(words) == 2:
            collector.set_behaviour(words[1])
            answer = {"behaviour": collector.behaviour}
        elif words[0] == "reset":
            collector.counts.reset()
            answer = {"reset": True}
        elif words[0] == "counts":
            answer = collector.counts.snapshot()
        else:
            answer = {"error": f"unknown command {line.strip()!r}"}
        print(json.dumps(answer), flush=True)

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
