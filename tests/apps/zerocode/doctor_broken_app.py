"""A deliberately broken service for `showmax-otel doctor MODULE:APP`.

Importing it leaves an HTTPHandler on the root logger, two handlers writing
to stderr on the `orders` logger, and no `init_telemetry()` call.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

import falcon

logging.getLogger().addHandler(
    logging.handlers.HTTPHandler("127.0.0.1:9", "/logs", method="POST")
)
orders = logging.getLogger("orders")
orders.addHandler(logging.StreamHandler(sys.stderr))
orders.addHandler(logging.StreamHandler(sys.stderr))

app = falcon.App()
