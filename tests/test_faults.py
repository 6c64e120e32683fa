"""Collector outages, overload and failing parts: harmless, bounded, honest.

The outage tests stop and restart a receiver running in its own process, on
the same ports, as a collector that crashes and comes back. The outage is a
few seconds rather than a minute: with a short schedule delay and export
timeout, the same properties show.
"""

from __future__ import annotations

import importlib.util
import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from _receiver_process import ReceiverProcess
from opentelemetry import trace
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from showmax_otel import Telemetry, init_telemetry
from showmax_otel import _exporters as exporters_module
from showmax_otel.testing import reset_telemetry

_WAIT_SECONDS = 20.0
_app_logger = logging.getLogger("tests.faults.app")


class _Collect(logging.Handler):
    """Keeps every record that reaches it (the test's view of log output)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def package_log() -> Iterator[_Collect]:
    """What the package's own logger says."""
    handler = _Collect()
    logger = logging.getLogger("showmax_otel")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


@pytest.fixture
def sdk_log() -> Iterator[_Collect]:
    """What the SDK's exporters log, where an application would see it."""
    handler = _Collect()
    logger = logging.getLogger("opentelemetry")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def receiver_process() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _timed_log(message: str, index: int) -> float:
    started = time.perf_counter()
    _app_logger.warning(message, index)
    return time.perf_counter() - started


def _total(counts: dict[str, int]) -> int:
    return sum(counts.values())


def _log_bodies(items: Sequence[dict[str, Any]]) -> list[str]:
    return [str(item["body"]) for item in items]


# -- outage and recovery -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_collector_outage_is_harmless_bounded_and_counted(
    receiver_process: ReceiverProcess,
    package_log: _Collect,
    sdk_log: _Collect,
    protocol: str,
    outage_seconds: float = 2.0,
) -> None:
    """During an outage requests go on, memory stays bounded, every loss is counted."""
    max_queue = 256
    max_batch = 64
    report_interval = 0.5
    endpoint = (
        receiver_process.grpc_endpoint
        if protocol == "grpc"
        else receiver_process.http_endpoint
    )
    telemetry = init_telemetry(
        endpoint=endpoint,
        protocol=protocol,
        traces_exporter="none",
        blrp_schedule_delay_millis=100,
        blrp_max_queue_size=max_queue,
        blrp_max_export_batch_size=max_batch,
        timeout_seconds=0.5,
        report_interval_seconds=report_interval,
    )

    # Before: everything arrives, and how long a log call takes.
    baseline = [_timed_log("before %d", i) for i in range(200)]
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver_process.wait_for(lambda r: len(r.logs()) == 200, _WAIT_SECONDS)

    # The collector goes away.
    receiver_process.stop()
    outage_started = time.monotonic()
    during: list[float] = []
    largest_queue = 0
    index = 0
    while time.monotonic() - outage_started < outage_seconds and index < 20_000:
        during.append(_timed_log("during %d", index))
        index += 1
        if index % 50 == 0:
            largest_queue = max(largest_queue, telemetry.stats()["logs"]["queued"])
            # Pace the load like a service would: a few thousand records a
            # second, not a tight loop.
            time.sleep(0.01)

    # It comes back on the same ports; new records flow again.
    receiver_process.start()
    recovered = time.monotonic()
    _app_logger.warning("after %d", 0)
    assert receiver_process.wait_for(
        lambda r: "after 0" in _log_bodies(r.logs()), _WAIT_SECONDS
    )
    resumed_after = time.monotonic() - recovered
    for i in range(1, 50):
        _app_logger.warning("after %d", i)
    telemetry.force_flush(_WAIT_SECONDS)

    stats = telemetry.stats()["logs"]
    assert receiver_process.wait_for(
        lambda r: len(r.logs()) >= stats["exported"], _WAIT_SECONDS
    )
    received = receiver_process.logs()
    bodies = _log_bodies(received)

    # Honest: every record was delivered or counted as dropped, with a reason.
    assert stats["emitted"] == 200 + index + 50
    assert stats["queued"] == 0
    assert stats["exported"] == len(received)
    assert stats["emitted"] == stats["exported"] + _total(stats["dropped"])
    assert set(stats["dropped"]) <= {"export_failed", "queue_full"}
    assert _total(stats["dropped"]) > 0
    assert all(f"after {i}" in bodies for i in range(50))

    # Bounded: the queue never held more than its size and one batch.
    assert largest_queue <= max_queue + max_batch

    # Harmless: log calls took about as long as before (a loose ratio only).
    assert statistics.median(during) < 5 * statistics.median(baseline) + 100e-6

    # Reported by our own logger, at most once per interval, with the counts;
    # the SDK's per-batch complaints never reached the application's handlers.
    reports = [r for r in package_log.records if "dropped so far" in r.getMessage()]
    elapsed = time.monotonic() - outage_started
    assert 1 <= len(reports) <= elapsed / report_interval + 2
    assert "export_failed" in reports[-1].getMessage()
    assert [
        r for r in sdk_log.records if r.name.startswith("opentelemetry.exporter")
    ] == []

    # Never fed back: nothing of ours or the SDK's was exported.
    assert not [
        item
        for item in received
        if item["scope"].startswith(("showmax_otel", "opentelemetry"))
    ]
    print(f"\n{protocol}: export resumed {resumed_after:.3f} s after the restart")


