"""The Falcon app that the zero-code tests start under opentelemetry-instrument.

`ZC_MODE` says what the application itself does besides the CLI:

- `cli`: nothing; the CLI's configurator alone sets telemetry up;
- `init`: calls `init_telemetry()` at import, as code-configured services do;
- `instrument_app`: calls `instrument_app(app)` on its app.

With `ZC_BASIC_CONFIG=1` it also calls `logging.basicConfig()` at import.

Routes: `/ok` (readiness), `/work/{n}` (logs one record naming `n`), and
`/state`, which reports what the process holds: providers, exporting
processors, bridge handlers on the root logger, gevent patching, and the
findings of `showmax_otel.doctor.check()` without network probes.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import falcon
from opentelemetry import trace

import showmax_otel

CONSOLE_FORMAT = "zc-console %(levelname)s %(name)s %(message)s"

MODE = os.environ.get("ZC_MODE", "cli")
if MODE == "init":
    showmax_otel.init_telemetry()
if os.environ.get("ZC_BASIC_CONFIG") == "1":
    # What most services do first thing; under the CLI, telemetry is
    # already set up by then.
    logging.basicConfig(level=logging.INFO, format=CONSOLE_FORMAT)

logger = logging.getLogger("zc_app")
# The root logger's default level (WARNING) would drop the INFO records.
logger.setLevel(logging.INFO)
WORK_LOG = "zero-code work %s done"
FAILURE = "zero-code failure"


class Ok:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"pid": os.getpid()}


class Work:
    def on_get(self, req: falcon.Request, resp: falcon.Response, n: str) -> None:
        logger.info(WORK_LOG, n)
        span_context = trace.get_current_span().get_span_context()
        resp.media = {
            "pid": os.getpid(),
            "n": n,
            "trace_id": format(span_context.trace_id, "032x"),
        }


class Fail:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError(FAILURE)


class State:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = describe_process()


def describe_process() -> dict[str, Any]:
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.instrumentation.logging import LoggingInstrumentor

    from showmax_otel import _logging, _state, doctor

    telemetry = _state.current()
    tracer_provider = trace.get_tracer_provider()
    logger_provider = get_logger_provider()
    span_processors = tracer_provider._active_span_processor._span_processors
    log_processors = logger_provider._multi_log_record_processor._log_record_processors
    root_handlers = logging.getLogger().handlers
    instrumentor_handler = LoggingInstrumentor._logging_handler
    monkey = sys.modules.get("gevent.monkey")

    return {
        "pid": os.getpid(),
        "configured": telemetry is not None,
        "tracer_provider": type(tracer_provider).__name__,
        "tracer_provider_is_ours": telemetry is not None
        and tracer_provider is telemetry.tracer_provider,
        "logger_provider_is_ours": telemetry is not None
        and logger_provider is telemetry.logger_provider,
        "exporting_span_processors": doctor._exporting_processors(span_processors),
        "exporting_log_processors": doctor._exporting_processors(log_processors),
        "root_handlers": [type(h).__name__ for h in root_handlers],
        "root_bridges": sum(1 for h in root_handlers if _logging._is_bridge(h)),
        "instrumentor_handler_is_ours": instrumentor_handler is None
        or (telemetry is not None and instrumentor_handler is telemetry.bridge.handler),
        "stats": telemetry.stats() if telemetry is not None else None,
        "gevent_patched": bool(monkey and monkey.is_module_patched("socket")),
        "findings": [f.code + ": " + f.problem for f in doctor.check(network=False)],
    }


app = falcon.App()
app.add_route("/ok", Ok())
app.add_route("/work/{n}", Work())
app.add_route("/state", State())
app.add_route("/fail", Fail())

if MODE == "instrument_app":
    showmax_otel.instrument_app(app)
