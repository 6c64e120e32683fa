"""Serve `zc_app` with the standard library's WSGI server, for the plain
`opentelemetry-instrument python` launch mode: `python -m zc_serve PORT`."""

from __future__ import annotations

import signal
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

from zc_app import app


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


def main() -> None:
    port = int(sys.argv[1])
    server = make_server("127.0.0.1", port, app, handler_class=QuietHandler)
    # SIGINT and SIGTERM both end the process normally, so atexit flushes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
