"""The catalogue API the benchmark serves: `bench.app:app` for uWSGI and gunicorn.

Routes: `GET /items` (a page of summaries), `GET /items/{id}` (one item, about
1 KB of JSON), `GET /search?q=` and `GET /fail` (raises, unhandled). Every
request writes one access-log record and the failing route one exception
record: in the modes where showmax_otel does that itself, the app leaves it
to the package.

`GET /_bench/stats` answers what this worker counted (requests, failures,
the probe's longest wake-up lag) and is served like any other route, so its
own records are part of what the harness expects to arrive.

The mode comes from `BENCH_MODE` (see bench/modes.py).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import falcon

from bench import setups
from bench.modes import MODES

MODE = MODES[os.environ.get("BENCH_MODE", "bare")]

# Telemetry first: instrumentation patches falcon.App, so it must be in place
# before the app below is built.
setups.setup(MODE.name)

_ITEM_COUNT = 200
_WORDS = [
    "drama", "comedy", "thriller", "documentary", "series", "season", "episode",
    "trailer", "kids", "sport", "live", "classic", "award", "local", "premiere",
]  # fmt: skip


def _make_item(item_id: int) -> dict[str, Any]:
    words = [_WORDS[(item_id * 7 + i) % len(_WORDS)] for i in range(12)]
    return {
        "id": item_id,
        "title": f"Title {item_id} " + " ".join(words[:3]),
        "genres": words[3:6],
        "year": 1990 + item_id % 35,
        "rating": round(5 + (item_id % 50) / 10, 1),
        "description": (" ".join(words) + ". ") * 9,
        "cast": [f"Actor {item_id * 3 + i}" for i in range(6)],
    }


CATALOGUE = [_make_item(i) for i in range(_ITEM_COUNT)]


class Counters:
    """What this worker served, read by the harness through /_bench/stats."""

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.started = time.monotonic()


COUNTERS = Counters()


class HubProbe:
    """A greenlet that sleeps 5 ms again and again and records how late it wakes.

    Its lateness is the longest time the gevent hub could not run a ready
    greenlet: export work or a blocking call holding the loop.
    """

    interval_seconds = 0.005

    def __init__(self) -> None:
        self.max_lag_seconds = 0.0
        self.wakeups = 0

    def reset(self) -> None:
        self.max_lag_seconds = 0.0
        self.wakeups = 0

    def run(self) -> None:
        import gevent

        clock = time.perf_counter
        while True:
            before = clock()
            gevent.sleep(self.interval_seconds)
            lag = clock() - before - self.interval_seconds
            self.wakeups += 1
            if lag > self.max_lag_seconds:
                self.max_lag_seconds = lag


PROBE = HubProbe()


def _start_probe() -> None:
    try:
        import gevent
    except ImportError:
        return
    gevent.spawn(PROBE.run)


def _logger(name: str) -> logging.Logger:
    if MODE.name == "naive-dup":
        return setups.get_logger_naive_dup(name)

    return logging.getLogger(name)


class AccessLogMiddleware:
    """Counts every request; writes its access record unless the package does."""

    def __init__(self, write_records: bool) -> None:
        self._write_records = write_records

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        COUNTERS.requests += 1

    def process_response(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        if not req_succeeded:
            COUNTERS.failures += 1
        if self._write_records:
            _logger("falcon.access").info(
                "%s %s %s",
                req.method,
                req.relative_uri,
                resp.status_code,
                extra={
                    "http.method": req.method,
                    "http.route": req.uri_template or "",
                    "http.status_code": resp.status_code,
                },
            )


def _handle_unhandled(
    req: falcon.Request, resp: falcon.Response, error: Exception, params: dict
) -> None:
    _logger("falcon.error").exception("unhandled error in %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = {"title": "500 Internal Server Error"}


class ItemsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        limit = req.get_param_as_int("limit", min_value=1, max_value=100) or 20
        offset = req.get_param_as_int("offset", min_value=0) or 0
        resp.media = [
            {"id": item["id"], "title": item["title"], "year": item["year"]}
            for item in CATALOGUE[offset : offset + limit]
        ]


class ItemResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response, item_id: int) -> None:
        if not 0 <= item_id < _ITEM_COUNT:
            raise falcon.HTTPNotFound()
        resp.media = CATALOGUE[item_id]


class SearchResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        query = (req.get_param("q") or "").lower()
        hits = [
            {"id": item["id"], "title": item["title"]}
            for item in CATALOGUE
            if query in item["title"].lower()
        ]
        resp.media = {"query": query, "count": len(hits), "items": hits[:20]}


class FailResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise RuntimeError("the catalogue backend went away")


class StatsResource:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {
            "pid": os.getpid(),
            "mode": MODE.name,
            "requests": COUNTERS.requests,
            "failures": COUNTERS.failures,
            "probe_max_lag_ms": PROBE.max_lag_seconds * 1000,
            "probe_wakeups": PROBE.wakeups,
        }
        if req.get_param_as_bool("reset_probe"):
            PROBE.reset()


def create_app() -> falcon.App:
    write_records = not MODE.package_writes_records
    app = falcon.App(middleware=[AccessLogMiddleware(write_records)])
    if write_records:
        app.add_error_handler(Exception, _handle_unhandled)
    app.add_route("/items", ItemsResource())
    app.add_route("/items/{item_id:int}", ItemResource())
    app.add_route("/search", SearchResource())
    app.add_route("/fail", FailResource())
    app.add_route("/_bench/stats", StatsResource())

    return app


app = create_app()
_start_probe()
