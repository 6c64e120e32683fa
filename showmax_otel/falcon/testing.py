"""Helpers for testing a Falcon service's own telemetry.

Pair them with `showmax_otel.testing.OTLPReceiver`: send a request with a
`traceparent` of your choosing, flush, and look at everything that one
request produced::

    from showmax_otel.falcon.testing import make_traceparent, wait_for_request

    trace_id, headers = make_traceparent()
    client.simulate_get("/orders/7", headers=headers)
    telemetry.force_flush()
    seen = wait_for_request(receiver, trace_id)
    assert seen.server_span.name == "GET /orders/{order_id}"
    seen.assert_correlated()
    assert [r.attributes["exception.type"] for r in seen.exception_logs] == []
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "RequestTelemetry",
    "make_traceparent",
    "request_telemetry",
    "wait_for_request",
]


class _Receiver(Protocol):
    def spans(self) -> list[Any]: ...

    def logs(self) -> list[Any]: ...

    def wait_for(self, predicate: Any, timeout_seconds: float = ...) -> bool: ...


@dataclass(frozen=True)
class RequestTelemetry:
    """Everything the receiver got for one trace, sorted by role."""

    trace_id: str
    server_span: Any | None
    spans: list[Any] = field(default_factory=list)
    access_logs: list[Any] = field(default_factory=list)
    exception_logs: list[Any] = field(default_factory=list)
    other_logs: list[Any] = field(default_factory=list)

    @property
    def error_logs(self) -> list[Any]:
        """ERROR (or worse) records other than the access log."""
        return [
            record
            for record in (*self.exception_logs, *self.other_logs)
            if record.severity_number >= 17
        ]

    def assert_correlated(self) -> None:
        """Fail unless the access and exception records carry the server span's ids."""
        span = self.server_span
        assert span is not None, f"no server span in trace {self.trace_id}"
        for record in (*self.access_logs, *self.exception_logs):
            assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id), (
                f"record {record.body!r} carries {record.trace_id}/{record.span_id}, "
                f"the server span is {span.trace_id}/{span.span_id}"
            )


def make_traceparent(sampled: bool = True) -> tuple[str, dict[str, str]]:
    """A fresh trace id and the `traceparent` header that continues it."""
    trace_id = secrets.token_hex(16)
    parent_span_id = secrets.token_hex(8)
    flags = "01" if sampled else "00"

    return trace_id, {"traceparent": f"00-{trace_id}-{parent_span_id}-{flags}"}


def request_telemetry(
    receiver: _Receiver,
    trace_id: str,
    *,
    access_logger: str = "falcon.access",
    exception_logger: str = "falcon.error",
) -> RequestTelemetry:
    """What has arrived so far for `trace_id` (log scopes are logger names)."""
    spans = [span for span in receiver.spans() if span.trace_id == trace_id]
    servers = [span for span in spans if span.kind == "SPAN_KIND_SERVER"]
    records = [record for record in receiver.logs() if record.trace_id == trace_id]

    return RequestTelemetry(
        trace_id=trace_id,
        server_span=servers[0] if servers else None,
        spans=spans,
        access_logs=[r for r in records if r.scope == access_logger],
        exception_logs=[r for r in records if r.scope == exception_logger],
        other_logs=[
            r for r in records if r.scope not in (access_logger, exception_logger)
        ],
    )


def wait_for_request(
    receiver: _Receiver,
    trace_id: str,
    timeout_seconds: float = 10.0,
    *,
    access_logger: str = "falcon.access",
    exception_logger: str = "falcon.error",
    access_log: bool = True,
) -> RequestTelemetry:
    """Wait until the request's server span (and access log) arrived, then sort.

    Flush the pipeline first (`telemetry.force_flush()`): records are
    exported in batches. Returns what arrived when time ran out, so that the
    caller's assertions say what is missing.
    """

    def arrived(current: _Receiver) -> bool:
        seen = request_telemetry(
            current,
            trace_id,
            access_logger=access_logger,
            exception_logger=exception_logger,
        )
        return seen.server_span is not None and (
            bool(seen.access_logs) or not access_log
        )

    receiver.wait_for(arrived, timeout_seconds)

    return request_telemetry(
        receiver,
        trace_id,
        access_logger=access_logger,
        exception_logger=exception_logger,
    )
