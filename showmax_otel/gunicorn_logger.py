"""gunicorn's logger with the request's trace and span ids in access lines.

Use it with ``gunicorn --logger-class showmax_otel.gunicorn_logger.GunicornLogger``
(or ``logger_class = "showmax_otel.gunicorn_logger.GunicornLogger"`` in a
config file). This module imports gunicorn; nothing else in the package
does.
"""

from __future__ import annotations

import traceback
from typing import Any

from gunicorn.glogging import Logger

from .server_logs import span_ids_from_environ

__all__ = ["GunicornLogger"]

# gunicorn's default access format, as its `access_log_format` setting has it.
_GUNICORN_DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
_ID_SUFFIX = " trace_id=%(trace_id)s span_id=%(span_id)s"


class GunicornLogger(Logger):
    """gunicorn's logger, with the request's trace and span ids in access lines.

    The atoms ``trace_id`` and ``span_id`` are available to any
    ``--access-logformat``; with gunicorn's default format they are appended.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        access_format = cfg.access_log_format
        if access_format == _GUNICORN_DEFAULT_FORMAT:
            access_format += _ID_SUFFIX
        # Chosen once per configuration (setup runs again on reload), so
        # each request only formats.
        self._showmax_access_format = access_format

    def atoms(
        self, resp: Any, req: Any, environ: Any, request_time: Any
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        atoms["trace_id"], atoms["span_id"] = span_ids_from_environ(environ)

        return atoms

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        safe_atoms = self.atoms_wrapper_class(
            self.atoms(resp, req, environ, request_time)
        )
        try:
            self.access_log.info(self._showmax_access_format, safe_atoms)
        except Exception:  # noqa: BLE001 - gunicorn's own access() does the same
            self.error(traceback.format_exc())
