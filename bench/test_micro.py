"""Micro-benchmarks of what telemetry adds to the request path (pytest-benchmark).

Run by `python -m bench`, or alone:
`pytest bench/test_micro.py -o addopts= -p no:logging --benchmark-columns=median,min`
(without pytest's log capture, whose handlers on the root logger would be
timed with every showmax record).

Each cost is measured for OpenTelemetry by hand (SDK providers, batch
processors, the upstream logging handler) and for showmax_otel, with the
export worker kept asleep (a one-hour schedule delay, batches larger than
the run) so that only the caller's work is timed. Serialisation is timed on
a batch and reported per record, as the export worker pays it.
"""

from __future__ import annotations

import logging
import wsgiref.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BATCH = 512
# Nothing is exported while a benchmark runs: the queues are large enough to
# hold every call and the worker's timer never fires.
QUIET = {
    "endpoint": "http://127.0.0.1:9",
    "bsp_schedule_delay_millis": 3_600_000,
    "blrp_schedule_delay_millis": 3_600_000,
    "bsp_max_queue_size": 1_000_000,
    "blrp_max_queue_size": 1_000_000,
    "bsp_max_export_batch_size": 1_000_000,
    "blrp_max_export_batch_size": 1_000_000,
    "hub_block_threshold_millis": 0,
}
ROUNDS = {"rounds": 200, "iterations": 50, "warmup_rounds": 2}


@pytest.fixture
def showmax() -> Iterator[Any]:
    """showmax_otel set up quietly; torn down without exporting."""
    import showmax_otel
    from showmax_otel.testing import reset_telemetry

    reset_telemetry()
    telemetry = showmax_otel.init_telemetry(**QUIET)
    yield telemetry
    reset_telemetry(timeout_seconds=0.1)


@pytest.fixture
def otel() -> Iterator[dict[str, Any]]:
    """OpenTelemetry by hand, not installed globally, with quiet batch processors."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    quiet: dict[str, Any] = {
        "schedule_delay_millis": 3_600_000,
        "max_queue_size": 1_000_000,
        "max_export_batch_size": 1_000_000,
    }
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint="http://127.0.0.1:9"), **quiet)
    )
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint="http://127.0.0.1:9"), **quiet)
    )
    handler = LoggingHandler(logger_provider=logger_provider)
    logger = logging.getLogger("bench.micro.otel")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield {"tracer": tracer_provider.get_tracer("bench"), "logger": logger}
    logger.removeHandler(handler)
    tracer_provider.shutdown()
    logger_provider.shutdown()


def _showmax_logger(name: str) -> logging.Logger:
    import showmax_otel

    logger = showmax_otel.get_logger(name)
    logger.setLevel(logging.INFO)

    return logger


ACCESS_EXTRA: dict[str, Any] = {
    "http.method": "GET",
    "http.route": "/items/{item_id:int}",
    "http.status_code": 200,
}


def _run(benchmark: Any, call: Callable[[], object]) -> None:
    benchmark.pedantic(call, **ROUNDS)


@pytest.mark.parametrize("setup", ["no-handler", "otel", "showmax"])
def test_log_call(benchmark: Any, request: pytest.FixtureRequest, setup: str) -> None:
    """One logger.info() call through the bridge (or through no handler at all)."""
    if setup == "no-handler":
        logger = logging.getLogger("bench.micro.none")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.handlers[:] = [logging.NullHandler()]
    elif setup == "otel":
        logger = request.getfixturevalue("otel")["logger"]
    else:
        request.getfixturevalue("showmax")
        logger = _showmax_logger("bench.micro.showmax")

    _run(benchmark, lambda: logger.info("catalogue refreshed in %d ms", 12))


@pytest.mark.parametrize("setup", ["otel", "showmax"])
def test_span(benchmark: Any, request: pytest.FixtureRequest, setup: str) -> None:
    """One span started and ended (as the server span of a request is)."""
    if setup == "otel":
        tracer = request.getfixturevalue("otel")["tracer"]
    else:
        from opentelemetry import trace

        request.getfixturevalue("showmax")
        tracer = trace.get_tracer("bench")

    def span() -> None:
        with tracer.start_as_current_span("GET /items/{item_id:int}"):
            pass

    _run(benchmark, span)


@pytest.mark.parametrize("setup", ["otel", "showmax"])
def test_access_record(
    benchmark: Any, request: pytest.FixtureRequest, setup: str
) -> None:
    """One access-log record with the request's attributes, inside its span."""
    if setup == "otel":
        parts = request.getfixturevalue("otel")
        tracer, logger = parts["tracer"], parts["logger"]
    else:
        from opentelemetry import trace

        request.getfixturevalue("showmax")
        tracer, logger = trace.get_tracer("bench"), _showmax_logger("falcon.access")

    with tracer.start_as_current_span("GET /items/{item_id:int}"):
        _run(
            benchmark,
            lambda: logger.info("GET /items/3 200", extra=ACCESS_EXTRA),
        )


def _wsgi_get(app: Any, path: str) -> Callable[[], object]:
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""})

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        return None

    def call() -> object:
        return b"".join(app(dict(environ), start_response))

    return call


@pytest.mark.parametrize("setup", ["bare", "showmax"])
def test_request(benchmark: Any, request: pytest.FixtureRequest, setup: str) -> None:
    """One whole GET /items/{id} through Falcon: span, access record, 1 KB body."""
    import falcon

    if setup == "showmax":
        request.getfixturevalue("showmax")

    class Item:
        body = {"id": 3, "description": "x" * 900}

        def on_get(self, req: Any, resp: Any, item_id: int) -> None:
            resp.media = self.body

    app = falcon.App()
    app.add_route("/items/{item_id:int}", Item())
    _run(benchmark, _wsgi_get(app, "/items/3"))


def _log_batch() -> list[Any]:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        SimpleLogRecordProcessor,
    )

    provider = LoggerProvider(shutdown_on_exit=False)
    exporter = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("falcon.access")
    from opentelemetry._logs import LogRecord

    for index in range(BATCH):
        logger.emit(LogRecord(body=f"GET /items/{index} 200", attributes=ACCESS_EXTRA))

    return list(exporter.get_finished_logs())


def _span_batch() -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    provider = TracerProvider(shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    for _ in range(BATCH):
        with tracer.start_as_current_span(
            "GET /items/{item_id:int}", attributes=ACCESS_EXTRA
        ):
            pass

    return list(exporter.get_finished_spans())


def _encoder(signal: str, encoder: str) -> Callable[[Any], Any]:
    if encoder == "showmax":
        try:
            from showmax_otel import _encoding
        except ImportError:
            pytest.skip("this version of showmax_otel has no encoder of its own")
        encode: Callable[[Any], Any] = getattr(_encoding, f"encode_{signal}")
        return encode
    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        return lambda batch: encode_logs(batch).SerializeToString()
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return lambda batch: encode_spans(batch).SerializeToString()


@pytest.mark.parametrize("encoder", ["otel-sdk", "showmax"])
@pytest.mark.parametrize("signal", ["logs", "spans"])
def test_encode_batch(benchmark: Any, signal: str, encoder: str) -> None:
    """OTLP protobuf encoding of one batch of 512 (reported per record too)."""
    batch = _log_batch() if signal == "logs" else _span_batch()
    encode = _encoder(signal, encoder)
    assert len(batch) == BATCH
    benchmark.extra_info["items"] = BATCH
    benchmark.pedantic(lambda: encode(batch), rounds=20, iterations=1, warmup_rounds=1)
