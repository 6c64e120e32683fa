"""Build the OTLP exporters from `Settings`, as the specification reads.

Endpoint rules (OTLP exporter specification): a per-signal endpoint is used
verbatim; the generic one gets `/v1/traces` or `/v1/logs` appended for
HTTP; gRPC takes `host:port` with the scheme deciding TLS. The exporter
classes are imported here, inside the functions, so that importing the
package never imports requests, urllib3, ssl or grpc.
"""

from __future__ import annotations

import warnings
from typing import Any
from urllib.parse import urlsplit

from .options import ConfigurationWarning, Settings

__all__ = ["build_exporter", "preload", "resolve_endpoint"]

_DEFAULT_HTTP = "http://localhost:4318"
_DEFAULT_GRPC = "http://localhost:4317"
_SIGNAL_PATH = {"traces": "v1/traces", "logs": "v1/logs"}


def resolve_endpoint(settings: Settings, signal: str) -> str:
    """The URL that exports of `signal` go to."""
    protocol = settings.signal_protocol(signal)
    specific = settings.traces_endpoint if signal == "traces" else settings.logs_endpoint
    if specific:
        return _with_scheme(specific, settings, f"{signal}_endpoint")

    base = settings.endpoint or (
        _DEFAULT_GRPC if protocol == "grpc" else _DEFAULT_HTTP
    )
    base = _with_scheme(base, settings, "endpoint")
    if protocol == "grpc":
        return base

    return base.rstrip("/") + "/" + _SIGNAL_PATH[signal]


def _with_scheme(url: str, settings: Settings, option: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return url
    # "collector:4318" parses with "collector" as its scheme; so does
    # "localhost:4318". Neither is a URL the HTTP exporter can use.
    secure = settings.insecure is False or bool(settings.certificate_file)
    fixed = ("https://" if secure else "http://") + url
    warnings.warn(
        f"{option}={url!r} has no http:// or https:// scheme; using {fixed!r}",
        ConfigurationWarning,
        stacklevel=4,
    )
    return fixed


def preload(settings: Settings, signal: str) -> None:
    """Import the modules `build_exporter()` will need, without building."""
    kind = settings.traces_exporter if signal == "traces" else settings.logs_exporter
    if kind != "otlp":
        return
    if settings.signal_protocol(signal) == "grpc":
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
    else:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401


def build_exporter(settings: Settings, signal: str) -> Any:
    """A new exporter for `signal` ("traces" or "logs") per the settings."""
    kind = settings.traces_exporter if signal == "traces" else settings.logs_exporter
    if kind == "console":
        return _console_exporter(signal)
    if settings.signal_protocol(signal) == "grpc":
        return _grpc_exporter(settings, signal)

    return _http_exporter(settings, signal)


def _console_exporter(signal: str) -> Any:
    if signal == "traces":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

    return ConsoleLogRecordExporter()


def _http_exporter(settings: Settings, signal: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression

    compression = (
        Compression.Gzip if settings.compression == "gzip" else Compression.NoCompression
    )
    common: dict[str, Any] = {
        "endpoint": resolve_endpoint(settings, signal),
        "headers": settings.signal_headers(signal),
        "timeout": settings.timeout_seconds,
        "compression": compression,
        "certificate_file": settings.certificate_file,
        "client_certificate_file": settings.client_certificate_file,
        "client_key_file": settings.client_key_file,
    }
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(**common)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(**common)


def _grpc_exporter(settings: Settings, signal: str) -> Any:
    from grpc import Compression as GrpcCompression

    endpoint = resolve_endpoint(settings, signal)
    scheme = urlsplit(endpoint).scheme
    insecure = settings.insecure if settings.insecure is not None else scheme == "http"
    credentials = None
    if not insecure:
        credentials = _grpc_credentials(settings)
    common: dict[str, Any] = {
        "endpoint": endpoint,
        "insecure": insecure,
        "credentials": credentials,
        "headers": settings.signal_headers(signal),
        "timeout": settings.timeout_seconds,
        "compression": (
            GrpcCompression.Gzip
            if settings.compression == "gzip"
            else GrpcCompression.NoCompression
        ),
    }
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(**common)
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(**common)


def _grpc_credentials(settings: Settings) -> Any:
    import grpc

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as file:
            return file.read()

    return grpc.ssl_channel_credentials(
        root_certificates=read(settings.certificate_file),
        private_key=read(settings.client_key_file),
        certificate_chain=read(settings.client_certificate_file),
    )
