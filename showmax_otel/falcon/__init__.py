"""Falcon: server spans, access logs and exception logs for every request.

Apps built after `init_telemetry()` are instrumented as they are built,
whatever class or import style they use; `instrument_app(app)` does the
same for an app that already exists. Both WSGI (`falcon.App`) and ASGI
(`falcon.asgi.App`) apps are supported, on Falcon 3.1 and 4.x.

`spawn()` and `context_bound()` carry a request's trace context into
greenlets and pooled work (see `showmax_otel._context`).
"""

from __future__ import annotations

from typing import Any

from .._context import context_bound, spawn
from ._instrument import instrument_app, instrument_falcon_class

__all__ = ["context_bound", "instrument_app", "spawn"]


def _instrument_falcon_class(telemetry: Any) -> None:
    """Instrument Falcon apps built from now on (called by `init_telemetry()`)."""
    instrument_falcon_class(telemetry)