@pytest.mark.slow
def test_hung_collector_keeps_requests_fast_and_flush_bounded(
    receiver_process: ReceiverProcess,
) -> None:
    """A collector that never answers: flush and shutdown keep their time bounds."""
    import socket

    # A listening socket that never accepts stands in for a hung collector.
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(1)
    try:
        port = hung.getsockname()[1]
        telemetry = init_telemetry(
            endpoint=f"http://127.0.0.1:{port}",
            traces_exporter="none",
            blrp_schedule_delay_millis=50,
            timeout_seconds=30.0,
        )
        for i in range(100):
            _app_logger.warning("held %d", i)

        started = time.monotonic()
        flushed = telemetry.force_flush(1.0)
        flush_seconds = time.monotonic() - started
        started = time.monotonic()
        shut = telemetry.shutdown(1.0)
        shutdown_seconds = time.monotonic() - started
    finally:
        hung.close()

    stats = telemetry.stats()["logs"]
    assert not flushed and not shut
    assert flush_seconds < 5 and shutdown_seconds < 5
    assert stats["emitted"] == stats["exported"] + _total(stats["dropped"])
    assert stats["dropped"].get("shutdown_timeout", 0) > 0


# -- overload --------------------------------------------------------------------


@pytest.mark.slow
def test_burst_of_100k_records_is_bounded_counted_and_does_not_slow_later_requests(
    receiver_process: ReceiverProcess,
) -> None:
    """100,000 records in one request: bounded, counted, later calls not slowed."""
    max_queue = 2048
    telemetry = init_telemetry(
        endpoint=receiver_process.http_endpoint,
        traces_exporter="none",
        blrp_max_queue_size=max_queue,
    )
    before = [_timed_log("before %d", i) for i in range(500)]
    assert telemetry.force_flush(_WAIT_SECONDS)

    largest_queue = 0
    for i in range(100_000):
        _app_logger.warning("burst %d", i)
        if i % 1000 == 0:
            largest_queue = max(largest_queue, telemetry.stats()["logs"]["queued"])
    after = [_timed_log("after %d", i) for i in range(500)]
    telemetry.force_flush(_WAIT_SECONDS)

    stats = telemetry.stats()["logs"]
    assert receiver_process.wait_for(
        lambda r: len(r.logs()) >= stats["exported"], _WAIT_SECONDS
    )
    assert largest_queue <= max_queue + 512
    assert stats["emitted"] == 101_000
    assert stats["emitted"] == stats["exported"] + _total(stats["dropped"])
    assert stats["dropped"].get("queue_full", 0) > 0
    assert len(receiver_process.logs()) == stats["exported"]
    assert statistics.median(after) < 5 * statistics.median(before) + 100e-6


# -- failing parts ----------------------------------------------------------------


class _BrokenExporter:
    def __init__(self) -> None:
        self.calls = 0

    def export(self, batch: Sequence[Any]) -> Any:
        self.calls += 1
        raise RuntimeError("exporter bug")

    def shutdown(self) -> None:
        return None


