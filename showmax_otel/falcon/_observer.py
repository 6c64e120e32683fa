"""What happens around one request: the server span, the exception record,
the access-log record.

`RequestObserver` is built once per instrumented app, from the settings in
force at that moment, and decides there what the hot path does (access log
on or off, header capture, excluded URLs). The WSGI and ASGI wrappers call
`begin()` before Falcon sees the request and `finish()` after Falcon has
run every middleware and error handler, while the server span is still the
current span: so the access-log record and any exception record carry the
span's trace and span ids.

Only a 5xx is an error. A handled exception counts when the response it
produced is a 5xx: the default 500 of an unhandled exception, an `HTTPError`
of the 5xx class, or a status that an error handler of the app chose. Each
such exception becomes one exception event on the span and one ERROR record
on the exception logger, unless the application already logged that same
exception object at ERROR or above (then its own record stands, and ours
would be a duplicate).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, trace
from opentelemetry.instrumentation._semconv import _get_schema_url, _StabilityMode
from opentelemetry.instrumentation.utils import (
    _start_internal_or_server_span,
    http_status_to_status_code,
)
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    get_excluded_urls,
    get_traced_request_attrs,
    sanitize_method,
)

from .. import _state
from .._logging import BridgeHandler, _cut, exception_stack, stack_prepared
from .._redaction import REDACTED, Redactor

__all__ = [
    "STATE_KEY",
    "RequestObserver",
    "RequestState",
    "drop_falcon_duplicate",
    "mark_logged",
    "pending_report",
]

# Where a request's state travels with it: the WSGI environ, the ASGI scope.
STATE_KEY = "showmax_otel.request"

# Set on an exception object once a record at ERROR or above carried it:
# the span id current then, so that one exception instance raised again in
# another request (a module-level one, say) is reported there too.
_LOGGED = "_showmax_otel_logged"
# Set on an exception while Falcon's error handler for it runs.
_PENDING = "_showmax_otel_pending"

_SCOPE = "showmax_otel.falcon"

_logger = logging.getLogger("showmax_otel.falcon")


def mark_logged(record: logging.LogRecord) -> bool:
    """A bridge filter: remember exceptions the application logged itself.

    Always lets the record through.
    """
    exc_info = record.exc_info
    if exc_info and record.levelno >= logging.ERROR:
        error = exc_info[1]
        if error is not None:
            _set_logged(error)

    return True


def drop_falcon_duplicate(record: logging.LogRecord) -> bool:
    """A filter on Falcon's own logger: leave reporting to the exception record.

    Falcon's default error handler for ASGI apps logs the traceback on the
    `falcon` logger without the route or status; the exception record
    written after the handler says the same and more, on the logger the
    settings name. Only exceptions of instrumented requests are dropped.
    """
    exc_info = record.exc_info
    if exc_info and exc_info[1] is not None:
        return not getattr(exc_info[1], _PENDING, False)

    return True


@contextmanager
def pending_report(error: BaseException) -> Iterator[None]:
    """Mark `error` as about to be reported by us while its handler runs."""
    try:
        setattr(error, _PENDING, True)
    except (AttributeError, TypeError):
        # Unmarkable: Falcon's own line for it stays, beside ours.
        yield
        return
    try:
        yield
    finally:
        delattr(error, _PENDING)


def _set_logged(error: BaseException) -> None:
    span_id = trace.get_current_span().get_span_context().span_id
    try:
        setattr(error, _LOGGED, span_id)
    except (AttributeError, TypeError):
        # An exception type that refuses attributes cannot be marked; the
        # worst outcome is a second record for it.
        return


def _logged_in(error: BaseException, span: Any) -> bool:
    """Whether `error` was logged at ERROR or above while `span` was current."""
    marked = getattr(error, _LOGGED, None)

    return marked is not None and marked == span.get_span_context().span_id


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the request
        return f"<unprintable {type(value).__name__}>"


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    if module and module != "builtins":
        return f"{module}.{cls.__qualname__}"

    return cls.__qualname__


def _semconv_mode() -> _StabilityMode:
    """The stable HTTP conventions; `http/dup` adds the old names as well."""
    opt_in = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    if "http/dup" in {part.strip().lower() for part in opt_in.split(",")}:
        return _StabilityMode.HTTP_DUP

    return _StabilityMode.HTTP


def report_internal_error(what: str, error: BaseException) -> None:
    """Count and report a failure of ours; never raise into the request
    (except in test suites that asked for it)."""
    telemetry = _state.current()
    if telemetry is not None:
        telemetry.report_internal_error(what, error)
    else:
        _logger.error("showmax_otel: internal error while %s: %r", what, error)


class RequestState:
    """One request as the observer sees it; lives in the environ or scope."""

    __slots__ = (
        "method",
        "path",
        "query",
        "span",
        "started",
        "route",
        "resource",
        "status_code",
        "response_headers",
        "error",
        "excluded",
        "client_address",
        "user_agent",
    )

    def __init__(
        self,
        span: Any,
        method: str,
        path: str,
        query: str,
        client_address: str | None,
        user_agent: str | None,
        excluded: bool,
    ) -> None:
        self.span = span
        self.method = method
        self.path = path
        self.query = query
        self.client_address = client_address
        self.user_agent = user_agent
        self.excluded = excluded
        self.started = time.perf_counter()
        self.route: str | None = None
        self.resource: object = None
        self.status_code = 0
        self.response_headers: Iterable[tuple[Any, Any]] = ()
        self.error: BaseException | None = None


class RequestObserver:
    """Spans and records for the requests of the apps it was given to."""

    def __init__(self, settings: Any, redactor: Redactor) -> None:
        self.mode = _semconv_mode()
        self.tracer = trace.get_tracer(
            _SCOPE, _version(), schema_url=_get_schema_url(self.mode)
        )
        self.redactor = redactor
        self.access_logger = (
            logging.getLogger(settings.access_logger_name)
            if settings.access_log
            else None
        )
        if self.access_logger is not None:
            _let_info_through(self.access_logger)
        self.exception_logger = logging.getLogger(settings.exception_logger_name)
        self.max_attribute_bytes = settings.max_attribute_bytes

        # The upstream variables, read once: with none of them set (the usual
        # case) the request path does no header scan and no regex search.
        excluded = get_excluded_urls("FALCON")
        self.excluded_urls = excluded if _excluded_configured() else None
        self.capture_request_headers = bool(
            os.environ.get(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST)
        )
        self.capture_response_headers = bool(
            os.environ.get(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE)
        )
        self.traced_request_attrs: list[str] = get_traced_request_attrs("FALCON")

    # -- request start and end -------------------------------------------------

    def begin(
        self,
        method: str,
        path: str,
        query: str,
        client_address: str | None,
        user_agent: str | None,
        attributes: dict[str, Any],
        carrier: Any,
        getter: Any,
    ) -> tuple[RequestState, Any, Any]:
        """Start the span and make it current; returns (state, token, token)."""
        # A logging configuration call made through a reference taken before
        # init (gunicorn's dictConfig on reload) can take the bridge off the
        # root logger; one list scan per request puts it back before this
        # request's records.
        bridge = getattr(_state.current(), "bridge", None)
        if bridge is not None and bridge.handler not in logging.root.handlers:
            bridge.ensure()
        method = sanitize_method(method)
        # Limitation: an excluded URL (OTEL_PYTHON_FALCON_EXCLUDED_URLS) gets
        # no span and no access log; an exception there still gets its
        # record, but with no span to correlate it with.
        if self.excluded_urls is not None and self.excluded_urls.url_disabled(path):
            excluded = RequestState(
                trace.INVALID_SPAN, method, path, "", client_address, user_agent, True
            )
            return excluded, None, None

        # Redacted once; the span and the access log share the result.
        if query:
            query = self.redactor.query(query)
        self._clean_attributes(attributes, query)
        state = RequestState(
            trace.INVALID_SPAN, method, path, query, client_address, user_agent, False
        )
        span, parent_token = _start_internal_or_server_span(
            tracer=self.tracer,
            span_name="HTTP" if method == "_OTHER" else method,
            start_time=None,
            context_carrier=carrier,
            context_getter=getter,
            attributes=attributes,
        )
        state.span = span
        span_token = context.attach(trace.set_span_in_context(span))

        return state, span_token, parent_token

    def finish(self, state: RequestState, span_token: Any, parent_token: Any) -> None:
        """Name the span, set its status, write the access log, end the span.

        Each step runs even when the one before it failed: a broken access
        log must not lose the span, nor leave it current.
        """
        span = state.span
        try:
            try:
                if span.is_recording():
                    self._complete_span(state, span)
            except Exception as error:  # noqa: BLE001 - reported; the rest goes on
                report_internal_error("completing the span of a Falcon request", error)
            if self.access_logger is not None and not state.excluded:
                self._log_access(state)
        finally:
            try:
                if not state.excluded:
                    span.end()
            finally:
                if span_token is not None:
                    context.detach(span_token)
                if parent_token is not None:
                    context.detach(parent_token)

    def _complete_span(self, state: RequestState, span: Any) -> None:
        # What the upstream WSGI helper (add_response_attributes) sets, and
        # ours, in one call: each set_attribute takes the span's lock and its
        # attributes' lock, which are gevent locks in a patched worker.
        attributes: dict[str, Any] = {}
        route = state.route
        if route:
            method = state.method
            name = "HTTP" if method == "_OTHER" else method
            span.update_name(f"{name} {route}")
            attributes["http.route"] = route
        code = state.status_code or 500
        attributes["http.response.status_code"] = code
        if self.mode is _StabilityMode.HTTP_DUP:
            attributes["http.status_code"] = code
        if http_status_to_status_code(code, server_span=True) is StatusCode.ERROR:
            error = state.error
            if error is not None and code >= 500:
                error_type = _qualified_name(type(error))
                attributes["error.type"] = error_type
                span.set_status(Status(StatusCode.ERROR, error_type))
            else:
                attributes["error.type"] = str(code)
                span.set_status(Status(StatusCode.ERROR))
        if state.resource is not None:
            attributes["falcon.resource"] = type(state.resource).__name__
        span.set_attributes(attributes)
        if self.capture_response_headers:
            self._capture_response_headers(span, state.response_headers)

    # -- exceptions ----------------------------------------------------------------

    def on_exception(
        self, state: RequestState, error: BaseException, status_code: int
    ) -> None:
        """An exception ended in `status_code`; record it when that is a 5xx.

        Limitation: only an `Exception` gets an ERROR record. A
        `BaseException` that ends a request (GreenletExit from a killed
        greenlet, SystemExit from a worker timeout) is recorded on the span
        and left to the server, which decides whether anything was sent.
        Limitation: when the application logs the exception itself only
        after our record was written (from its own middleware, say), both
        records stay.
        """
        if status_code < 500:
            return
        if state.error is None or isinstance(error, Exception):
            state.error = error
        span = state.span
        stack = None
        if span.is_recording():
            stack = exception_stack(type(error), error, error.__traceback__)
            self._add_exception_event(span, error, stack)
        if isinstance(error, Exception) and not _logged_in(error, span):
            if stack is None:
                self._log_exception(state, error, status_code)
            else:
                # Formatted once: the record's bridge takes the same text.
                with stack_prepared(error, stack):
                    self._log_exception(state, error, status_code)

    def _add_exception_event(self, span: Any, error: BaseException, stack: str) -> None:
        # The SDK's record_exception() would copy the message and the stack
        # as they are; a URL with a token inside either must be redacted, as
        # it is in the exception's log record.
        text = self.redactor.text
        limit = self.max_attribute_bytes
        span.add_event(
            "exception",
            {
                "exception.type": _qualified_name(type(error)),
                "exception.message": text(_safe_str(error))[:limit],
                "exception.stacktrace": text(stack)[-limit:],
            },
        )

    def _log_exception(
        self, state: RequestState, error: Exception, status_code: int
    ) -> None:
        logger = self.exception_logger
        _set_logged(error)
        if not logger.isEnabledFor(logging.ERROR):
            return
        extra: dict[str, Any] = {
            "http.request.method": state.method,
            "http.response.status_code": status_code,
            "url.path": state.path,
        }
        if state.route:
            extra["http.route"] = state.route

        # The record points at the line that raised, not at this one, so a
        # plain text formatter shows where the failure was.
        pathname, lineno, function = "", 0, None
        frame = error.__traceback__
        if frame is not None:
            while frame.tb_next is not None:
                frame = frame.tb_next
            code = frame.tb_frame.f_code
            pathname, lineno, function = code.co_filename, frame.tb_lineno, code.co_name
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            pathname,
            lineno,
            "%s %s failed with %d: %s: %s",
            (
                state.method,
                state.route or state.path,
                status_code,
                type(error).__name__,
                self.redactor.text(_safe_str(error)),
            ),
            (type(error), error, error.__traceback__),
            func=function,
            extra=extra,
        )
        logger.handle(record)

    # -- access log ----------------------------------------------------------------

    def _log_access(self, state: RequestState) -> None:
        code = state.status_code or 500
        if code < 400:
            level = logging.INFO
        elif code < 500:
            level = logging.WARNING
        else:
            level = logging.ERROR
        logger = self.access_logger
        if logger is None or not logger.isEnabledFor(level):
            return

        duration_seconds = time.perf_counter() - state.started
        extra: dict[str, Any] = {
            "http.request.method": state.method,
            "url.path": state.path,
            "http.response.status_code": code,
            "http.server.request.duration": duration_seconds,
        }
        target = state.path
        query = state.query
        if query:
            extra["url.query"] = query
            target = f"{target}?{query}"
        if state.route:
            extra["http.route"] = state.route
        size = _content_length(state.response_headers)
        if size is not None:
            extra["http.response.body.size"] = size
        if state.client_address:
            extra["client.address"] = state.client_address
        if state.user_agent:
            extra["user_agent.original"] = state.user_agent
        bridge = _sole_bridge(logger)
        if bridge is not None:
            bridge.emit_direct(
                logger.name,
                level,
                f"{state.method} {target} {code} {duration_seconds * 1000:.1f}ms",
                extra,
            )
            return
        # makeRecord() and handle() are what Logger.log() calls, minus the
        # stack walk that finds the caller: that would always be this line.
        record = logger.makeRecord(
            logger.name,
            level,
            "",
            0,
            "%s %s %d %.1fms",
            (state.method, target, code, duration_seconds * 1000),
            None,
            extra=extra,
        )
        logger.handle(record)

    # -- attributes -----------------------------------------------------------------

    def _clean_attributes(
        self, attributes: MutableMapping[str, Any], redacted_query: str
    ) -> None:
        """Redact secret-looking query values wherever a URL landed; take the
        port out of the server's name."""
        redactor = self.redactor
        if "url.query" in attributes:
            attributes["url.query"] = redacted_query
        for key in ("http.target", "http.url", "url.full"):
            value = attributes.get(key)
            if value and "?" in value:
                attributes[key] = redactor.text(value)
        # The WSGI helpers copy the Host header, port included, into
        # server.address (net.host.name): the conventions want the name
        # alone, and the port the client used in server.port.
        for name_key, port_key in _SERVER_NAME_KEYS:
            address = attributes.get(name_key)
            if address and ":" in address:
                host, port = _split_host(address)
                if port is not None:
                    attributes[name_key] = host
                    attributes[port_key] = port

    def capture_request_headers_into(
        self, span: Any, collect: Callable[[], dict[str, Any]]
    ) -> None:
        if self.capture_request_headers and span.is_recording():
            span.set_attributes(self._without_secret_headers(collect()))

    def _capture_response_headers(
        self, span: Any, headers: Iterable[tuple[Any, Any]]
    ) -> None:
        from opentelemetry.instrumentation.wsgi import (
            collect_custom_response_headers_attributes,
        )

        pairs = [
            (
                name.decode("latin-1") if isinstance(name, bytes) else name,
                value.decode("latin-1") if isinstance(value, bytes) else value,
            )
            for name, value in headers
        ]
        attributes = collect_custom_response_headers_attributes(pairs)
        span.set_attributes(self._without_secret_headers(attributes))

    def _without_secret_headers(self, attributes: dict[str, Any]) -> dict[str, Any]:
        # The capture variables accept regular expressions (".*" is common),
        # and the upstream sanitizer only masks what its own variable names:
        # Authorization, Cookie and Set-Cookie must never leave, whatever
        # was configured.
        is_secret = self.redactor.is_secret_header
        text = self.redactor.text
        kept: dict[str, Any] = {}
        for key, value in attributes.items():
            if is_secret(key.rpartition(".")[2].replace("_", "-")):
                continue
            # A URL in a header (Referer, Location) may carry a secret
            # parameter or a password.
            if isinstance(value, str):
                value = text(value)
            elif isinstance(value, (list, tuple)):
                value = [text(v) if isinstance(v, str) else v for v in value]
            kept[key] = value

        return kept

    def traced_request_attributes(self, req: Any) -> dict[str, str]:
        """The request attributes OTEL_PYTHON_FALCON_TRACED_REQUEST_ATTRS names.

        Upstream takes `str()` of each; so do we, without the secrets and
        cut to `max_attribute_bytes`: an attribute named like a credential
        (`auth`, `cookies`) is replaced, so are the secret entries of a
        mapping or list (`headers`, `params`, `env`) at any depth, and URLs
        and query strings (`uri`, `relative_uri`, `query_string`,
        `QUERY_STRING`) lose the values of secret parameters. An attribute
        that cannot be read or printed is left out.
        """
        found: dict[str, str] = {}
        for name in self.traced_request_attrs:
            try:
                value = getattr(req, name, None)
                if value is None:
                    continue
                if name == "query_string":
                    text = self.redactor.query(str(value))
                else:
                    text = str(self._redacted(name, value, 0))
            except Exception:  # noqa: BLE001 - an attribute that fails adds nothing
                continue
            found[name] = _cut(text, self.max_attribute_bytes)

        return found

    def _redacted(self, key: Any, value: Any, depth: int) -> Any:
        redactor = self.redactor
        if isinstance(key, str):
            if redactor.is_secret_header(key) or redactor.is_secret_param(key):
                return REDACTED
            if key.lower() == "query_string" and isinstance(value, str):
                return redactor.query(value)
        if isinstance(value, str):
            return redactor.text(value)
        if depth >= _MAX_TRACED_DEPTH:
            return value
        if isinstance(value, Mapping):
            return {k: self._redacted(k, v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redacted(None, item, depth + 1) for item in value]

        return value


# Deep enough for Falcon's request attributes (params holds lists).
_MAX_TRACED_DEPTH = 4


_SERVER_NAME_KEYS = (
    ("server.address", "server.port"),
    ("net.host.name", "net.host.port"),
)


def _split_host(address: str) -> tuple[str, int | None]:
    """`host:port` or `[v6]:port` as (host, port); (address, None) otherwise."""
    host, colon, port = address.rpartition(":")
    if not colon or not port.isdigit() or not host:
        return address, None
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port)
    if ":" in host:
        return address, None  # an IPv6 address without brackets has no port

    return host, int(port)


