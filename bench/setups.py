"""The telemetry set-ups the benchmark compares, as an application would write them.

Each `setup_<mode>()` runs in the server worker before the Falcon app is
built. The hand-written ones are deliberately plain: what a team gets by
following the upstream getting-started pages, with the defaults left alone.
"""

from __future__ import annotations

import http.client
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["NaiveHTTPHandler", "encode_one_record", "setup"]


def encode_one_record(record: logging.LogRecord, service_name: str) -> bytes:
    """One log record as an OTLP/HTTP protobuf logs request, built by hand."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=service_name))
    )
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = record.name
    scope_logs.log_records.append(
        LogRecord(
            time_unix_nano=int(record.created * 1e9),
            severity_text=record.levelname,
            body=AnyValue(string_value=record.getMessage()),
        )
    )

    return request.SerializeToString()


class NaiveHTTPHandler(logging.Handler):
    """Sends every record at once, one HTTP request each, before returning.

    The pattern this benchmark measures against: the request that logs waits
    for the collector. A new connection per record, as a plain helper built on
    `http.client` or `requests.post` would make.
    """

    def __init__(self, endpoint: str, timeout_seconds: float = 5.0) -> None:
        super().__init__()
        parts = urlsplit(endpoint)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 4318
        self._timeout_seconds = timeout_seconds
        self._service_name = os.environ.get("OTEL_SERVICE_NAME", "bench")
        self.failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        body = encode_one_record(record, self._service_name)
        connection = http.client.HTTPConnection(
            self._host, self._port, timeout=self._timeout_seconds
        )
        try:
            connection.request(
                "POST",
                "/v1/logs",
                body,
                {"Content-Type": "application/x-protobuf"},
            )
            connection.getresponse().read()
        except OSError:
            # A naive handler swallows the failure so that logging never
            # breaks the request; the record is simply gone.
            self.failures += 1
        finally:
            connection.close()


_naive_handlers: list[NaiveHTTPHandler] = []


def _endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")


def _setup_naive() -> None:
    logging.getLogger().addHandler(NaiveHTTPHandler(_endpoint()))


def get_logger_naive_dup(name: str) -> logging.Logger:
    """The duplicate-handler bug: every call adds one more sending handler."""
    logger = logging.getLogger(name)
    handler = NaiveHTTPHandler(_endpoint())
    logger.addHandler(handler)
    _naive_handlers.append(handler)

    return logger


def _setup_otel(protocol: str) -> None:
    from opentelemetry import trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.instrumentation.falcon import FalconInstrumentor
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters: Any
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_spans

        exporters = (grpc_logs.OTLPLogExporter, grpc_spans.OTLPSpanExporter)
    else:
        from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
        from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_spans

        exporters = (http_logs.OTLPLogExporter, http_spans.OTLPSpanExporter)
    log_exporter, span_exporter = exporters

    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter()))
    trace.set_tracer_provider(tracer_provider)

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter()))
    set_logger_provider(logger_provider)
    logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))

    FalconInstrumentor().instrument()


def _setup_showmax() -> None:
    import showmax_otel

    showmax_otel.init_telemetry()


def setup(mode: str) -> None:
    """Set up telemetry for `mode` in this (worker) process."""
    # The app's own records are INFO; the root logger must let them through
    # in every mode, as a service's logging config would.
    logging.getLogger().setLevel(logging.INFO)
    started = time.perf_counter()
    setups: dict[str, Any] = {
        "bare": lambda: None,
        "naive": _setup_naive,
        "naive-dup": lambda: None,
        "otel-http": lambda: _setup_otel("http"),
        "otel-grpc": lambda: _setup_otel("grpc"),
        # opentelemetry-instrument did the work before the app was imported.
        "otel-instrument": lambda: None,
        "showmax": _setup_showmax,
        "showmax-instrument": lambda: None,
    }
    setups[mode]()
    logging.getLogger("bench").debug(
        "telemetry set up in %.1f ms", (time.perf_counter() - started) * 1000
    )
