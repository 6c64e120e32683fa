"""Secrets never leave the process: not in spans, records, or our own messages."""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator

import pytest
from opentelemetry import trace

from showmax_otel import init_telemetry
from showmax_otel._redaction import REDACTED, Redactor
from showmax_otel.options import load_settings
from showmax_otel.testing import OTLPReceiver

_WAIT_SECONDS = 20.0
_SECRET = "Sup3rS3cretT0ken"
_app_logger = logging.getLogger("tests.secrets.app")


def _default_redactor() -> Redactor:
    settings = load_settings({})
    return Redactor(settings.redacted_params, settings.redacted_headers)


# -- the rules -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            f"GET https://api.example/v1?token={_SECRET}&page=2 failed",
            f"GET https://api.example/v1?token={REDACTED}&page=2 failed",
            id="query-token",
        ),
        pytest.param(
            f"see /cb?api_key={_SECRET}",
            f"see /cb?api_key={REDACTED}",
            id="api-key-parameter",
        ),
        pytest.param(
            f"postgres://app:{_SECRET}@db:5432/main is down",
            f"postgres://app:{REDACTED}@db:5432/main is down",
            id="password-in-url",
        ),
        pytest.param(
            "ValueError: page=2 is out of range",
            "ValueError: page=2 is out of range",
            id="no-url-untouched",
        ),
        pytest.param(
            "https://api.example/v1?page=2&sort=asc",
            "https://api.example/v1?page=2&sort=asc",
            id="harmless-query-untouched",
        ),
    ],
)
def test_text_keeps_the_message_but_not_secrets_in_urls(
    text: str, expected: str
) -> None:
    """Secret query values and URL passwords are replaced; the rest stays."""
    assert _default_redactor().text(text) == expected


@pytest.mark.parametrize(
    "header",
    [
        "Authorization",
        "cookie",
        "Set-Cookie",
        "X-Api-Key",
        "x_api_key",
        "PROXY-AUTHORIZATION",
    ],
)
def test_the_usual_secret_headers_are_secret(header: str) -> None:
    """Authorization, Cookie, Set-Cookie and X-Api-Key are secret in any case."""
    redactor = _default_redactor()

    assert redactor.is_secret_header(header)
    assert redactor.is_secret_attribute(f"http.request.header.{header.lower()}")
    assert redactor.headers({header: _SECRET}) == {header: REDACTED}


def test_header_and_parameter_patterns_are_configurable() -> None:
    """Configured names and words are what is redacted."""
    settings = load_settings(
        {"redacted_headers": "X-Internal-Auth", "redacted_params": "otp,pin"}
    )
    redactor = Redactor(settings.redacted_params, settings.redacted_headers)

    assert redactor.is_secret_header("x-internal-auth")
    # Names like credentials stay secret whatever is configured.
    assert redactor.is_secret_header("authorization")
    assert redactor.is_secret_header("X-Access-Token")
    assert not redactor.is_secret_header("x-request-id")
    assert redactor.query(f"otp={_SECRET}&user_pin=1&token=t") == (
        f"otp={REDACTED}&user_pin={REDACTED}&token=t"
    )


# -- end to end ------------------------------------------------------------------


def _raise_with_url() -> None:
    raise ConnectionError(
        f"cannot reach https://ops:{_SECRET}@billing.internal/charge"
        f"?access_token={_SECRET}&order=42"
    )


