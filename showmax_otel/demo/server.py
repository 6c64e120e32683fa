"""Serve the demo app under gevent's WSGI server, with telemetry on.

Run by `showmax-otel demo` in a child process, as production runs a worker:
gevent patches first, then the app is imported, then it serves. The first
line on stdout is JSON with the port; on SIGTERM it stops serving, shuts
telemetry down within its bound and prints its stats as a last JSON line.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402 - gevent must patch before anything else loads
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402
from gevent.event import Event  # noqa: E402
from gevent.pywsgi import WSGIServer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m showmax_otel.demo.server")
    parser.add_argument("--endpoint", required=True, help="OTLP/HTTP base URL")
    parser.add_argument("--protocol", default="http/protobuf")
    args = parser.parse_args(argv)

    import logging

    import showmax_otel

    # The catalogue's own records are INFO; the root logger's default
    # level (WARNING) would keep them from any handler, the bridge included.
    logging.getLogger("catalogue").setLevel(logging.INFO)

    telemetry = showmax_otel.init_telemetry(
        service_name="catalogue-demo",
        endpoint=args.endpoint,
        protocol=args.protocol,
        resource_attributes={"deployment.environment.name": "demo"},
    )
    from .app import create_app

    server = WSGIServer(("127.0.0.1", 0), create_app(), log=None, error_log=None)
    server.start()
    print(json.dumps({"port": server.server_port}), flush=True)

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    stop.wait()
    server.stop(timeout=2)
    delivered = showmax_otel.shutdown_telemetry(timeout_seconds=5)
    print(json.dumps({"delivered": delivered, "stats": telemetry.stats()}), flush=True)

    return 0


if __name__ == "__main__":
    sys.exit(main())
