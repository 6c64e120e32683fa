"""The telemetry setups compared, the collector conditions and the servers.

Both the harness (which launches servers) and the app (which sets itself up
in the worker) read these facts, so that a mode is described once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONDITIONS", "MODES", "SERVERS", "Mode"]


@dataclass(frozen=True)
class Mode:
    """One way of getting (or not getting) telemetry out of the app."""

    name: str
    doc: str
    # How the server command is wrapped: "plain", or "instrument" for
    # `opentelemetry-instrument <server ...>`.
    launcher: str = "plain"
    # Which receiver port the endpoint points at: "http", "grpc" or None.
    protocol: str | None = "http"
    # Whether the server spans and the access/exception records come from
    # showmax_otel itself (so the app must not write its own).
    package_writes_records: bool = False
    emits_spans: bool = True
    # Collector conditions this mode runs under; None means all of them.
    conditions: tuple[str, ...] | None = None
    # Extra environment for the server process.
    env: tuple[tuple[str, str], ...] = ()


MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode(
            "bare",
            "no telemetry at all: the floor",
            protocol=None,
            emits_spans=False,
            # It never talks to a collector, so one measurement per round
            # serves as the floor for every condition.
            conditions=("fast",),
        ),
        Mode(
            "naive",
            "a logging handler that POSTs each record, synchronously, in the "
            "request path",
            emits_spans=False,
        ),
        Mode(
            "naive-dup",
            "the same handler added again on every get_logger() call",
            emits_spans=False,
            conditions=("fast",),
        ),
        Mode(
            "otel-http",
            "OpenTelemetry by hand: SDK providers, batch processors, "
            "OTLP/HTTP, the logging handler, Falcon instrumentation, defaults",
        ),
        Mode(
            "otel-grpc",
            "the same over OTLP/gRPC, without gRPC's gevent integration",
            protocol="grpc",
        ),
        Mode(
            "otel-instrument",
            "`opentelemetry-instrument` with opentelemetry-distro's defaults "
            "(OTLP/gRPC)",
            launcher="instrument",
            protocol="grpc",
            env=(
                ("OTEL_PYTHON_DISTRO", "distro"),
                ("OTEL_PYTHON_CONFIGURATOR", "configurator"),
            ),
        ),
        Mode(
            "showmax",
            "showmax_otel.init_telemetry() in the app, defaults",
            package_writes_records=True,
        ),
        Mode(
            "showmax-instrument",
            "showmax_otel as the distro of `opentelemetry-instrument`",
            launcher="instrument",
            package_writes_records=True,
            env=(
                ("OTEL_PYTHON_DISTRO", "showmax_otel"),
                ("OTEL_PYTHON_CONFIGURATOR", "showmax_otel"),
            ),
        ),
    )
}

# fast: answers at once; slow: 200 ms per export; down: nothing listens;
# blackhole: accepts, never answers.
CONDITIONS = ("fast", "slow", "down", "blackhole")

SERVERS = ("uwsgi", "gunicorn")