def test_exception_records_keep_message_and_stack_but_not_url_secrets(
    receiver: OTLPReceiver,
) -> None:
    """A logged exception keeps its text and stack; secrets in URLs in them go."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, traces_exporter="none")

    try:
        _raise_with_url()
    except ConnectionError:
        _app_logger.exception("charging failed")
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: len(r.logs()) == 1, _WAIT_SECONDS)

    (record,) = receiver.logs()
    message = record.attributes["exception.message"]
    stack = record.attributes["exception.stacktrace"]
    assert "cannot reach https://ops:" in message and "order=42" in message
    assert "_raise_with_url" in stack and "order=42" in stack
    assert _SECRET not in repr(record)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_never_carry_secret_headers_or_query_values(
    receiver: OTLPReceiver, protocol: str
) -> None:
    """Whatever instrumentation made a span, its secrets are gone on the wire."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    telemetry = init_telemetry(
        endpoint=endpoint, protocol=protocol, logs_exporter="none"
    )
    tracer = trace.get_tracer(__name__)

    with tracer.start_as_current_span(
        "GET /charge",
        attributes={
            "url.full": f"https://api.example/charge?token={_SECRET}&page=2",
            "url.query": f"token={_SECRET}&page=2",
            "http.target": f"/charge?signature={_SECRET}",
            "http.request.header.authorization": (f"Bearer {_SECRET}",),
            "http.request.header.cookie": (f"session={_SECRET}",),
            "http.request.header.x-api-key": (_SECRET,),
            "http.response.header.set-cookie": (f"session={_SECRET}",),
            "http.request.header.accept": ("application/json",),
        },
    ) as span:
        try:
            _raise_with_url()
        except ConnectionError as error:
            span.record_exception(error)
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: len(r.spans()) == 1, _WAIT_SECONDS)

    (received,) = receiver.spans()
    attributes = received.attributes
    assert _SECRET not in repr(received)
    assert (
        attributes["url.full"] == f"https://api.example/charge?token={REDACTED}&page=2"
    )
    assert attributes["http.request.header.authorization"] == REDACTED
    assert attributes["http.request.header.accept"] == ["application/json"]
    (event,) = received.events
    assert "order=42" in event["exception.message"]
    assert "_raise_with_url" in event["exception.stacktrace"]


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_log_output() -> Iterator[_Everything]:
    """Every line our package and the SDK log, formatted with tracebacks."""
    handler = _Everything()
    loggers = [logging.getLogger(name) for name in ("showmax_otel", "opentelemetry")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_tokens_in_header_options_are_never_printed(
    receiver: OTLPReceiver,
    all_log_output: _Everything,
    capfd: pytest.CaptureFixture[str],
    protocol: str,
) -> None:
    """Export header tokens appear in no log line, warning, repr or stats."""
    receiver.fail_next(1000, status=401)
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        telemetry = init_telemetry(
            endpoint=endpoint,
            protocol=protocol,
            headers={"Authorization": f"Bearer {_SECRET}", "bad header": _SECRET},
            report_interval_seconds=0,
            raise_internal_errors=False,
        )
        for i in range(5):
            _app_logger.warning("record %d", i)
        telemetry.force_flush(_WAIT_SECONDS)

    printed = [
        *all_log_output.lines,
        *(str(w.message) for w in caught),
        repr(telemetry.settings),
        repr(telemetry.stats()),
        *capfd.readouterr(),
    ]
    assert any("left out" in line for line in printed)  # the bad header, by name
    assert telemetry.stats()["logs"]["export_failures"] > 0
    assert not [line for line in printed if _SECRET in line]
    assert receiver.requests() == [] or all(
        r.headers.get("authorization") == f"Bearer {_SECRET}"
        for r in receiver.requests()
    )


@pytest.mark.skipif(
    importlib.util.find_spec("showmax_otel.doctor") is None,
    reason="doctor is not part of this build",
)
def test_doctor_never_prints_header_tokens() -> None:
    """`showmax-otel doctor` reports on the headers without showing their values."""
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SHOWMAX_"))
    }
    environment["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer%20{_SECRET}"
    environment["OTEL_EXPORTER_OTLP_LOGS_HEADERS"] = f"x-api-key={_SECRET}"
    environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"https://user:{_SECRET}@127.0.0.1:9"

    finished = subprocess.run(
        [sys.executable, "-m", "showmax_otel.cli", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )

    assert _SECRET not in finished.stdout + finished.stderr


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            f"page=2;token={_SECRET}", f"page=2;token={REDACTED}", id="semicolon"
        ),
        pytest.param(
            f"filter=a;b&sort=x+y&token={_SECRET}",
            f"filter=a;b&sort=x+y&token={REDACTED}",
            id="the-rest-as-written",
        ),
        pytest.param(
            f"%74oken={_SECRET}&page=2", f"%74oken={REDACTED}&page=2", id="encoded-name"
        ),
        pytest.param(
            f"next=https%3A%2F%2Fshop.example%2Fcb%3Faccess_token%3D{_SECRET}",
            f"next=https://shop.example/cb%3Faccess_token%3D{REDACTED}",
            id="encoded-url-in-a-value",
        ),
        pytest.param("sort=name;desc&page=2", "sort=name;desc&page=2", id="untouched"),
    ],
)
def test_a_query_loses_its_secret_values_and_keeps_the_rest(
    query: str, expected: str
) -> None:
    """Pairs split on '&' and ';' (servers use both); only secrets change."""
    assert _default_redactor().query(query) == expected


