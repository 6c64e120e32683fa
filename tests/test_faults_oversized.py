"""Oversized records never make an export request exceed the receiver's limit."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace

from showmax_otel import init_telemetry
from showmax_otel.testing import OTLPReceiver

_WAIT_SECONDS = 20.0
_FIVE_MB = 5 * 1024 * 1024
_MARK = "[truncated by showmax_otel]"
_app_logger = logging.getLogger("tests.oversized.app")


def _endpoint(receiver: OTLPReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_5mb_body_and_stack_trace_are_cut_and_their_neighbours_delivered(
    receiver: OTLPReceiver, protocol: str
) -> None:
    """A 5 MB log body and a 5 MB span stack trace are cut to fit, with a marker."""
    limit = 3 * 1024 * 1024
    telemetry = init_telemetry(
        endpoint=_endpoint(receiver, protocol),
        protocol=protocol,
        max_request_bytes=limit,
        # Let the 5 MB through the bridge, so that the export has to cope.
        max_attribute_bytes=2 * _FIVE_MB,
    )
    tracer = trace.get_tracer(__name__)

    for i in range(20):
        _app_logger.warning("normal %d", i)
        if i == 10:
            _app_logger.warning("huge body: %s", "b" * _FIVE_MB)
    for i in range(20):
        with tracer.start_as_current_span(f"normal span {i}") as span:
            if i == 10:
                span.add_event(
                    "exception",
                    {"exception.type": "Boom", "exception.stacktrace": "s" * _FIVE_MB},
                )
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(
        lambda r: len(r.logs()) == 21 and len(r.spans()) == 20, _WAIT_SECONDS
    )

    assert max(r.size_bytes for r in receiver.requests()) <= limit
    bodies = [str(record.body) for record in receiver.logs()]
    assert all(f"normal {i}" in bodies for i in range(20))
    (huge,) = [body for body in bodies if body.startswith("huge body")]
    assert huge.endswith(_MARK)
    (event,) = [event for span in receiver.spans() for event in span.events]
    assert event["exception.type"] == "Boom"
    assert event["exception.stacktrace"].endswith(_MARK)
    stats = telemetry.stats()
    for signal in ("logs", "spans"):
        assert stats[signal]["truncated"] == 1
        assert stats[signal]["dropped"] == {}


def test_a_5mb_body_with_default_settings_arrives_cut(receiver: OTLPReceiver) -> None:
    """With the defaults, a 5 MB body is cut by the bridge and delivered."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, traces_exporter="none")

    _app_logger.warning("normal before")
    _app_logger.warning("%s", "b" * _FIVE_MB)
    _app_logger.warning("normal after")
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: len(r.logs()) == 3, _WAIT_SECONDS)

    assert max(r.size_bytes for r in receiver.requests()) <= 3 * 1024 * 1024
    assert telemetry.stats()["logs"]["dropped"] == {}


def test_a_record_that_cannot_be_cut_to_fit_is_dropped_and_counted(
    receiver: OTLPReceiver,
) -> None:
    """A record too large even when cut is dropped and counted; its batch arrives."""
    limit = 4_000
    telemetry = init_telemetry(
        endpoint=receiver.http_endpoint,
        traces_exporter="none",
        max_request_bytes=limit,
    )

    _app_logger.warning("normal before")
    # Many short values: nothing long enough to cut, too much together.
    _app_logger.warning(
        "many attributes", extra={f"attribute_{i}": "v" * 100 for i in range(100)}
    )
    _app_logger.warning("normal after")
    assert not telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: len(r.logs()) == 2, _WAIT_SECONDS)

    assert max(r.size_bytes for r in receiver.requests()) <= limit
    assert sorted(str(record.body) for record in receiver.logs()) == [
        "normal after",
        "normal before",
    ]
    stats = telemetry.stats()["logs"]
    assert stats["dropped"] == {"oversized": 1}
    assert stats["exported"] == 2


def test_a_large_batch_is_split_into_requests_under_the_limit(
    receiver: OTLPReceiver,
) -> None:
    """A batch that encodes larger than the limit goes out in several requests."""
    limit = 64 * 1024
    telemetry = init_telemetry(
        endpoint=receiver.http_endpoint,
        traces_exporter="none",
        max_request_bytes=limit,
        blrp_max_export_batch_size=512,
    )

    for i in range(400):
        _app_logger.warning("record %d %s", i, "p" * 1000)
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: len(r.logs()) == 400, _WAIT_SECONDS)

    requests = receiver.requests()
    assert len(requests) > 1
    assert max(r.size_bytes for r in requests) <= limit
    assert telemetry.stats()["logs"]["dropped"] == {}
    assert telemetry.stats()["logs"]["truncated"] == 0
