"""Falcon: one server span, one access log and the exception records per request.

Every row of the route table runs on a WSGI and an ASGI app, through the
whole pipeline to a real OTLP receiver on a loopback port.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import falcon
import falcon.testing
import pytest
from apps.falcon_routes import APP_LOGGER, build_app

from showmax_otel import init_telemetry
from showmax_otel.falcon.testing import (
    RequestTelemetry,
    make_traceparent,
    request_telemetry,
    wait_for_request,
)
from showmax_otel.testing import OTLPReceiver, reset_telemetry

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
    "exception with exception args": Row(
        "GET",
        "/crash-nested",
        "GET /crash-nested",
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
    # error.type: the exception that made the 5xx, else the status code; on
    # an error span only.
    if row.span_status == ERROR:
        expected_type = (
            row.exception_events[0] if row.exception_events else str(row.status_code)
        )
        assert span.attributes["error.type"] == expected_type
        assert span.status_message == (expected_type if row.exception_events else "")
    else:
        assert "error.type" not in span.attributes
        assert span.status_message == ""
    assert "http.status_code" not in span.attributes
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


def test_unsampled_parent_is_continued_in_records(receiver: OTLPReceiver) -> None:
    """An unsampled traceparent: no span leaves, records keep its trace id, flags 0."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()

    trace_id, headers = make_traceparent(sampled=False)
    assert _send(app, "GET", "/crash", headers).status_code == 500
    assert telemetry.force_flush(5.0)
    seen = request_telemetry(receiver, trace_id)

    assert seen.spans == []
    assert len(seen.access_logs) == 1
    assert len(seen.exception_logs) == 1
    for record in (*seen.access_logs, *seen.exception_logs):
        assert record.trace_flags & 1 == 0
        assert record.span_id == seen.access_logs[0].span_id != ""


def test_request_without_traceparent_starts_a_trace(receiver: OTLPReceiver) -> None:
    """Without a traceparent the server span is a root and the records follow it."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    _send(build_app(), "GET", "/items/1")
    assert telemetry.force_flush(5.0)
    receiver.wait_for(lambda r: len(r.spans()) == 1 and len(r.logs()) == 1, 10)

    (span,) = receiver.spans()
    (record,) = receiver.logs()
    assert span.parent_span_id == ""
    assert record.trace_flags & 1 == 1  # sampled; bit 2 says "random id"
    assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id)


def test_escaping_exception_is_recorded_once(receiver: OTLPReceiver) -> None:
    """An error handler that re-raises: one record, a 500 span, an access log."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()

    def reraise(req: Any, resp: Any, ex: Exception, params: Any) -> None:
        raise ex

    app.add_error_handler(RuntimeError, reraise)
    trace_id, headers = make_traceparent()
    with pytest.raises(RuntimeError, match="crashed"):
        _send(app, "GET", "/crash", headers)
    assert telemetry.force_flush(5.0)
    seen = wait_for_request(receiver, trace_id)

    assert seen.server_span is not None
    assert seen.server_span.status_code == ERROR
    assert seen.server_span.attributes["http.response.status_code"] == 500
    assert [r.attributes["exception.type"] for r in seen.exception_logs] == [
        "RuntimeError"
    ]
    assert [r.severity_text for r in seen.access_logs] == ["ERROR"]
    seen.assert_correlated()


