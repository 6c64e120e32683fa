"""Two overlapping requests under gevent, each doing work in greenlets.

Run as `python falcon_gevent_requests.py OTLP_HTTP_ENDPOINT`. Serves a
Falcon app with gevent's WSGI server on a free loopback port, sends two
requests that are both in flight at once (each waits until the other has
started), and prints one JSON line: the trace id each response reported.
Each request starts one greenlet with `spawn()` and one through a pool
with `context_bound()`; each greenlet opens a span and logs a record.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 - after patching, as gevent requires
import logging  # noqa: E402
import sys  # noqa: E402
import urllib.request  # noqa: E402
from typing import Any  # noqa: E402

import falcon  # noqa: E402
import gevent  # noqa: E402
import gevent.event  # noqa: E402
import gevent.pool  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402
from opentelemetry import trace  # noqa: E402

from showmax_otel import init_telemetry, shutdown_telemetry  # noqa: E402
from showmax_otel.falcon import context_bound, spawn  # noqa: E402

GREENLET_LOGGER = "tests.falcon.greenlets"

_log = logging.getLogger(GREENLET_LOGGER)
_tracer = trace.get_tracer("tests.falcon.greenlets")
_started = {"a": gevent.event.Event(), "b": gevent.event.Event()}
_pool = gevent.pool.Pool(4)


def _child(name: str, how: str) -> None:
    with _tracer.start_as_current_span(f"child {name} {how}"):
        # A cooperative switch, so that the other request's greenlets run
        # in between and would show any leak of context.
        gevent.sleep(0)
        _log.warning("child of %s via %s", name, how)


class Work:
    def on_get(self, req: Any, resp: Any, name: str) -> None:
        other = "b" if name == "a" else "a"
        _started[name].set()
        spawned = spawn(_child, name, "spawn")
        pooled = _pool.spawn(context_bound(_child), name, "pool")
        if not _started[other].wait(timeout=10):
            raise RuntimeError(f"request {other} never started")
        gevent.joinall([spawned, pooled], timeout=10, raise_error=True)
        context = trace.get_current_span().get_span_context()
        resp.media = {"name": name, "trace_id": format(context.trace_id, "032x")}


def main() -> int:
    init_telemetry(endpoint=sys.argv[1], service_name="gevent-requests")
    app = falcon.App()
    app.add_route("/work/{name}", Work())
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    port = server.server_port

    def fetch(name: str) -> Any:
        url = f"http://127.0.0.1:{port}/work/{name}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    jobs = [gevent.spawn(fetch, name) for name in ("a", "b")]
    gevent.joinall(jobs, timeout=20, raise_error=True)
    server.stop(timeout=5)
    print(json.dumps({job.value["name"]: job.value["trace_id"] for job in jobs}))

    return 0 if shutdown_telemetry(10.0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
