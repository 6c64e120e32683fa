"""The only global state of the package.

One `Telemetry` object per process tree, built once under one lock by
`configure_once()`. Nothing else in the package keeps mutable module-level
state; tests call `reset_for_tests()` between cases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._telemetry import Telemetry

__all__ = ["configure_once", "current", "is_configured", "reset_for_tests"]

_T = TypeVar("_T")

# An RLock, so that something logged while the pipeline is being built (a
# warning about a setting, say) can reach get_logger() without deadlocking.
# It is taken once per init_telemetry() call, never on the request path.
_lock = threading.RLock()
_telemetry: Telemetry | None = None
_reset_hooks: list[Callable[[], None]] = []


def current() -> Telemetry | None:
    """The configured Telemetry, or None before `init_telemetry()`."""
    return _telemetry


def is_configured() -> bool:
    return _telemetry is not None


def configure_once(build: Callable[[], Telemetry]) -> tuple[Telemetry, bool]:
    """Build the Telemetry on the first call; later calls return it.

    Returns the object and whether this call built it.
    """
    global _telemetry

    existing = _telemetry
    if existing is not None:
        return existing, False
    with _lock:
        if _telemetry is not None:
            return _telemetry, False
        _telemetry = build()

        return _telemetry, True


def on_reset(hook: Callable[[], None]) -> None:
    """Register an undo step for `reset_for_tests()` (module patches, say)."""
    _reset_hooks.append(hook)


def reset_for_tests(timeout_seconds: float = 2.0) -> None:
    """Shut the pipeline down and forget it.

    OpenTelemetry's global providers stay set, so the next init finds them
    (and warns that it adds its processors to them):
    `showmax_otel.testing.reset_telemetry()` clears those as well.
    """
    global _telemetry

    with _lock:
        telemetry, _telemetry = _telemetry, None
        if telemetry is not None:
            telemetry.shutdown(timeout_seconds)
        while _reset_hooks:
            _reset_hooks.pop()()