def test_secrets_never_leave(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secret query values are redacted; Authorization and cookies never appear."""
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*"
    )
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()

    class CookieMiddleware:
        def process_response(
            self, req: Any, resp: Any, resource: Any, req_succeeded: bool
        ) -> None:
            resp.set_cookie("session", "cookie-secret")
            resp.set_header("X-Served-By", "test")

    app.add_middleware(CookieMiddleware())
    trace_id, headers = make_traceparent()
    headers.update(
        {
            "Authorization": "Bearer header-secret",
            "Cookie": "session=cookie-secret",
            "X-Request-Id": "r-1",
        }
    )
    _send(app, "GET", "/ok?page=2&access_token=query-secret&API_KEY=k2", headers)
    assert telemetry.force_flush(5.0)
    seen = wait_for_request(receiver, trace_id)

    span = seen.server_span
    assert span is not None
    assert (
        span.attributes["url.query"] == "page=2&access_token=REDACTED&API_KEY=REDACTED"
    )
    assert span.attributes["http.request.header.x_request_id"] == ["r-1"]
    assert span.attributes["http.response.header.x_served_by"] == ["test"]
    access = seen.access_logs[0]
    assert access.attributes["url.query"] == span.attributes["url.query"]
    assert "query-secret" not in access.body
    everything = repr((span, access))
    for secret in ("header-secret", "cookie-secret", "query-secret", "k2"):
        assert secret not in everything
    for name in ("authorization", "cookie", "set_cookie"):
        assert not any(key.endswith("." + name) for key in span.attributes)


def test_excluded_urls_get_no_span_and_no_access_log(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_PYTHON_FALCON_EXCLUDED_URLS silences matching paths (health checks)."""
    monkeypatch.setenv("OTEL_PYTHON_FALCON_EXCLUDED_URLS", "items/.*")
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()

    excluded_id, excluded_headers = make_traceparent()
    _send(app, "GET", "/items/3", excluded_headers)
    seen = _request(receiver, telemetry, app, "/ok")

    assert len(seen.spans) == 1
    assert request_telemetry(receiver, excluded_id).spans == []
    assert [r.body for r in receiver.logs() if "/items/" in str(r.body)] == []


@pytest.mark.parametrize(
    ("options", "logger_name", "expected"),
    [
        ({"access_log": False}, "falcon.access", 0),
        ({"access_logger_name": "service.access"}, "service.access", 1),
    ],
    ids=["switched-off", "renamed"],
)
def test_access_log_options(
    receiver: OTLPReceiver, options: dict[str, Any], logger_name: str, expected: int
) -> None:
    """The access log can be switched off or sent to another logger."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, **options)
    app = build_app()

    trace_id, headers = make_traceparent()
    _send(app, "GET", "/ok", headers)
    assert telemetry.force_flush(5.0)
    seen = wait_for_request(
        receiver, trace_id, access_logger=logger_name, access_log=bool(expected)
    )

    assert len(seen.access_logs) == expected
    assert seen.other_logs == []


def test_internal_failure_never_breaks_the_request(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure of ours is counted and reported; the response is the app's."""
    from showmax_otel.falcon._observer import RequestObserver

    def broken(self: Any, state: Any) -> None:
        raise RuntimeError("access log failed")

    monkeypatch.setattr(RequestObserver, "_log_access", broken)
    monkeypatch.setenv("SHOWMAX_OTEL_RAISE_INTERNAL_ERRORS", "false")
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()

    seen = _request(receiver, telemetry, app, "/ok", access_log=False)

    assert seen.server_span is not None
    assert telemetry.stats()["internal_errors"] == 1
    # Expected here: forget it before the fixture's check of internal errors.
    reset_telemetry()


def _request(
    receiver: OTLPReceiver,
    telemetry: Any,
    app: Any,
    path: str,
    access_log: bool = True,
) -> RequestTelemetry:
    trace_id, headers = make_traceparent()
    assert _send(app, "GET", path, headers).status_code == 200
    assert telemetry.force_flush(5.0)

    return wait_for_request(receiver, trace_id, access_log=access_log)


def test_an_error_handler_that_raises_keeps_the_route_in_the_span_name(
    receiver: OTLPReceiver,
) -> None:
    """When the app's own error handler fails, the span still names the route."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)

    class Failing:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            raise ValueError("first failure")

    def broken_handler(req: Any, resp: Any, ex: Exception, params: Any) -> None:
        raise RuntimeError("the error handler failed too")

    app = falcon.App()
    app.add_route("/orders/{order_id}", Failing())
    app.add_error_handler(ValueError, broken_handler)

    trace_id, headers = make_traceparent()
    # Falcon lets an exception raised by an error handler escape.
    with contextlib.suppress(RuntimeError):
        _send(app, "GET", "/orders/7", headers)
    telemetry.force_flush()
    seen = wait_for_request(receiver, trace_id)

    assert seen.server_span is not None
    assert seen.server_span.name == "GET /orders/{order_id}"
    assert seen.server_span.status_code == "STATUS_CODE_ERROR"


def test_access_record_is_the_same_whether_or_not_others_listen(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shipped without a LogRecord when only the bridge listens; the same either way."""
    import logging

    from showmax_otel._logging import BridgeHandler

    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()
    root = logging.getLogger()
    (bridge,) = [h for h in root.handlers if isinstance(h, BridgeHandler)]
    direct_calls: list[str] = []
    emit_direct = bridge.emit_direct

    def counted(name: str, *args: Any) -> None:
        direct_calls.append(name)
        emit_direct(name, *args)

    monkeypatch.setattr(bridge, "emit_direct", counted)
    listener = logging.Handler()
    seen_by_listener: list[logging.LogRecord] = []
    listener.emit = seen_by_listener.append  # type: ignore[method-assign]

    # What libraries do (Falcon 3 itself, on "falcon"): harmless.
    falcon_logger = logging.getLogger("falcon")
    monkeypatch.setattr(falcon_logger, "handlers", [logging.NullHandler()])
    records = []
    for others in ([], [listener]):
        # pytest's own capture handlers sit on the root logger: set it to
        # exactly the bridge, then the bridge and one more handler.
        monkeypatch.setattr(root, "handlers", [bridge, *others])
        trace_id, headers = make_traceparent()
        _send(app, "GET", "/items/42?page=2&access_token=secret", headers)
        assert telemetry.force_flush(5.0)
        (record,) = wait_for_request(receiver, trace_id).access_logs
        records.append(record)

    assert direct_calls == ["falcon.access"]
    assert [r.name for r in seen_by_listener] == ["falcon.access"]
    direct, through_logging = records
    for record in records:
        record.attributes.pop("http.server.request.duration")
    assert direct.attributes == through_logging.attributes
    assert direct.attributes["url.query"] == "page=2&access_token=REDACTED"
    for field in ("severity_text", "severity_number", "scope", "trace_flags"):
        assert getattr(direct, field) == getattr(through_logging, field)
    assert direct.body.rsplit(" ", 1)[0] == through_logging.body.rsplit(" ", 1)[0]
    assert direct.body.startswith("GET /items/42?page=2&access_token=REDACTED 200 ")


def test_access_record_carries_what_the_applications_record_factory_adds(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LogRecord factory of the application's runs for the access record too."""
    import logging

    from showmax_otel._logging import BridgeHandler

    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()
    root = logging.getLogger()
    (bridge,) = [h for h in root.handlers if isinstance(h, BridgeHandler)]
    monkeypatch.setattr(root, "handlers", [bridge])
    standard = logging.getLogRecordFactory()

    def with_deployment(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = standard(*args, **kwargs)
        record.deployment = "blue"
        return record

    logging.setLogRecordFactory(with_deployment)
    try:
        trace_id, headers = make_traceparent()
        _send(app, "GET", "/items/42", headers)
        assert telemetry.force_flush(5.0)
        (record,) = wait_for_request(receiver, trace_id).access_logs
    finally:
        logging.setLogRecordFactory(standard)

    assert record.attributes["deployment"] == "blue"


@pytest.mark.parametrize(
    ("host", "address", "port"),
    [
        ("api.example:8080", "api.example", 8080),
        ("[2001:db8::1]:8443", "2001:db8::1", 8443),
        ("api.example", "api.example", None),
    ],
)
def test_the_server_address_is_the_host_name_and_the_port_is_apart(
    receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    host: str,
    address: str,
    port: int | None,
) -> None:
    """server.address carries the Host header's name, server.port its port."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http/dup")
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()
    trace_id, headers = make_traceparent()
    _send(app, "GET", "/items/42", {**headers, "Host": host})
    assert telemetry.force_flush(5.0)
    span = wait_for_request(receiver, trace_id).server_span
    assert span is not None

    assert span.attributes["server.address"] == address
    assert span.attributes["net.host.name"] == address
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.status_code"] == 200
    if port is not None:
        assert span.attributes["server.port"] == port
        assert span.attributes["net.host.port"] == port


def test_one_exception_instance_raised_in_two_requests_is_reported_in_both(
    receiver: OTLPReceiver,
) -> None:
    """The mark that keeps an exception the app logged from a second record
    belongs to the request that logged it."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)
    shared = RuntimeError("the catalogue is down")

    class Down:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            raise shared

    app = falcon.App()
    app.add_route("/down", Down())
    trace_ids = []
    for _ in range(2):
        trace_id, headers = make_traceparent()
        _send(app, "GET", "/down", headers)
        trace_ids.append(trace_id)
    assert telemetry.force_flush(5.0)

    for trace_id in trace_ids:
        assert len(wait_for_request(receiver, trace_id).exception_logs) == 1
