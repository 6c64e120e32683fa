"""The Falcon app the server tests run under uWSGI and gunicorn.

It calls `init_telemetry()` at import (settings from the environment) and
answers with JSON that names the worker (`pid`) and the request's trace
(`trace_id`), so a test can match what the receiver got to what it sent:

- `/ok` and `/log` (which also logs one record through `get_logger()`);
- `/spawn`: runs a child process (fork and exec) and returns its pid;
- `/block?ms=N`: holds the event loop for N ms without yielding;
- `/stats`: the worker's `Telemetry.stats()`.

With `SERVER_APP_GEVENT_PATCH=1` the module monkey-patches first thing, as
a gevent application should. Once the package's Falcon instrumentation
makes the server span, the app uses it; until then (or with it turned
off) a small middleware makes one.
"""

from __future__ import annotations

import os

if os.environ.get("SERVER_APP_GEVENT_PATCH") == "1":
    from gevent import monkey

    monkey.patch_all()

import logging
import subprocess
import sys
import time
from typing import Any

import falcon
from opentelemetry import context, trace

import showmax_otel

telemetry = showmax_otel.init_telemetry()
logger = showmax_otel.get_logger("server_app")
# The root logger's default level (WARNING) would drop the INFO records.
logger.setLevel(logging.INFO)
tracer = trace.get_tracer("tests.apps.servers")

LOG_BODY = "server app handled /log"
# Logged in the process that imports the app: the uWSGI master, unless
# lazy-apps; the master must export nothing.
logger.warning("server app imported in pid %d", os.getpid())


def _real_sleep() -> Any:
    """time.sleep as it was before monkey-patching: it never yields."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey as gevent_monkey

        return gevent_monkey.get_original("time", "sleep")
    return time.sleep


def _answer(resp: falcon.Response, **fields: Any) -> None:
    span_context = trace.get_current_span().get_span_context()
    resp.media = {
        "pid": os.getpid(),
        "trace_id": format(span_context.trace_id, "032x"),
        **fields,
    }


class ServerSpan:
    """A SERVER span per request when no instrumentation made one."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if trace.get_current_span().is_recording():
            return
        span = tracer.start_span(f"{req.method} {req.path}", kind=trace.SpanKind.SERVER)
        req.context.manual_span = span
        req.context.manual_token = context.attach(trace.set_span_in_context(span))

    def process_response(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        span = req.context.get("manual_span")
        if span is None:
            return
        if req.uri_template:
            span.update_name(f"{req.method} {req.uri_template}")
        span.end()
        context.detach(req.context.manual_token)


class Ok:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        _answer(resp)


class Log:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        logger.info(LOG_BODY)
        _answer(resp)


class Spawn:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Under uWSGI sys.executable is the uwsgi binary: run a shell instead.
        child = subprocess.run(
            ["/bin/sh", "-c", "echo $$"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        _answer(resp, child_pid=int(child.stdout), child_stderr=child.stderr)


class Block:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        millis = req.get_param_as_int("ms", default=300, min_value=0, max_value=5000)
        hold_the_event_loop(millis / 1000)
        _answer(resp)


def hold_the_event_loop(seconds: float) -> None:
    """Block the whole worker: the hub-block watch must name this function."""
    _real_sleep()(seconds)


class Stats:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"pid": os.getpid(), "stats": telemetry.stats()}


app = falcon.App(middleware=[ServerSpan()])
app.add_route("/ok", Ok())
app.add_route("/log", Log())
app.add_route("/spawn", Spawn())
app.add_route("/block", Block())
app.add_route("/stats", Stats())