def test_falcon_request_attributes_and_captured_headers_never_carry_secrets(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request attributes and headers users may ask for (the upstream
    variables) reach the span without credentials, cookies or secret
    parameters, and so does the access record."""
    import falcon
    import falcon.testing

    monkeypatch.setenv(
        "OTEL_PYTHON_FALCON_TRACED_REQUEST_ATTRS",
        "query_string,uri,relative_uri,auth,cookies,headers,params,env,method",
    )
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)

    class Charge:
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
            resp.media = {"ok": True}

    app = falcon.App()
    app.add_route("/charge", Charge())
    falcon.testing.TestClient(app).simulate_get(
        "/charge",
        query_string=(
            f"access_token={_SECRET};page=2"
            f"&next=https://a.example/?x=1;token={_SECRET}&next=other"
        ),
        headers={
            "Authorization": f"Bearer {_SECRET}",
            "Cookie": f"session={_SECRET}",
            "Referer": f"https://shop.example/cart?access_token={_SECRET}",
        },
    )
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: r.spans() and r.logs(), _WAIT_SECONDS)

    (span,) = receiver.spans()
    assert _SECRET not in repr(span)
    assert _SECRET not in repr(receiver.logs())
    attributes = span.attributes
    assert attributes["auth"] == REDACTED
    assert attributes["cookies"] == REDACTED
    assert attributes["method"] == "GET"
    assert "page=2" in attributes["query_string"]
    assert f"access_token={REDACTED}" in str(
        attributes["http.request.header.referer"]
    )


def test_a_traced_request_attribute_that_cannot_be_printed_is_left_out(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is served; the attribute is missing; a huge one is cut."""
    import falcon
    import falcon.testing

    monkeypatch.setenv("OTEL_PYTHON_FALCON_TRACED_REQUEST_ATTRS", "context,path")
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, max_attribute_bytes=100)

    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class Charge:
        def on_get(
            self, req: falcon.Request, resp: falcon.Response, long: str
        ) -> None:
            req.context.broken = Unprintable()
            resp.media = {"ok": True}

    app = falcon.App()
    app.add_route("/charge/{long}", Charge())
    result = falcon.testing.TestClient(app).simulate_get("/charge/" + "x" * 500)
    assert result.status_code == 200
    assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: r.spans(), _WAIT_SECONDS)

    (span,) = receiver.spans()
    assert "context" not in span.attributes
    assert len(span.attributes["path"]) == 100


def test_spans_of_any_instrumentation_lose_secrets_in_every_spelling(
    receiver: OTLPReceiver,
) -> None:
    """Header attributes named like credentials, with '-' or '_', and a
    percent-encoded parameter name, are scrubbed on the wire too."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, logs_exporter="none")
    tracer = trace.get_tracer(__name__)
    for attributes in (
        {"url.path": "/a", "http.request.header.x-csrf-token": (_SECRET,)},
        {"url.path": "/a", "http.response.header.x-session-id": (_SECRET,)},
        {"url.path": "/a", "http.request.header.x_api_key": (_SECRET,)},
        {"url.full": f"http://h.example/a?%74oken={_SECRET}"},
    ):
        with tracer.start_as_current_span("client call", attributes=attributes):
            pass
        # One span per export request: a neighbour's URL must not be what
        # makes the request scrubbed.
        assert telemetry.force_flush(_WAIT_SECONDS)
    assert receiver.wait_for(lambda r: len(r.spans()) == 4, _WAIT_SECONDS)

    assert _SECRET not in repr(receiver.spans())
