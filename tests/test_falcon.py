"""Falcon: one server span, one access log and the exception records per request.

Every row of the route table runs on a WSGI and an ASGI app, through the
whole pipeline to a real OTLP receiver on a loopback port.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.testing
import pytest
from apps.falcon_routes import APP_LOGGER, build_app

from showmax_otel import init_telemetry
from showmax_otel.falcon.testing import (
    make_traceparent,
    wait_for_request,
)
from showmax_otel.testing import OTLPReceiver

ERROR = "STATUS_CODE_ERROR"
UNSET = "STATUS_CODE_UNSET"


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    span_name: str
    status_code: int
    span_status: str
    exception_events: tuple[str, ...]
    exception_records: tuple[str, ...]
    access_severity: str
    app_errors: int = 0


ROWS = {
    "200": Row("GET", "/ok", "GET /ok", 200, UNSET, (), (), "INFO"),
    "200 templated": Row(
        "GET", "/items/42", "GET /items/{item_id}", 200, UNSET, (), (), "INFO"
    ),
    "HTTPBadRequest": Row(
        "GET", "/bad-request", "GET /bad-request", 400, UNSET, (), (), "WARN"
    ),
    "HTTPForbidden": Row(
        "GET", "/forbidden", "GET /forbidden", 403, UNSET, (), (), "WARN"
    ),
    "HTTPStatus 204": Row(
        "GET", "/no-content", "GET /no-content", 204, UNSET, (), (), "INFO"
    ),
    "handler maps to 422": Row(
        "GET", "/mapped", "GET /mapped", 422, UNSET, (), (), "WARN"
    ),
    "handler maps to 502": Row(
        "GET",
        "/fatal-mapped",
        "GET /fatal-mapped",
        502,
        ERROR,
        ("apps.falcon_routes.FatalMappedError",),
        ("FatalMappedError",),
        "ERROR",
    ),
    "unhandled RuntimeError": Row(
        "GET",
        "/crash",
        "GET /crash",
        500,
        ERROR,
        ("RuntimeError",),
        ("RuntimeError",),
        "ERROR",
    ),
    "responder sets 503": Row(
        "GET", "/unavailable", "GET /unavailable", 503, ERROR, (), (), "ERROR"
    ),
    "HTTPServiceUnavailable": Row(
        "GET",
        "/http-503",
        "GET /http-503",
        503,
        ERROR,
        ("falcon.errors.HTTPServiceUnavailable",),
        ("HTTPServiceUnavailable",),
        "ERROR",
    ),
    "hook raises HTTPUnauthorized": Row(
        "GET", "/hooked", "GET /hooked", 401, UNSET, (), (), "WARN"
    ),
    "middleware raises HTTPStatus": Row(
        "GET", "/mw-status", "GET", 202, UNSET, (), (), "INFO"
    ),
    "unknown path 404": Row("GET", "/no/such/path", "GET", 404, UNSET, (), (), "WARN"),
    "wrong method 405": Row("POST", "/ok", "POST /ok", 405, UNSET, (), (), "WARN"),
    "logs odd records": Row(
        "GET", "/logs-oddities", "GET /logs-oddities", 200, UNSET, (), (), "INFO", 2
    ),
    "logs then raises": Row(
        "GET",
        "/logs-then-raises",
        "GET /logs-then-raises",
        500,
        ERROR,
        ("LookupError",),
        (),
        "ERROR",
        1,
    ),
}


@pytest.fixture(params=[False, True], ids=["wsgi", "asgi"])
def asgi(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _send(
    app: Any, method: str, path: str, headers: dict[str, str] | None = None
) -> falcon.testing.Result:
    """One request through Falcon's test client; WSGI tracebacks stay quiet."""
    client = falcon.testing.TestClient(app)
    if getattr(type(app), "_ASGI", False):
        return client.simulate_request(method, path, headers=headers or {})

    return client.simulate_request(
        method, path, headers=headers or {}, wsgierrors=io.StringIO()
    )


@pytest.mark.parametrize("row", ROWS.values(), ids=ROWS.keys())
def test_route_table(receiver: OTLPReceiver, asgi: bool, row: Row) -> None:
    """Each route gives its span name, status, exception events and records."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, service_name="table")
    app = build_app(asgi=asgi)

    trace_id, headers = make_traceparent()
    result = _send(app, row.method, row.path, headers)
    telemetry.force_flush()
    seen = wait_for_request(receiver, trace_id)

    assert result.status_code == row.status_code
    span = seen.server_span
    assert span is not None
    assert span.name == row.span_name
    assert span.status_code == row.span_status
    assert span.attributes["http.response.status_code"] == row.status_code
    assert span.parent_span_id == headers["traceparent"].split("-")[2]
    assert (
        tuple(e["exception.type"] for e in span.events if e["name"] == "exception")
        == row.exception_events
    )
    assert len(seen.spans) == 1

    assert tuple(r.attributes["exception.type"] for r in seen.exception_logs) == (
        row.exception_records
    )
    for record in seen.exception_logs:
        assert record.severity_text == "ERROR"
        assert record.attributes["exception.stacktrace"].startswith("Traceback")
        assert record.attributes["exception.message"]
        assert record.attributes["http.request.method"] == row.method
        assert record.attributes["http.route"] == row.path
        assert record.attributes["http.response.status_code"] == row.status_code

    app_errors = [r for r in seen.other_logs if r.severity_number >= 17]
    assert len(app_errors) == row.app_errors
    assert all(r.scope == APP_LOGGER for r in seen.other_logs)
    assert all(r.span_id == span.span_id for r in seen.other_logs)

    assert [r.severity_text for r in seen.access_logs] == [row.access_severity]
    access = seen.access_logs[0].attributes
    assert access["http.response.status_code"] == row.status_code
    assert access["http.request.method"] == row.method
    assert access["url.path"] == row.path
    assert access["http.server.request.duration"] > 0
    if row.span_name != row.method:
        assert access["http.route"] == row.span_name.split(" ", 1)[1]
    else:
        assert "http.route" not in access
    seen.assert_correlated()
