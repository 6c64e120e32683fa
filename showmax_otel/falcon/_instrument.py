"""Turning Falcon apps into instrumented ones, whenever and however built.

The upstream instrumentation replaces the `falcon.App` name with a
subclass. That misses apps built before it ran, apps built from a class
imported earlier (`from falcon import App`), and it breaks the generic
subscripts of `falcon.testing` on Falcon 4.4. Here the app *instance* is
instrumented instead: its class is swapped for a subclass of its own class
that adds the request wrapper (`__slots__ = ()`, so the layout stays the
same and the swap is allowed), and one middleware is added. Apps built
after `init_telemetry()` get this from a wrapper around `falcon.App.__init__`
(the class in `falcon.app`, which every app class, ASGI included, derives
from), so the import style does not matter.

Limitation: after instrumentation `type(app)` is the generated subclass
(same name, module and qualified name); code that tests `type(app) is
falcon.App` instead of `isinstance()` sees a different class. An app class
whose `__init__` never calls `falcon.App.__init__` is not instrumented
automatically; `instrument_app()` still works on its instances.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, TypeVar

from .. import _state
from .._redaction import Redactor
from ._asgi import ASGIInstrumentation
from ._middleware import RouteMiddleware
from ._observer import (
    RequestObserver,
    drop_falcon_duplicate,
    mark_logged,
    report_internal_error,
)
from ._wsgi import WSGIInstrumentation

__all__ = ["instrument_app", "instrument_falcon_class"]

_App = TypeVar("_App")

# Class attribute of an instrumented app's class; its presence means "done".
_OBSERVER = "_showmax_otel_observer"
# Set on our wrapper of `falcon.App.__init__`.
_WRAPPED = "_showmax_otel_wrapped"


def instrument_app(app: _App) -> _App:
    """Instrument an existing Falcon app (WSGI or ASGI) and return it.

    Use it for an app built before `init_telemetry()` (in a module imported
    before a post-fork hook, say). Calling it again, or on an app built
    after init, changes nothing. An app that the upstream
    `opentelemetry-instrumentation-falcon` already instrumented keeps one
    server span per request: the upstream wrapper is switched off for it.

    Raises `TypeError` when `app` is not a Falcon app, or when its class
    cannot be extended (the message says why); it never leaves an app
    silently without spans.
    """
    cls: Any = type(app)
    if getattr(cls, _OBSERVER, None) is not None:
        return app

    from falcon.app import App

    if not isinstance(app, App):
        raise TypeError(
            "instrument_app() takes a falcon.App or falcon.asgi.App instance; "
            f"got {cls.__module__}.{cls.__qualname__}"
        )

    observer = _new_observer()
    mixin = ASGIInstrumentation if getattr(cls, "_ASGI", False) else WSGIInstrumentation
    try:
        instrumented = type(cls)(
            cls.__name__,
            (mixin, cls),
            {
                "__slots__": (),
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                _OBSERVER: observer,
            },
        )
        # The upstream FalconAPI class would open a second server span; the
        # flag is its own switch for "pass through", which its uninstrument()
        # uses too.
        if getattr(app, "_is_instrumented_by_opentelemetry", False):
            app._is_instrumented_by_opentelemetry = False  # type: ignore[attr-defined]
        app.__class__ = instrumented
    except TypeError as error:
        raise TypeError(
            f"instrument_app(): cannot extend {cls.__module__}.{cls.__qualname__} "
            f"({error}); wrap the app yourself with "
            "opentelemetry.instrumentation.wsgi.OpenTelemetryMiddleware"
        ) from None
    app.add_middleware(RouteMiddleware(observer))
    _ensure_filters()

    return app


def instrument_falcon_class(telemetry: Any) -> None:
    """Instrument every Falcon app built from now on; reports, never raises."""
    try:
        from falcon.app import App
    except ImportError:
        return
    try:
        _wrap_init(App)
        _ensure_filters()
    except Exception as error:  # noqa: BLE001 - init must not fail over Falcon
        telemetry.report_internal_error("instrumenting Falcon", error)


def _wrap_init(app_class: type) -> None:
    original = app_class.__dict__["__init__"]
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        try:
            instrument_app(self)
        except Exception as error:  # noqa: BLE001 - the app must still build
            report_internal_error("instrumenting a new Falcon app", error)

    setattr(__init__, _WRAPPED, True)
    app_class.__init__ = __init__  # type: ignore[misc]

    def unwrap() -> None:
        app_class.__init__ = original  # type: ignore[misc]

    _state.on_reset(unwrap)


def _new_observer() -> RequestObserver:
    telemetry = _state.current()
    if telemetry is not None:
        return RequestObserver(telemetry.settings, telemetry.redactor)

    # Before init_telemetry(): the options as the environment sets them.
    # Spans go through the global tracer provider, which init sets later.
    from ..options import load_settings

    settings = load_settings({})
    return RequestObserver(
        settings, Redactor(settings.redacted_params, settings.redacted_headers)
    )


def _ensure_filters() -> None:
    """One exception, one ERROR record: whoever logs it first stands.

    The bridge remembers exceptions the application logged itself, and
    Falcon's own log line for an exception we report is dropped.
    """
    _add_filter(logging.getLogger("falcon"), drop_falcon_duplicate)
    telemetry = _state.current()
    handler = getattr(getattr(telemetry, "bridge", None), "handler", None)
    if handler is not None:
        _add_filter(handler, mark_logged)


def _add_filter(filterer: logging.Filterer, check: Any) -> None:
    if check in filterer.filters:
        return
    filterer.addFilter(check)

    def remove() -> None:
        filterer.removeFilter(check)

    _state.on_reset(remove)
