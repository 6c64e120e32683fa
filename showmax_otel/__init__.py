"""showmax-otel: one call gives a Falcon service a non-blocking OpenTelemetry
pipeline, safe under gevent, uWSGI and gunicorn.

Importing this package starts no thread, sets no provider and imports no
ssl, requests, urllib3 or grpc; `init_telemetry()` does the work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Telemetry",
    "context_bound",
    "get_logger",
    "init_telemetry",
    "instrument_app",
    "shutdown_telemetry",
    "spawn",
]

if TYPE_CHECKING:
    from ._context import context_bound, spawn
    from ._logging import get_logger
    from ._telemetry import Telemetry, init_telemetry, shutdown_telemetry
    from .falcon import instrument_app

_LAZY = {
    "Telemetry": "._telemetry",
    "init_telemetry": "._telemetry",
    "shutdown_telemetry": "._telemetry",
    "get_logger": "._logging",
    "instrument_app": ".falcon",
    "spawn": "._context",
    "context_bound": "._context",
}


def __getattr__(name: str) -> Any:
    # The public names are loaded on first use, so that `import showmax_otel`
    # stays cheap in processes (a uWSGI master, a CLI) that may never use them.
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'showmax_otel' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value

    return value


def __dir__() -> list[str]:
    return sorted(__all__)
