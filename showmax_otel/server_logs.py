"""The servers' own request logs, with the request's trace id.

gunicorn: pass ``--logger-class showmax_otel.gunicorn_logger.GunicornLogger``.
Every access-log line then ends with ``trace_id=<32 hex> span_id=<16 hex>``
(``-`` for a request that had no server span); a custom
``--access-logformat`` can place them itself with ``%(trace_id)s`` and
``%(span_id)s``.

uWSGI: `install_uwsgi_logvars()` (called by `init_telemetry()` under
uWSGI) sets the request log variables ``trace_id`` and ``span_id`` when a
server span starts; put them in the request log with, for example,
``--logformat '%(addr) [%(ctime)] "%(method) %(uri)" %(status) %(msecs)ms
trace_id=%(trace_id) span_id=%(span_id)'``.

gunicorn writes its access line after the application has returned, when
the span is no longer current, so the span is read from the WSGI environ,
where the Falcon layer keeps it for the duration of the request.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = [
    "ENVIRON_SPAN_KEYS",
    "UWSGI_LOGFORMAT",
    "install_uwsgi_logvars",
    "process_command_line",
    "span_ids_from_environ",
]

# Where a request's server span is found in the WSGI environ: the request
# state of this package's Falcon layer (its `span` attribute), then the span
# that opentelemetry-instrumentation-falcon keeps there.
ENVIRON_SPAN_KEYS = ("showmax_otel.request", "opentelemetry-falcon.span_key")

UWSGI_LOGFORMAT = (
    '%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) '
    '"%(referer)" "%(uagent)" trace_id=%(trace_id) span_id=%(span_id)'
)
_NO_ID = "-"


def span_ids_from_environ(environ: Any) -> tuple[str, str]:
    """The request's (trace_id, span_id) in hex, or ("-", "-")."""
    span = None
    for key in ENVIRON_SPAN_KEYS:
        span = environ.get(key)
        if span is not None:
            break
    if span is None:
        return _NO_ID, _NO_ID

    return _span_ids(span)


def _span_ids(span: Any) -> tuple[str, str]:
    if not hasattr(span, "get_span_context"):
        span = getattr(span, "span", None)
    try:
        context = span.get_span_context()
    except AttributeError:
        return _NO_ID, _NO_ID
    if not context.is_valid:
        return _NO_ID, _NO_ID

    return format(context.trace_id, "032x"), format(context.span_id, "016x")


class _UwsgiLogvarsProcessor:
    """Sets uWSGI's request log variables when a server span starts.

    A span processor that exports nothing: `on_start` runs inside the
    request, where `uwsgi.set_logvar` addresses that request's log line.
    The `uwsgi` module is looked up per span because it does not exist yet
    when `opentelemetry-instrument`'s start-up runs in the master.
    """

    def __init__(self) -> None:
        from opentelemetry.trace import SpanKind

        self._server = SpanKind.SERVER

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if span.kind is not self._server:
            return
        uwsgi = sys.modules.get("uwsgi")
        if uwsgi is None:
            return
        trace_id, span_id = _span_ids(span)
        try:
            uwsgi.set_logvar("trace_id", trace_id)
            uwsgi.set_logvar("span_id", span_id)
        except Exception:  # noqa: BLE001 - no request (a mule, a spooler): no log line
            return

    def on_end(self, span: Any) -> None:
        return None

    def _on_ending(self, span: Any) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def process_command_line() -> list[str]:
    """This process's arguments, also where an embedding server hides them.

    Inside uWSGI, `sys.argv` is `['']` while its Python starts, so the
    kernel's copy is read instead (Linux only; elsewhere it stays empty).
    """
    argv = [arg for arg in getattr(sys, "argv", []) if arg]
    if argv:
        return argv
    try:
        with open("/proc/self/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return []

    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _under_uwsgi() -> bool:
    if "uwsgi" in sys.modules:
        return True
    argv = process_command_line()

    return bool(argv) and os.path.basename(argv[0]).startswith("uwsgi")


def install_uwsgi_logvars(telemetry: Any) -> bool:
    """Under uWSGI, feed `trace_id`/`span_id` to its request log; idempotent.

    Returns whether the processor is in place. Does nothing outside uWSGI,
    when the SDK is disabled, or with a provider that takes no processors
    (a no-op one the application set before init).
    """
    provider: Any = getattr(telemetry, "tracer_provider", None)
    if not callable(getattr(provider, "add_span_processor", None)):
        return False
    if not _under_uwsgi():
        return False
    processors = getattr(
        getattr(provider, "_active_span_processor", None), "_span_processors", ()
    )
    if any(isinstance(p, _UwsgiLogvarsProcessor) for p in processors):
        return True
    provider.add_span_processor(_UwsgiLogvarsProcessor())

    return True
