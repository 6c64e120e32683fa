"""The WSGI side: what an instrumented `falcon.App` does around each request.

Limitation: the span ends when Falcon returns the body iterable; an
exception raised later, while the server iterates a streamed body, gets no
exception event and no exception record.
Limitation: Falcon's default handler still writes the traceback of an
unhandled exception to `wsgi.errors` (the server's error stream, which is
not `logging`), beside the exception record; no bridge sees that copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from opentelemetry.instrumentation.wsgi import (
    collect_custom_request_headers_attributes,
    collect_request_attributes,
    wsgi_getter,
)

from ._observer import (
    STATE_KEY,
    RequestObserver,
    RequestState,
    pending_report,
    report_internal_error,
)

__all__ = ["WSGIInstrumentation"]


class WSGIInstrumentation:
    """Mixed in before the app's own class by `instrument_app()`.

    `__call__` owns the server span: it starts it before Falcon builds the
    request, keeps it current through every middleware, responder and error
    handler, and ends it after Falcon returned. `_handle_exception` is
    Falcon's (private, stable since 3.0) funnel for every exception raised by
    middleware, hooks and responders; it is the one place where the
    exception object and the status its handler chose are both known.
    """

    __slots__ = ()

    _showmax_otel_observer: ClassVar[RequestObserver]

    def __call__(
        self, env: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        call = super().__call__  # type: ignore[misc]
        observer = self._showmax_otel_observer
        try:
            state, span_token, parent_token = _begin(observer, env)
        except Exception as error:  # noqa: BLE001 - reported; the request goes on
            report_internal_error("starting the span of a Falcon request", error)
            return call(env, start_response)

        def start_response_observed(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            state.status_code = _status_code(status)
            state.response_headers = headers
            if exc_info is None:
                return start_response(status, headers)

            return start_response(status, headers, exc_info)

        try:
            return call(env, start_response_observed)
        except BaseException as error:
            observe_escaped(observer, state, error)
            raise
        finally:
            try:
                observer.finish(state, span_token, parent_token)
            except Exception as error:  # noqa: BLE001 - reported; the response stands
                report_internal_error("ending the span of a Falcon request", error)

    def _handle_exception(
        self, req: Any, resp: Any, ex: Exception, params: dict[str, Any]
    ) -> bool:
        # The route is known now, and an error handler that raises itself
        # would otherwise leave the span named by the method alone.
        state = req.env.get(STATE_KEY)
        if state is not None and state.route is None:
            state.route = getattr(req, "uri_template", None)
        with pending_report(ex):
            handled: bool = super()._handle_exception(  # type: ignore[misc]
                req, resp, ex, params
            )
        if handled and state is not None:
            observe_handled(self._showmax_otel_observer, state, req, resp, ex)

        return handled


def _begin(
    observer: RequestObserver, env: dict[str, Any]
) -> tuple[RequestState, Any, Any]:
    path = env.get("PATH_INFO") or "/"
    query = env.get("QUERY_STRING") or ""
    attributes = collect_request_attributes(env, observer.mode)
    # The upstream collector reports the path and query only when the server
    # passed the raw request line (RAW_URI, REQUEST_URI); not every server
    # does, and the test client does not.
    attributes.setdefault("url.path", path)
    if query:
        attributes.setdefault("url.query", query)
    remote = env.get("REMOTE_ADDR")
    forwarded = env.get("HTTP_X_FORWARDED_FOR")
    client = forwarded.split(",", 1)[0].strip() if forwarded else remote
    state, span_token, parent_token = observer.begin(
        env.get("REQUEST_METHOD", ""),
        path,
        query,
        client,
        env.get("HTTP_USER_AGENT"),
        attributes,
        env,
        wsgi_getter,
    )
    env[STATE_KEY] = state
    if observer.capture_request_headers:
        observer.capture_request_headers_into(
            state.span, lambda: collect_custom_request_headers_attributes(env)
        )

    return state, span_token, parent_token


def _status_code(status: str) -> int:
    try:
        return int(status[:3])
    except (TypeError, ValueError):
        return 0


def observe_handled(
    observer: RequestObserver,
    state: RequestState,
    req: Any,
    resp: Any,
    error: Exception,
) -> None:
    """After Falcon's error handler ran: the status it chose decides."""
    try:
        import falcon

        try:
            code = falcon.http_status_to_code(resp.status)
        except (TypeError, ValueError):
            code = 500
        if req.uri_template is not None:
            state.route = req.uri_template
        observer.on_exception(state, error, code)
    except Exception as internal:  # noqa: BLE001 - reported; the response stands
        report_internal_error("recording an exception of a Falcon request", internal)


def observe_escaped(
    observer: RequestObserver, state: RequestState, error: BaseException
) -> None:
    """The exception left the app: the server answers 500, if anything."""
    try:
        if not state.status_code:
            state.status_code = 500
        observer.on_exception(state, error, 500)
    except Exception as internal:  # noqa: BLE001 - reported; the original goes on
        report_internal_error("recording an exception of a Falcon request", internal)
