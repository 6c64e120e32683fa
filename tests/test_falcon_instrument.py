"""Falcon apps get exactly one server span per request however they are built."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from typing import Any

import falcon
import falcon.asgi
import falcon.testing
import pytest
from apps.falcon_routes import add_routes, build_app

from showmax_otel import init_telemetry, instrument_app
from showmax_otel.falcon.testing import (
    RequestTelemetry,
    make_traceparent,
    request_telemetry,
    wait_for_request,
)
from showmax_otel.testing import OTLPReceiver


def _get(app: Any, path: str, headers: dict[str, str]) -> falcon.testing.Result:
    client = falcon.testing.TestClient(app)
    if getattr(type(app), "_ASGI", False):
        return client.simulate_get(path, headers=headers)

    return client.simulate_get(path, headers=headers, wsgierrors=io.StringIO())


def _one_request(
    receiver: OTLPReceiver, app: Any, path: str = "/ok"
) -> RequestTelemetry:
    trace_id, headers = make_traceparent()
    _get(app, path, headers)
    telemetry = init_telemetry()
    assert telemetry.force_flush(5.0)

    return wait_for_request(receiver, trace_id)


def _server_spans(seen: RequestTelemetry) -> list[Any]:
    return [span for span in seen.spans if span.kind == "SPAN_KIND_SERVER"]


@pytest.mark.parametrize("asgi", [False, True], ids=["wsgi", "asgi"])
def test_app_built_before_init_is_instrumented_by_instrument_app(
    receiver: OTLPReceiver, asgi: bool
) -> None:
    """An app built before init gets spans and records from `instrument_app()`."""
    app = build_app(asgi=asgi)
    init_telemetry(endpoint=receiver.http_endpoint)

    assert instrument_app(app) is app
    seen = _one_request(receiver, app, "/items/7")

    assert [s.name for s in _server_spans(seen)] == ["GET /items/{item_id}"]
    assert len(seen.access_logs) == 1
    seen.assert_correlated()


def test_app_built_before_init_and_left_alone_has_no_spans(
    receiver: OTLPReceiver,
) -> None:
    """Without `instrument_app()`, an app built before init is not touched."""
    app = build_app()
    telemetry = init_telemetry(endpoint=receiver.http_endpoint)

    trace_id, headers = make_traceparent()
    assert _get(app, "/ok", headers).status_code == 200
    assert telemetry.force_flush(5.0)

    assert request_telemetry(receiver, trace_id).spans == []


def test_class_imported_before_init_builds_instrumented_apps(
    receiver: OTLPReceiver,
) -> None:
    """`from falcon import App` taken before init still builds instrumented apps."""
    from falcon import App

    class ServiceApp(App):  # type: ignore[misc]
        """A subclass defined before init, as services often do."""

    init_telemetry(endpoint=receiver.http_endpoint)
    plain = add_routes(App(), asgi=False)
    derived = add_routes(ServiceApp(), asgi=False)

    for app in (plain, derived):
        seen = _one_request(receiver, app)
        assert [s.name for s in _server_spans(seen)] == ["GET /ok"]
        seen.assert_correlated()
    assert isinstance(derived, ServiceApp)
    assert type(derived).__name__ == "ServiceApp"


def test_instrumenting_twice_gives_one_server_span(receiver: OTLPReceiver) -> None:
    """`instrument_app()` on an instrumented app changes nothing."""
    init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()
    instrumented_class = type(app)

    instrument_app(app)
    instrument_app(app)
    seen = _one_request(receiver, app)

    assert type(app) is instrumented_class
    assert len(seen.spans) == 1
    assert len(seen.access_logs) == 1


@pytest.mark.parametrize(
    "upstream_first", [True, False], ids=["upstream-first", "ours-first"]
)
def test_upstream_falcon_instrumentor_never_adds_a_second_span(
    receiver: OTLPReceiver, upstream_first: bool
) -> None:
    """With opentelemetry-instrumentation-falcon active too, one server span."""
    from opentelemetry.instrumentation.falcon import FalconInstrumentor

    instrumentor = FalconInstrumentor()
    try:
        if upstream_first:
            instrumentor.instrument()
            app = add_routes(falcon.App(), asgi=False)
            init_telemetry(endpoint=receiver.http_endpoint)
            instrument_app(app)
        else:
            init_telemetry(endpoint=receiver.http_endpoint)
            instrumentor.instrument()
            app = add_routes(falcon.App(), asgi=False)
        seen = _one_request(receiver, app, "/crash")
    finally:
        instrumentor.uninstrument()

    assert [s.name for s in seen.spans] == ["GET /crash"]
    assert seen.spans[0].scope == "showmax_otel.falcon"
    assert len(seen.exception_logs) == 1
    seen.assert_correlated()


def test_wsgi_middleware_around_the_app_keeps_one_server_span(
    receiver: OTLPReceiver,
) -> None:
    """Under the OpenTelemetry WSGI middleware our span becomes its child."""
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    init_telemetry(endpoint=receiver.http_endpoint)
    app = build_app()
    seen = _one_request(receiver, OpenTelemetryMiddleware(app))

    servers = _server_spans(seen)
    assert len(servers) == 1
    ours = [s for s in seen.spans if s.scope == "showmax_otel.falcon"]
    assert [s.kind for s in ours] == ["SPAN_KIND_INTERNAL"]
    assert ours[0].parent_span_id == servers[0].span_id
    assert ours[0].name == "GET /ok"


def test_instrument_falcon_false_leaves_new_apps_alone(receiver: OTLPReceiver) -> None:
    """With `instrument_falcon=False` only `instrument_app()` instruments."""
    telemetry = init_telemetry(endpoint=receiver.http_endpoint, instrument_falcon=False)
    untouched = build_app()
    chosen = instrument_app(build_app())

    trace_id, headers = make_traceparent()
    _get(untouched, "/ok", headers)
    assert telemetry.force_flush(5.0)
    assert request_telemetry(receiver, trace_id).spans == []
    assert len(_one_request(receiver, chosen).spans) == 1


def test_instrument_app_rejects_what_is_not_a_falcon_app() -> None:
    """A clear TypeError names what was given instead of silently doing nothing."""

    def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
        return []

    with pytest.raises(TypeError, match=r"falcon\.App or falcon\.asgi\.App.*function"):
        instrument_app(wsgi_app)


def test_importing_falcon_testing_after_init_works() -> None:
    """`falcon.testing` imports and drives an app after init (upstream breaks it)."""
    script = textwrap.dedent(
        """
        import falcon
        from showmax_otel import init_telemetry

        init_telemetry(traces_exporter="none", logs_exporter="none")
        import falcon.testing

        class Hello:
            def on_get(self, req, resp):
                resp.media = {"hello": "world"}

        app = falcon.App()
        app.add_route("/", Hello())
        result = falcon.testing.TestClient(app).simulate_get("/")
        print(result.status_code, type(app).__mro__[1].__name__)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", "WSGIInstrumentation"]
