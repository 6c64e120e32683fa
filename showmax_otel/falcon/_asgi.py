"""The ASGI side: what an instrumented `falcon.asgi.App` does around each request.

The same observer as for WSGI; only the way in differs. The request
attributes follow the stable HTTP semantic conventions (the opentelemetry
ASGI instrumentation is not a dependency, so the old attribute names that
`OTEL_SEMCONV_STABILITY_OPT_IN=http/dup` adds for WSGI are not produced
here). WebSocket and lifespan events pass through untouched.

Limitation: WebSocket connections get no span and no access log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar

from opentelemetry.propagators.textmap import Getter

from ._observer import (
    STATE_KEY,
    RequestObserver,
    RequestState,
    pending_report,
    report_internal_error,
)
from ._wsgi import observe_escaped, observe_handled

__all__ = ["ASGIInstrumentation"]

_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _ScopeHeaders(Getter[MutableMapping[str, Any]]):
    """Reads `traceparent` and friends from an ASGI scope's header list."""

    def get(self, carrier: MutableMapping[str, Any], key: str) -> list[str] | None:
        wanted = key.lower().encode("latin-1")
        values = [
            value.decode("latin-1")
            for name, value in carrier.get("headers") or ()
            if name.lower() == wanted
        ]

        return values or None

    def keys(self, carrier: MutableMapping[str, Any]) -> list[str]:
        return [name.decode("latin-1") for name, _ in carrier.get("headers") or ()]


_scope_headers = _ScopeHeaders()


class ASGIInstrumentation:
    """Mixed in before the app's own class by `instrument_app()` (ASGI apps)."""

    __slots__ = ()

    _showmax_otel_observer: ClassVar[RequestObserver]

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: Any, send: _Send
    ) -> None:
        call = super().__call__  # type: ignore[misc]
        if scope.get("type") != "http":
            await call(scope, receive, send)
            return

        observer = self._showmax_otel_observer
        try:
            state, span_token, parent_token = _begin(observer, scope)
        except Exception as error:  # noqa: BLE001 - reported; the request goes on
            report_internal_error("starting the span of a Falcon request", error)
            await call(scope, receive, send)
            return

        async def send_observed(message: MutableMapping[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                state.status_code = int(message.get("status") or 0)
                state.response_headers = message.get("headers") or ()
            await send(message)

        try:
            await call(scope, receive, send_observed)
        except BaseException as error:
            observe_escaped(observer, state, error)
            raise
        finally:
            try:
                observer.finish(state, span_token, parent_token)
            except Exception as error:  # noqa: BLE001 - reported; the response stands
                report_internal_error("ending the span of a Falcon request", error)

    async def _handle_exception(
        self, req: Any, resp: Any, ex: Exception, params: dict[str, Any]
    ) -> bool:
        # The route is known now, and an error handler that raises itself
        # would otherwise leave the span named by the method alone.
        state = req.scope.get(STATE_KEY)
        if state is not None and state.route is None:
            state.route = getattr(req, "uri_template", None)
        with pending_report(ex):
            handled: bool = await super()._handle_exception(  # type: ignore[misc]
                req, resp, ex, params
            )
        if handled and state is not None:
            observe_handled(self._showmax_otel_observer, state, req, resp, ex)

        return handled


def _begin(
    observer: RequestObserver, scope: MutableMapping[str, Any]
) -> tuple[RequestState, Any, Any]:
    path = scope.get("path") or "/"
    query_bytes = scope.get("query_string") or b""
    query = query_bytes.decode("latin-1")
    raw_headers = scope.get("headers") or ()
    if not isinstance(raw_headers, (list, tuple)) or not all(
        isinstance(pair, (list, tuple)) for pair in raw_headers
    ):
        # The spec allows any iterables, and Falcon's own test client passes
        # iterators: read once here, Falcon would find them empty.
        raw_headers = scope["headers"] = [tuple(pair) for pair in raw_headers]
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in raw_headers
    }
    client = scope.get("client")
    remote = client[0] if client else None
    forwarded = headers.get("x-forwarded-for")
    client_address = forwarded.split(",", 1)[0].strip() if forwarded else remote
    user_agent = headers.get("user-agent")

    attributes: dict[str, Any] = {
        "http.request.method": scope.get("method", ""),
        "url.scheme": scope.get("scheme") or "http",
        "url.path": path,
        "network.protocol.version": scope.get("http_version") or "1.1",
    }
    if query:
        attributes["url.query"] = query
    host = headers.get("host")
    server = scope.get("server")
    if host:
        name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        attributes["server.address"] = name or host
        if port.isdigit():
            attributes["server.port"] = int(port)
    elif server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = int(server[1])
    if client:
        attributes["client.address"] = client[0]
        if client[1] is not None:
            attributes["client.port"] = int(client[1])
    if user_agent:
        attributes["user_agent.original"] = user_agent

    state, span_token, parent_token = observer.begin(
        scope.get("method", ""),
        path,
        query,
        client_address,
        user_agent,
        attributes,
        scope,
        _scope_headers,
    )
    scope[STATE_KEY] = state
    if observer.capture_request_headers:
        from opentelemetry.instrumentation.wsgi import (
            collect_custom_request_headers_attributes,
        )

        # The upstream collector reads a WSGI environ; an environ-shaped
        # view of the headers lets it apply the same name rules.
        environ = {
            "HTTP_" + name.upper().replace("-", "_"): value
            for name, value in headers.items()
        }
        observer.capture_request_headers_into(
            state.span, lambda: collect_custom_request_headers_attributes(environ)
        )

    return state, span_token, parent_token
