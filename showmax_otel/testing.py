"""Helpers for testing telemetry: a real OTLP receiver and assertions on it.

`OTLPReceiver` listens on 127.0.0.1 for OTLP over HTTP/protobuf and over
gRPC, decodes every export request with opentelemetry-proto and keeps what
arrived, so that a test can assert on exactly what left the process::

    from showmax_otel.testing import OTLPReceiver

    with OTLPReceiver() as receiver:
        init_telemetry(endpoint=receiver.http_endpoint)
        ...  # exercise the app
        shutdown_telemetry()
        receiver.wait_for(lambda r: len(r.logs()) >= 1)
        assert receiver.logs()[0].trace_id == receiver.spans()[0].trace_id

The receiver runs on real OS threads and real sockets. In a process that
gevent has monkey-patched, run it in another process (see `python -m
showmax_otel.testing --help`): gRPC's server threads block in C and would
hold the hub.
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "LogView",
    "OTLPReceiver",
    "ReceivedRequest",
    "ReceiverTLS",
    "SpanView",
    "reset_telemetry",
    "spans_by_trace",
]

_SIGNAL_PATHS = {"/v1/traces": "traces", "/v1/logs": "logs", "/v1/metrics": "metrics"}


@dataclass(frozen=True)
class SpanView:
    """One span as the receiver decoded it; ids are lowercase hex."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: str
    status_code: str
    status_message: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    scope: str
    trace_flags: int

    @property
    def duration_seconds(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e9


@dataclass(frozen=True)
class LogView:
    """One log record as the receiver decoded it; ids are lowercase hex."""

    body: Any
    severity_text: str
    severity_number: int
    trace_id: str
    span_id: str
    trace_flags: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    time_unix_nano: int


@dataclass(frozen=True)
class ReceivedRequest:
    """What one export request looked like on the wire."""

    signal: str
    protocol: str
    path: str
    headers: dict[str, str]
    size_bytes: int
    items: int
    # Whether the request came over TLS (the receiver was started with tls=).
    tls: bool = False


@dataclass(frozen=True)
class ReceiverTLS:
    """Certificate and key the receiver serves TLS with.

    With `client_ca_file`, a client must present a certificate signed by
    that CA (mutual TLS); without one, the handshake fails.
    """

    certificate_file: str
    key_file: str
    client_ca_file: str | None = None


def _any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _key_values(value.kvlist_value.values)

    return getattr(value, kind)


def _key_values(pairs: Any) -> dict[str, Any]:
    return {pair.key: _any_value(pair.value) for pair in pairs}


def _decode_spans(payload: bytes) -> list[SpanView]:
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(payload)
    views = []
    for resource_spans in request.resource_spans:
        resource = _key_values(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                views.append(
                    SpanView(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=trace_pb2.Span.SpanKind.Name(span.kind),
                        status_code=trace_pb2.Status.StatusCode.Name(span.status.code),
                        status_message=span.status.message,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=_key_values(span.attributes),
                        events=[
                            {"name": event.name, **_key_values(event.attributes)}
                            for event in span.events
                        ],
                        resource=resource,
                        scope=scope_spans.scope.name,
                        trace_flags=span.flags & 0xFF,
                    )
                )

    return views


def _decode_logs(payload: bytes) -> list[LogView]:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    request = logs_service_pb2.ExportLogsServiceRequest()
    request.ParseFromString(payload)
    views = []
    for resource_logs in request.resource_logs:
        resource = _key_values(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                views.append(
                    LogView(
                        body=_any_value(record.body),
                        severity_text=record.severity_text,
                        severity_number=record.severity_number,
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                        trace_flags=record.flags & 0xFF,
                        attributes=_key_values(record.attributes),
                        resource=resource,
                        scope=scope_logs.scope.name,
                        time_unix_nano=record.time_unix_nano,
                    )
                )

    return views


def _decompress(payload: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(payload)
    if encoding == "deflate":
        return zlib.decompress(payload)

    return payload


class _QuietHTTPServer(ThreadingHTTPServer):
    """Says nothing when an exporter hangs up mid-request (a killed worker)."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class OTLPReceiver:
    """A real OTLP receiver (HTTP/protobuf and gRPC) on 127.0.0.1.

    Ports are chosen by the kernel at start. `fail_next()` makes the next
    export requests answer with an error status, to exercise retries;
    `hold_responses()` accepts requests and never answers them, like a
    collector that hangs.
    """

    def __init__(
        self,
        *,
        http: bool = True,
        grpc: bool = True,
        http_port: int = 0,
        grpc_port: int = 0,
        tls: ReceiverTLS | None = None,
    ) -> None:
        self._want_http = http
        self._want_grpc = grpc
        # 0 lets the kernel choose; a fixed port lets a test restart a
        # receiver where exporters already point.
        self._wanted_http_port = http_port
        self._wanted_grpc_port = grpc_port
        self._tls = tls
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._spans: list[SpanView] = []
        self._logs: list[LogView] = []
        self._requests: list[ReceivedRequest] = []
        self._failures_left = 0
        self._failure_status = 503
        self._hold = threading.Event()
        self._http_server: ThreadingHTTPServer | None = None
        self._grpc_server: Any = None
        self.http_port = 0
        self.grpc_port = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> OTLPReceiver:
        if self._want_http:
            self._start_http()
        if self._want_grpc:
            self._start_grpc()

        return self

    def stop(self) -> None:
        self._hold.clear()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=0).wait(5)
            self._grpc_server = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def http_endpoint(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.grpc_port}"

    # -- what arrived --------------------------------------------------------

    def spans(self) -> list[SpanView]:
        with self._lock:
            return list(self._spans)

    def logs(self) -> list[LogView]:
        with self._lock:
            return list(self._logs)

    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._logs.clear()
            self._requests.clear()

    def wait_for(
        self,
        predicate: Callable[[OTLPReceiver], bool],
        timeout_seconds: float = 10.0,
    ) -> bool:
        """Wait until `predicate(self)` is true; False when time ran out."""
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while True:
                self._lock.release()
                try:
                    if predicate(self):
                        return True
                finally:
                    self._lock.acquire()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.5))

    # -- fault injection -----------------------------------------------------

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` export requests with `status`."""
        with self._lock:
            self._failures_left = count
            self._failure_status = status

    def hold_responses(self, hold: bool = True) -> None:
        """Accept export requests but never answer them while `hold` is set."""
        if hold:
            self._hold.set()
        else:
            self._hold.clear()

    # -- internals -----------------------------------------------------------

    def _take_failure(self) -> int | None:
        with self._lock:
            if self._failures_left > 0:
                self._failures_left -= 1
                return self._failure_status

        return None

    def _record(
        self,
        signal: str,
        protocol: str,
        path: str,
        headers: dict[str, str],
        payload: bytes,
    ) -> None:
        spans: list[SpanView] = []
        logs: list[LogView] = []
        if signal == "traces":
            spans = _decode_spans(payload)
        elif signal == "logs":
            logs = _decode_logs(payload)
        request = ReceivedRequest(
            signal=signal,
            protocol=protocol,
            path=path,
            headers=headers,
            size_bytes=len(payload),
            items=len(spans) + len(logs),
            tls=self._tls is not None,
        )
        with self._changed:
            self._spans.extend(spans)
            self._logs.extend(logs)
            self._requests.append(request)
            self._changed.notify_all()

    def _start_http(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                signal = _SIGNAL_PATHS.get(path)
                if signal is None:
                    self._answer(404, b"unknown path")
                    return
                while receiver._hold.is_set():
                    # Bounded by stop(), which clears the flag.
                    receiver._hold.wait(0.05)
                    if not receiver._hold.is_set():
                        break
                failure = receiver._take_failure()
                if failure is not None:
                    self._answer(failure, b"injected failure")
                    return
                payload = _decompress(body, self.headers.get("Content-Encoding", ""))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(signal, "http", self.path, headers, payload)
                self._answer(200, b"")

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        server = _QuietHTTPServer(("127.0.0.1", self._wanted_http_port), Handler)
        server.daemon_threads = True
        if self._tls is not None:
            server.socket = _server_ssl_context(self._tls).wrap_socket(
                server.socket, server_side=True
            )
        self._http_server = server
        self.http_port = server.server_address[1]
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="otlp-receiver-http",
            daemon=True,
        ).start()

    def _start_grpc(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import (
            logs_service_pb2,
            logs_service_pb2_grpc,
        )
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        receiver = self

        def handle(signal: str, request: Any, context: Any, response: Any) -> Any:
            while receiver._hold.is_set() and context.is_active():
                receiver._hold.wait(0.05)
            failure = receiver._take_failure()
            if failure is not None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "injected failure")
            headers = {k: v for k, v in context.invocation_metadata()}
            receiver._record(
                signal, "grpc", f"/{signal}", headers, request.SerializeToString()
            )
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
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        address = f"127.0.0.1:{self._wanted_grpc_port}"
        if self._tls is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            self.grpc_port = server.add_secure_port(
                address, _grpc_server_credentials(self._tls)
            )
        server.start()
        self._grpc_server = server


def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _server_ssl_context(tls: ReceiverTLS) -> Any:
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.certificate_file, tls.key_file)
    if tls.client_ca_file:
        context.load_verify_locations(tls.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED

    return context


def _grpc_server_credentials(tls: ReceiverTLS) -> Any:
    import grpc

    return grpc.ssl_server_credentials(
        [(_read_bytes(tls.key_file), _read_bytes(tls.certificate_file))],
        root_certificates=(
            _read_bytes(tls.client_ca_file) if tls.client_ca_file else None
        ),
        require_client_auth=bool(tls.client_ca_file),
    )


def spans_by_trace(
    spans: list[SpanView], logs: list[LogView]
) -> Iterator[tuple[str, list[SpanView], list[LogView]]]:
    """Group spans and records by trace id, in the order traces first appear."""
    order: dict[str, tuple[list[SpanView], list[LogView]]] = {}
    for span in spans:
        order.setdefault(span.trace_id, ([], []))[0].append(span)
    for record in logs:
        order.setdefault(record.trace_id, ([], []))[1].append(record)
    for trace_id, (trace_spans, trace_logs) in order.items():
        yield trace_id, trace_spans, trace_logs


def reset_telemetry(timeout_seconds: float = 2.0) -> None:
    """Undo `init_telemetry()` so that the next test starts from nothing.

    Shuts the pipeline down, removes the bridge handler, restores what the
    package patched, and clears OpenTelemetry's set-once global providers
    (private attributes of opentelemetry-api, pinned by this package's own
    tests, which call this between every case).
    """
    from opentelemetry import trace
    from opentelemetry._logs import _internal as logs_internal
    from opentelemetry.util._once import Once

    from . import _state

    _state.reset_for_tests(timeout_seconds)
    trace._TRACER_PROVIDER = None
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    logs_internal._LOGGER_PROVIDER = None
    logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()


def _serve(argv: list[str] | None = None) -> int:
    """Run a receiver in this process and print what arrives, as JSON lines."""
    parser = argparse.ArgumentParser(
        prog="python -m showmax_otel.testing",
        description="Run an OTLP receiver on 127.0.0.1 and print what arrives.",
    )
    parser.add_argument(
        "--http-port", type=int, default=0, help="HTTP port (default: any free one)"
    )
    parser.add_argument(
        "--grpc-port", type=int, default=0, help="gRPC port (default: any free one)"
    )
    args = parser.parse_args(argv)
    printed = {"span": 0, "log": 0}

    def unprinted(receiver: OTLPReceiver) -> bool:
        return (
            len(receiver.spans()) > printed["span"]
            or len(receiver.logs()) > printed["log"]
        )

    with OTLPReceiver(http_port=args.http_port, grpc_port=args.grpc_port) as receiver:
        print(
            json.dumps(
                {"http": receiver.http_endpoint, "grpc": receiver.grpc_endpoint}
            ),
            flush=True,
        )
        try:
            while True:
                receiver.wait_for(unprinted, 3600)
                # Spans and records are kept in two lists: each is printed
                # from where it was left, whichever arrived first.
                for kind, items in (
                    ("span", receiver.spans()),
                    ("log", receiver.logs()),
                ):
                    for item in items[printed[kind] :]:
                        line = {"signal": kind, **asdict(item)}
                        print(json.dumps(line, default=repr), flush=True)
                    printed[kind] = len(items)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    raise SystemExit(_serve())
