"""Collector outages, overload and failing parts: harmless, bounded, honest.

The outage tests stop and restart a receiver running in its own process, on
the same ports, as a collector that crashes and comes back. The outage is a
few seconds rather than a minute: with a short schedule delay and export
timeout, the same properties show.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from _receiver_process import ReceiverProcess

from showmax_otel import Telemetry, init_telemetry
from showmax_otel import _exporters as exporters_module

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
