"""A Falcon app with one route per behaviour the Falcon tests check.

`build_app(asgi=False)` builds it as a WSGI `falcon.App`,
`build_app(asgi=True)` as a `falcon.asgi.App`, with the same routes, error
handlers and logging, so that every row of the tests runs on both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import falcon
import falcon.asgi

APP_LOGGER = "tests.falcon.app"

_log = logging.getLogger(APP_LOGGER)


class MappedError(Exception):
    """Mapped to 422 by the app's own error handler."""


class FatalMappedError(Exception):
    """Mapped to 502 by the app's own error handler."""


def _ok(req: Any, resp: Any) -> None:
    resp.media = {"ok": True}


def _item(req: Any, resp: Any, item_id: str) -> None:
    resp.media = {"id": item_id}


def _bad_request(req: Any, resp: Any) -> None:
    raise falcon.HTTPBadRequest(title="bad", description="missing field")


def _forbidden(req: Any, resp: Any) -> None:
    raise falcon.HTTPForbidden()


def _no_content(req: Any, resp: Any) -> None:
    raise falcon.HTTPStatus(falcon.HTTP_204)


def _mapped(req: Any, resp: Any) -> None:
    raise MappedError("not processable")


def _fatal_mapped(req: Any, resp: Any) -> None:
    raise FatalMappedError("upstream down")


def _crash(req: Any, resp: Any) -> None:
    raise RuntimeError("crashed while calling http://inventory/?token=s3cret&page=2")


def _crash_nested(req: Any, resp: Any) -> None:
    raise RuntimeError(ValueError("an exception whose argument is an exception"))


def _unavailable(req: Any, resp: Any) -> None:
    resp.status = falcon.HTTP_503
    resp.media = {"retry": True}


def _http_5xx(req: Any, resp: Any) -> None:
    raise falcon.HTTPServiceUnavailable(title="maintenance")


def _logs_oddities(req: Any, resp: Any) -> None:
    # Each of these once broke a whole export batch somewhere.
    _log.error(ValueError("an exception object as the message"))
    _log.error(
        "exc_info=False and extra values that are not strings",
        exc_info=False,
        extra={"obj": object(), "huge": 2**80, "mixed": [1, "a"], "none": None},
    )
    _log.warning(RuntimeError(KeyError("an exception whose args are exceptions")))
    resp.media = {"logged": 3}


def _logs_then_raises(req: Any, resp: Any) -> None:
    try:
        raise LookupError("the app logs this one itself")
    except LookupError:
        _log.exception("lookup failed")
        raise


ROUTES: dict[str, Callable[..., None]] = {
    "/ok": _ok,
    "/items/{item_id}": _item,
    "/bad-request": _bad_request,
    "/forbidden": _forbidden,
    "/no-content": _no_content,
    "/mapped": _mapped,
    "/fatal-mapped": _fatal_mapped,
    "/crash": _crash,
    "/crash-nested": _crash_nested,
    "/unavailable": _unavailable,
    "/http-503": _http_5xx,
    "/logs-oddities": _logs_oddities,
    "/logs-then-raises": _logs_then_raises,
}


def _deny(req: Any, resp: Any, resource: Any, params: Any) -> None:
    raise falcon.HTTPUnauthorized(title="no token")


async def _deny_async(req: Any, resp: Any, resource: Any, params: Any) -> None:
    _deny(req, resp, resource, params)


class StatusMiddleware:
    """Answers `/mw-status` itself, by raising HTTPStatus before routing."""

    def process_request(self, req: Any, resp: Any) -> None:
        if req.path == "/mw-status":
            raise falcon.HTTPStatus(falcon.HTTP_202, text="accepted by middleware")

    async def process_request_async(self, req: Any, resp: Any) -> None:
        self.process_request(req, resp)


def _resource(handler: Callable[..., None], asgi: bool) -> object:
    if asgi:

        async def on_get_async(self: Any, req: Any, resp: Any, **params: Any) -> None:
            handler(req, resp, **params)

        return type("AsyncResource", (), {"on_get": on_get_async})()

    def on_get(self: Any, req: Any, resp: Any, **params: Any) -> None:
        handler(req, resp, **params)

    return type("Resource", (), {"on_get": on_get})()


def _set_status(resp: Any, status: str, title: str) -> None:
    resp.status = status
    resp.media = {"title": title}


def add_routes(app: Any, asgi: bool) -> Any:
    """Add the routes and error handlers to an existing app; returns it."""
    for template, handler in ROUTES.items():
        app.add_route(template, _resource(handler, asgi))
    hooked = _resource(_ok, asgi)
    hook = _deny_async if asgi else _deny
    type(hooked).on_get = falcon.before(hook)(type(hooked).on_get)  # type: ignore[attr-defined]
    app.add_route("/hooked", hooked)
    app.add_middleware(StatusMiddleware())

    if asgi:

        async def mapped_async(req: Any, resp: Any, ex: Exception, params: Any) -> None:
            _set_status(resp, falcon.HTTP_422, "mapped")

        async def fatal_async(req: Any, resp: Any, ex: Exception, params: Any) -> None:
            _set_status(resp, falcon.HTTP_502, "fatal")

        app.add_error_handler(MappedError, mapped_async)
        app.add_error_handler(FatalMappedError, fatal_async)
    else:

        def mapped(req: Any, resp: Any, ex: Exception, params: Any) -> None:
            _set_status(resp, falcon.HTTP_422, "mapped")

        def fatal(req: Any, resp: Any, ex: Exception, params: Any) -> None:
            _set_status(resp, falcon.HTTP_502, "fatal")

        app.add_error_handler(MappedError, mapped)
        app.add_error_handler(FatalMappedError, fatal)

    return app


def build_app(asgi: bool = False) -> Any:
    """A new app (WSGI or ASGI) with every route."""
    if asgi:
        return add_routes(falcon.asgi.App(), asgi=True)

    return add_routes(falcon.App(), asgi=False)
