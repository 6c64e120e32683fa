"""A well set-up service for `showmax-otel doctor MODULE:APP`: one console
handler on the root logger and `init_telemetry()` at import."""

from __future__ import annotations

import logging

import falcon

import showmax_otel

logging.basicConfig(level=logging.INFO)
showmax_otel.init_telemetry()

app = falcon.App()
