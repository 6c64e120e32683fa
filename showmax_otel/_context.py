"""Carry the caller's trace context into greenlets and pooled callables.

A greenlet starts with an empty `contextvars` context: gevent does not copy
the spawner's, unlike `asyncio.create_task`. Work spawned inside a request
would therefore start new traces, and its log records would carry no trace
id. `spawn()` starts a greenlet in a copy of the caller's context, so its
spans are children of the request's server span and its records carry the
request's ids; `context_bound()` does the same for any callable handed to a
pool, a queue or a thread.

Each call gets its own copy of the context: two overlapping requests, or two
greenlets of one request, never see each other's changes.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

if TYPE_CHECKING:
    import gevent

__all__ = ["context_bound", "spawn"]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def spawn(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> gevent.Greenlet:
    """Start `func(*args, **kwargs)` in a greenlet that keeps the caller's context.

    A drop-in for `gevent.spawn()`: it returns the started `gevent.Greenlet`.
    """
    import gevent

    greenlet = gevent.Greenlet(func, *args, **kwargs)
    # A greenlet that has not started yet takes the context it is given
    # (greenlet >= 1.0) and runs in it; nothing wraps `func`, so the
    # greenlet's repr and its exception reports stay those of `func`.
    greenlet.gr_context = contextvars.copy_context()
    greenlet.start()

    return greenlet


def context_bound(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """`func`, bound to the context current now; each call runs in a fresh copy.

    For pools and executors: `pool.spawn(context_bound(work), item)`,
    `executor.submit(context_bound(work), item)`.
    """
    captured = contextvars.copy_context()

    @functools.wraps(func)
    def run_in_captured_context(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        # A Context can be entered by one thread or greenlet at a time, so
        # every call runs in its own copy; changes made by one call stay in
        # that call.
        return captured.copy().run(func, *args, **kwargs)

    return run_in_captured_context
