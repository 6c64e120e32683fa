"""uWSGI and gunicorn: where export workers may start, and exit hooks.

This module knows which pre-fork server, if any, runs the process. It never
imports `uwsgi` or `gunicorn` unless they are already loaded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["after_init", "may_start_worker"]


def may_start_worker() -> bool:
    """Whether this process may start export threads now."""
    return True


def after_init(telemetry: Any) -> None:
    """Hook the server's own worker-exit path, where there is one."""
    return None