def _content_length(headers: Iterable[tuple[Any, Any]]) -> int | None:
    # Falcon writes header names in lower case, as str (WSGI) or bytes (ASGI).
    for name, value in headers:
        if name == "content-length" or name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None

    return None


def _excluded_configured() -> bool:
    return bool(
        os.environ.get("OTEL_PYTHON_FALCON_EXCLUDED_URLS")
        or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
    )


def _version() -> str:
    from .._telemetry import _VERSION

    return _VERSION


def _sole_bridge(logger: logging.Logger) -> BridgeHandler | None:
    """The bridge, when it alone would get `logger`'s records; else None."""
    telemetry = _state.current()
    bridge = getattr(telemetry, "bridge", None)
    handler = getattr(bridge, "handler", None)
    # mark_logged looks at exceptions only: an access record has none.
    if isinstance(handler, BridgeHandler) and handler.sole_handler_of(
        logger, harmless=(mark_logged,)
    ):
        return handler
    return None


def _let_info_through(logger: logging.Logger) -> None:
    """Give the access logger level INFO unless the application chose one.

    Its records of 2xx and 3xx responses are INFO, and the root logger's
    default level (WARNING) would drop every one of them. A level set on
    the logger (WARNING: only 4xx and 5xx) is left alone.
    """
    if logger.level != logging.NOTSET:
        return
    logger.setLevel(logging.INFO)

    def restore() -> None:
        logger.setLevel(logging.NOTSET)

    _state.on_reset(restore)