@pytest.mark.parametrize(
    "raise_internal_errors", [False, True], ids=["production", "tests"]
)
def test_failing_exporter_never_reaches_the_application_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, package_log: _Collect, raise_internal_errors: bool
) -> None:
    """An exporter that raises: requests go on, losses and errors are counted."""
    broken = _BrokenExporter()
    monkeypatch.setattr(
        exporters_module, "build_exporter", lambda settings, signal: broken
    )
    telemetry: Telemetry = init_telemetry(
        traces_exporter="none",
        raise_internal_errors=raise_internal_errors,
        blrp_max_export_batch_size=10,
    )

    for round_number in range(3):
        for i in range(10):
            _app_logger.warning("round %d record %d", round_number, i)
        assert not telemetry.force_flush(_WAIT_SECONDS)

    stats = telemetry.stats()
    assert broken.calls == 3
    assert stats["logs"]["dropped"] == {"export_error": 30}
    assert stats["internal_errors"] == 3
    errors = [r for r in package_log.records if r.levelno >= logging.ERROR]
    if not raise_internal_errors:
        assert len(errors) == 1
        assert "exporter bug" in errors[0].getMessage()
    else:
        # The export thread cannot raise into anyone: it logs every time, and
        # the count is what a test suite checks.
        assert len(errors) == 3
    # These errors were provoked and checked: a suite-wide check for internal
    # errors after each test must not count them.
    reset_telemetry()


# -- through the collector hop ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.collector
@pytest.mark.skipif(
    importlib.util.find_spec("rotel") is None,
    reason="the rotel package is not installed",
)
def test_backend_outage_behind_the_collector_loses_nothing(
    receiver_process: ReceiverProcess, outage_seconds: float = 2.0
) -> None:
    """app -> rotel -> backend: the backend stops and comes back; all arrives."""
    from showmax_otel._rotel import start_rotel

    with start_rotel(receiver_process.http_endpoint, protocol="http") as rotel:
        telemetry = init_telemetry(
            endpoint=rotel.http_endpoint,
            traces_exporter="none",
            blrp_schedule_delay_millis=100,
        )
        for i in range(50):
            _app_logger.warning("before %d", i)
        assert telemetry.force_flush(_WAIT_SECONDS)
        assert receiver_process.wait_for(lambda r: len(r.logs()) == 50, _WAIT_SECONDS)

        receiver_process.stop()
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < outage_seconds and sent < 1_000:
            _app_logger.warning("during %d", sent)
            sent += 1
            if sent % 10 == 0:
                time.sleep(0.02)  # a steady trickle across the outage
        # The collector takes them: the app side has nothing to report.
        assert telemetry.force_flush(_WAIT_SECONDS)
        receiver_process.start()

        assert receiver_process.wait_for(
            lambda r: len(r.logs()) == 50 + sent, _WAIT_SECONDS * 2
        )
    stats = telemetry.stats()["logs"]
    assert stats["dropped"] == {}
    assert stats["exported"] == 50 + sent


class _FailingSpanProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("span processor bug")


class _FailingLogProcessor(LogRecordProcessor):
    def on_emit(self, log_record: Any) -> None:
        raise RuntimeError("log processor bug")

    emit = on_emit

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def test_failing_processors_never_reach_the_request_and_are_logged_once(
    receiver_process: ReceiverProcess, package_log: _Collect
) -> None:
    """A processor an application added that raises: spans and records still go."""
    telemetry = init_telemetry(
        endpoint=receiver_process.http_endpoint, raise_internal_errors=False
    )
    telemetry.tracer_provider.add_span_processor(_FailingSpanProcessor())
    telemetry.logger_provider.add_log_record_processor(_FailingLogProcessor())
    tracer = trace.get_tracer(__name__)

    for i in range(3):
        with tracer.start_as_current_span(f"request {i}"):
            _app_logger.warning("inside request %d", i)
    assert telemetry.force_flush(_WAIT_SECONDS)

    assert receiver_process.wait_for(lambda r: len(r.items()) == 6, _WAIT_SECONDS)
    assert telemetry.stats()["internal_errors"] == 6
    errors = [r.getMessage() for r in package_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert any("span processor bug" in message for message in errors)
    assert any("log processor bug" in message for message in errors)
    reset_telemetry()  # provoked and checked


def test_failing_processor_is_raised_under_a_test_suite() -> None:
    """With raise_internal_errors, a processor's failure cannot hide."""
    telemetry = init_telemetry(endpoint="http://127.0.0.1:9", traces_exporter="none")
    telemetry.tracer_provider.add_span_processor(_FailingSpanProcessor())

    with pytest.raises(RuntimeError, match="span processor bug"):  # noqa: SIM117
        with trace.get_tracer(__name__).start_as_current_span("request"):
            pass
    reset_telemetry()  # provoked and checked
