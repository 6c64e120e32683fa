"""Build the OTLP exporters from `Settings`, and send what they encode safely.

Configuration follows the OTLP exporter specification:

- a per-signal endpoint (`traces_endpoint`, `logs_endpoint`) is used
  verbatim; the generic `endpoint` gets `/v1/traces` or `/v1/logs` appended
  for HTTP, and is used as `host:port` for gRPC;
- `https://` means TLS and `http://` means plaintext, whatever `insecure`
  says; an endpoint without a scheme is valid for gRPC (TLS unless
  `insecure` is true) and is fixed up, with a warning, for HTTP;
- headers are `key=value` pairs, URL-decoded, generic or per signal.

`plan_export()` resolves all of it once, into an `ExportPlan` that lists
what is contradictory or invalid; `warn_about_settings()` turns each of
those into one `ConfigurationWarning` at init. Nothing here ever prints a
header value, nor the password of an endpoint URL.

The exporters are the SDK's (for their transport, TLS, compression and
retries), wrapped in an `OTLPSender` that encodes each batch once, with
the package's own encoder (`_encoding`), and sends those very bytes:

- every request stays under `max_request_bytes` (the collector's gRPC
  receiver refuses messages over 4 MiB by default): a batch that encodes
  larger is split in halves until each part fits, and a single record that
  alone is too large has its longest strings cut, with a marker, or is
  dropped and counted when cutting cannot make it fit;
- spans lose secrets before they leave, whichever instrumentation made
  them: secret query values and URL passwords in URL attributes and
  exception texts, and the values of captured secret headers;
- with a spool configured, a request the collector did not take is written
  to disk and sent again, oldest first, once it answers; each attempt is a
  single one then, and after a failure fresh batches go straight to disk
  until a probe succeeds, so an outage costs the export thread
  milliseconds and the queue nothing;
- what became of each batch comes back as an `ExportOutcome`, so that the
  queue counts every record as exported, spooled or dropped with its
  reason;
- the SDK exporters' own per-batch error lines are kept out of the
  application's log output while we export: the reason becomes the
  outcome's `error`, which the queue reports at most once per interval.

The exporter classes are imported inside the functions, so that importing
the package never imports requests, urllib3, ssl or grpc.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ._redaction import REDACTED, Redactor
from .options import ConfigurationWarning, Settings

__all__ = [
    "OVERSIZED",
    "UNENCODABLE",
    "ExportOutcome",
    "ExportPlan",
    "OTLPSender",
    "build_exporter",
    "configuration_problems",
    "plan_export",
    "preload",
    "redact_url",
    "resolve_endpoint",
    "warn_about_settings",
]

_DEFAULT_HTTP = "http://localhost:4318"
_DEFAULT_GRPC = "http://localhost:4317"
_DEFAULT_TIMEOUT_SECONDS = 10.0
_SIGNAL_PATH = {"traces": "v1/traces", "logs": "v1/logs"}
_STANDARD_PORTS = {"4317": "grpc", "4318": "http/protobuf"}

# Drop reasons added to the queue's own (see _pipeline).
OVERSIZED = "oversized"
UNENCODABLE = "unencodable"
_EXPORT_FAILED = "export_failed"

# The spool's probes: a replay of the oldest spooled request, with a short
# timeout; an attempt slower than _SLOW_ATTEMPT_SECONDS makes the next one
# wait longer, up to _LONGEST_PROBE_INTERVAL_SECONDS.
_PROBE_TIMEOUT_SECONDS = 2.0
_SLOW_ATTEMPT_SECONDS = 0.5
_LONGEST_PROBE_INTERVAL_SECONDS = 30.0

_TRUNCATION_MARK = "...[truncated by showmax_otel]"
# Strings shorter than this are never cut: they are not what makes a record
# too large, and cutting ids, names or keys would make it useless.
_SHORTEST_CUT = 256
# Room left for the marker and for the varint lengths that shrink with it.
_CUT_MARGIN_BYTES = 1024

# RFC 9110 token: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")

# Loggers of the SDK exporters and their HTTP client, whose per-batch error
# lines are kept out of the application's output while we export.
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


# -- resolving the configuration ------------------------------------------------


@dataclass(frozen=True)
class ExportPlan:
    """How one signal is exported, as resolved from the settings.

    `headers` holds secrets and is left out of `repr()`; `header_names`
    is what may be shown. `problems` are the sentences `warn_about_settings`
    emits; `unusable` is set when the plan cannot export at all (a TLS file
    that cannot be read), and says why.
    """

    signal: str
    kind: str
    protocol: str
    endpoint: str
    tls: bool
    timeout_seconds: float
    compression: str
    certificate_file: str | None
    client_certificate_file: str | None
    client_key_file: str | None
    headers: dict[str, str] = field(repr=False)
    problems: tuple[str, ...] = ()
    unusable: str | None = None

    @property
    def header_names(self) -> list[str]:
        return sorted(self.headers)


def _env_name(option: str) -> str:
    from .options import Settings as _Settings

    spec = _Settings.__dataclass_fields__.get(option)
    env = spec.metadata.get("env") if spec is not None else None

    return f"{option} ({env})" if env else option


def redact_url(url: str) -> str:
    """`url` as it may be printed: no password, no query values.

    Works on what people type as well as on URLs: `user:pw@host:4318`
    has no scheme, and urlsplit() would take `user` for one.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:REDACTED@{host}" if colon else f"{user}@{host}"
    path = path.partition("#")[0]
    path, question, _ = path.partition("?")
    if question:
        path += "?REDACTED"

    return f"{scheme}{separator}{authority}{slash}{path}"


def _split_scheme(url: str) -> tuple[str, str]:
    """("http" | "https" | other scheme | "", rest); case-insensitive."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return "", url

    return scheme.lower(), rest


def _check_url(url: str, option: str, problems: list[str]) -> None:
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as error:
        problems.append(
            f"{_env_name(option)}={shown!r} is not a valid URL ({error}); "
            "every export to it will fail"
        )
        return
    if not parts.hostname:
        problems.append(
            f"{_env_name(option)}={shown!r} has no host name; every export "
            "to it will fail"
        )


def _normalise(
    raw: str, protocol: str, settings: Settings, option: str, problems: list[str]
) -> str:
    """A URL with an http:// or https:// scheme (or a gRPC unix: target)."""
    if protocol == "grpc" and raw.startswith("unix:"):
        return raw
    scheme, rest = _split_scheme(raw)
    shown = redact_url(raw)
    if scheme in ("http", "https"):
        url = scheme + "://" + rest
        _check_url(url, option, problems)
        if protocol == "grpc" and settings.insecure is not None:
            if settings.insecure and scheme == "https":
                problems.append(
                    f"{_env_name('insecure')}=true is ignored: "
                    f"{_env_name(option)}={shown!r} asks for TLS with https://"
                )
            elif not settings.insecure and scheme == "http":
                problems.append(
                    f"{_env_name('insecure')}=false is ignored: "
                    f"{_env_name(option)}={shown!r} asks for plaintext with "
                    "http://; use https:// for TLS"
                )
        return url

    if protocol == "grpc":
        # The specification's rule for an endpoint without a scheme: TLS
        # unless insecure is true.
        secure = not settings.insecure
    else:
        secure = settings.insecure is False or bool(settings.certificate_file)
    fixed = ("https://" if secure else "http://") + rest
    if scheme:
        problems.append(
            f"{_env_name(option)}={shown!r} has the scheme {scheme!r}; "
            f"accepted: http:// or https://; using {redact_url(fixed)!r}"
        )
    elif protocol != "grpc":
        problems.append(
            f"{_env_name(option)}={shown!r} has no http:// or https:// scheme, "
            f"which OTLP/HTTP needs; using {redact_url(fixed)!r}"
        )
    _check_url(fixed, option, problems)

    return fixed


def plan_export(settings: Settings, signal: str) -> ExportPlan:
    """Resolve endpoint, TLS, headers and timeout for `signal`."""
    kind = settings.traces_exporter if signal == "traces" else settings.logs_exporter
    protocol = settings.signal_protocol(signal)
    problems: list[str] = []

    specific_option = f"{signal}_endpoint"
    specific = getattr(settings, specific_option)
    if specific:
        endpoint = _normalise(specific, protocol, settings, specific_option, problems)
    elif settings.endpoint:
        endpoint = _normalise(
            settings.endpoint, protocol, settings, "endpoint", problems
        )
        if protocol != "grpc":
            path = urlsplit(endpoint).path.rstrip("/")
            for other in _SIGNAL_PATH.values():
                if path.endswith("/" + other):
                    problems.append(
                        f"{_env_name('endpoint')}={redact_url(settings.endpoint)!r} "
                        f"already ends in /{other}, and /v1/traces or /v1/logs is "
                        "appended to it; set "
                        f"{_env_name('traces_endpoint')} and "
                        f"{_env_name('logs_endpoint')} for URLs used as given"
                    )
            endpoint = endpoint.rstrip("/") + "/" + _SIGNAL_PATH[signal]
    else:
        endpoint = (
            _DEFAULT_GRPC
            if protocol == "grpc"
            else (_DEFAULT_HTTP + "/" + _SIGNAL_PATH[signal])
        )

    tls = endpoint.startswith("https://")
    given = specific or settings.endpoint
    if (
        protocol != "grpc"
        and settings.insecure is not None
        and _split_scheme(given or _DEFAULT_HTTP)[0] in ("http", "https")
    ):
        problems.append(
            f"{_env_name('insecure')} is ignored for OTLP/HTTP, whose endpoint "
            "scheme (http:// or https://) decides TLS"
        )
    if given:
        _check_port_matches_protocol(
            given, protocol, specific_option if specific else "endpoint", problems
        )

    unusable = _check_tls_files(settings, tls, signal, problems)
    headers_option = (
        f"{signal}_headers"
        if getattr(settings, f"{signal}_headers") is not None
        else "headers"
    )
    headers = _clean_headers(
        settings.signal_headers(signal), protocol, headers_option, problems
    )

    timeout = settings.timeout_seconds
    if timeout <= 0:
        problems.append(
            f"{_env_name('timeout_seconds')}=0 would fail every export at once; "
            f"using {_DEFAULT_TIMEOUT_SECONDS:g} seconds"
        )
        timeout = _DEFAULT_TIMEOUT_SECONDS

    return ExportPlan(
        signal=signal,
        kind=kind,
        protocol=protocol,
        endpoint=endpoint,
        tls=tls,
        timeout_seconds=timeout,
        compression=settings.compression,
        certificate_file=settings.certificate_file if tls else None,
        client_certificate_file=settings.client_certificate_file if tls else None,
        client_key_file=settings.client_key_file if tls else None,
        headers=headers,
        problems=tuple(problems),
        unusable=unusable,
    )


def _check_port_matches_protocol(
    endpoint: str, protocol: str, option: str, problems: list[str]
) -> None:
    if "://" not in endpoint:
        endpoint = "//" + endpoint  # so that urlsplit sees host:port
    try:
        port = urlsplit(endpoint).port
    except ValueError:
        return  # reported by _check_url
    expected = _STANDARD_PORTS.get(str(port))
    if expected is not None and expected != protocol:
        problems.append(
            f"{_env_name(option)}={redact_url(endpoint)!r} uses port {port}, "
            f"the standard {expected} port, but the protocol is {protocol}; "
            f"set {_env_name('protocol')} to match the collector"
        )


def _check_tls_files(
    settings: Settings, tls: bool, signal: str, problems: list[str]
) -> str | None:
    """Problems with the TLS files; returns why exporting is impossible, if it is."""
    files = {
        "certificate_file": settings.certificate_file,
        "client_certificate_file": settings.client_certificate_file,
        "client_key_file": settings.client_key_file,
    }
    given = {name: path for name, path in files.items() if path}
    if not given:
        return None
    if not tls:
        problems.append(
            "TLS files are ignored with a plaintext (http://) endpoint: "
            + ", ".join(_env_name(name) for name in given)
            + "; use an https:// endpoint for TLS"
        )
        return None

    has_cert = "client_certificate_file" in given
    has_key = "client_key_file" in given
    if has_cert != has_key:
        missing = "client_key_file" if has_cert else "client_certificate_file"
        problems.append(
            f"mutual TLS needs both a client certificate and its key; "
            f"{_env_name(missing)} is not set"
        )
    unusable = None
    for name, path in given.items():
        try:
            with open(path, "rb") as file:
                file.read(1)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            problems.append(
                f"{_env_name(name)}={path!r} cannot be read ({reason}); "
                f"{signal} exports will fail until it can"
            )
            unusable = f"{_env_name(name)}={path!r} cannot be read ({reason})"

    return unusable


def _clean_headers(
    headers: dict[str, str], protocol: str, option: str, problems: list[str]
) -> dict[str, str]:
    """Headers the transport will accept; the others are left out, by name."""
    cleaned: dict[str, str] = {}
    for name, value in headers.items():
        reason = None
        if not _HEADER_NAME.match(name):
            reason = "its name is not a valid header name"
        elif protocol == "grpc" and name.lower().startswith("grpc-"):
            reason = "gRPC reserves names starting with grpc-"
        elif protocol == "grpc" and not all(" " <= c <= "~" for c in value):
            reason = "gRPC accepts only printable ASCII in header values"
        elif any(c in value for c in "\r\n\0"):
            reason = "its value contains a line break or NUL"
        else:
            try:
                value.encode("latin-1")
            except UnicodeEncodeError:
                reason = "its value has characters HTTP headers cannot carry"
        if reason is not None:
            # The value is never shown: headers carry tokens.
            problems.append(
                f"the header {name!r} of {_env_name(option)} is left out: {reason}"
            )
            continue
        # gRPC metadata keys must be lowercase; HTTP does not care.
        cleaned[name.lower() if protocol == "grpc" else name] = value

    return cleaned


def resolve_endpoint(settings: Settings, signal: str) -> str:
    """The URL that exports of `signal` go to."""
    return plan_export(settings, signal).endpoint


def configuration_problems(settings: Settings) -> list[str]:
    """Every contradictory or invalid export setting, one sentence each."""
    problems: list[str] = []
    for signal in ("traces", "logs"):
        plan = plan_export(settings, signal)
        if plan.kind != "otlp":
            continue
        for problem in plan.problems:
            if problem not in problems:
                problems.append(problem)
    problems.extend(_spool_problems(settings))

    return problems


def _spool_problems(settings: Settings) -> list[str]:
    directory = settings.spool_directory
    if not directory:
        return []
    parent = directory
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent.rstrip(os.sep))
    if parent and not os.path.isdir(parent):
        return [
            f"{_env_name('spool_directory')}={directory!r} is not a directory; "
            "failed exports will be dropped, not spooled"
        ]
    if parent and not os.access(parent, os.W_OK | os.X_OK):
        return [
            f"{_env_name('spool_directory')}={directory!r} is not writable; "
            "failed exports will be dropped, not spooled"
        ]

    return []


def warn_about_settings(settings: Settings) -> None:
    """One `ConfigurationWarning` per problem found, at init."""
    for problem in configuration_problems(settings):
        # The caller's caller chain: _build, configure_once's lambda,
        # configure_once, init_telemetry, then the application.
        warnings.warn(problem, ConfigurationWarning, stacklevel=6)


# -- building ---------------------------------------------------------------


def preload(settings: Settings, signal: str) -> None:
    """Import the modules `build_exporter()` will need, without building."""
    kind = settings.traces_exporter if signal == "traces" else settings.logs_exporter
    if kind != "otlp":
        return
    if settings.signal_protocol(signal) == "grpc":
        import opentelemetry.exporter.otlp.proto.grpc._log_exporter
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter
    else:
        import opentelemetry.exporter.otlp.proto.http._log_exporter
        import opentelemetry.exporter.otlp.proto.http.trace_exporter

        # The HTTP exporters import requests (with ssl, urllib3 and some
        # 130 modules) only when built. On the export thread that import
        # can be under way when a pre-fork server forks, and the worker's
        # copy of requests stays half-initialised for good.
        import requests  # noqa: F401
    # The request messages, for the slow paths (cutting, scrubbing, replay).
    import opentelemetry.proto.collector.logs.v1.logs_service_pb2
    import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401

    from . import _encoding  # noqa: F401


def build_exporter(settings: Settings, signal: str) -> Any:
    """A new exporter for `signal` ("traces" or "logs") per the settings."""
    plan = plan_export(settings, signal)
    if plan.kind == "console":
        return _console_exporter(signal)
    if plan.unusable:
        return _UnusableExporter(plan.unusable)
    grpc = plan.protocol == "grpc"
    exporter = _grpc_exporter(plan) if grpc else _http_exporter(plan)

    spool = None
    directory = settings.spool_directory
    if directory:
        from ._spool import Spool

        spool = Spool(
            directory,
            signal,
            max_bytes=settings.spool_max_bytes,
            max_age_seconds=settings.spool_max_age_seconds,
        )
    prefix = "bsp" if signal == "traces" else "blrp"
    probe_interval = getattr(settings, f"{prefix}_schedule_delay_millis") / 1000

    return OTLPSender(
        exporter,
        signal=signal,
        protocol=plan.protocol,
        max_request_bytes=settings.max_request_bytes,
        spool=spool,
        probe_interval_seconds=probe_interval,
        timeout_seconds=plan.timeout_seconds,
        batch_timeout_seconds=(
            getattr(settings, f"{prefix}_export_timeout_millis") / 1000 or None
        ),
        redactor=Redactor(settings.redacted_params, settings.redacted_headers),
    )


def _console_exporter(signal: str) -> Any:
    if signal == "traces":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter

    return _ReadableLogRecords(ConsoleLogRecordExporter())


class _ReadableLogRecords:
    """An SDK log exporter, given the read-only records it is written for.

    The queue holds the `ReadWriteLogRecord`s the SDK logger emitted (the
    OTLP encoder reads them as they are); the SDK's own processors hand
    their exporters `ReadableLogRecord` copies, which the SDK's console
    exporter needs for `to_json()`.
    """

    def __init__(self, exporter: Any) -> None:
        self._exporter = exporter

    def export(self, batch: Sequence[Any]) -> Any:
        return self._exporter.export([_readable(record) for record in batch])

    def shutdown(self) -> Any:
        return self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> Any:
        return self._exporter.force_flush(timeout_millis)


def _readable(record: Any) -> Any:
    try:
        from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
    except ImportError:
        # An SDK from before the split: its records are what exporters take.
        return record
    if not isinstance(record, ReadWriteLogRecord):
        return record
    from opentelemetry.sdk.resources import Resource

    return ReadableLogRecord(
        log_record=record.log_record,
        resource=record.resource if record.resource is not None else Resource({}),
        instrumentation_scope=record.instrumentation_scope,
        limits=record.limits,
    )


def _http_exporter(plan: ExportPlan) -> Any:
    from opentelemetry.exporter.otlp.proto.http import Compression

    compression = (
        Compression.Gzip if plan.compression == "gzip" else Compression.NoCompression
    )
    common: dict[str, Any] = {
        "endpoint": plan.endpoint,
        "headers": plan.headers,
        "timeout": plan.timeout_seconds,
        "compression": compression,
        "certificate_file": plan.certificate_file,
        "client_certificate_file": plan.client_certificate_file,
        "client_key_file": plan.client_key_file,
        "session": _requests_session(),
    }
    if plan.signal == "traces":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(**common)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

    return OTLPLogExporter(**common)


def _requests_session() -> Any:
    """A requests Session in which the configured CA file is the one used.

    requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE, which many images
    set to the system bundle, override a Session's own `verify`: the
    exporter would then reject a collector signed by the CA that
    `certificate_file` names. Proxy variables still apply.
    """
    import requests

    class Session(requests.Session):
        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> dict[str, Any]:
            merged: dict[str, Any] = super().merge_environment_settings(
                url, proxies, stream, verify, cert
            )
            if isinstance(self.verify, str):
                merged["verify"] = self.verify
            return merged

    return Session()


def _grpc_exporter(plan: ExportPlan) -> Any:
    from grpc import Compression as GrpcCompression

    credentials = None
    if plan.tls:
        credentials = _grpc_credentials(plan)
    common: dict[str, Any] = {
        "endpoint": plan.endpoint,
        "insecure": not plan.tls,
        "credentials": credentials,
        "headers": plan.headers,
        "timeout": plan.timeout_seconds,
        "compression": (
            GrpcCompression.Gzip
            if plan.compression == "gzip"
            else GrpcCompression.NoCompression
        ),
    }

    return _grpc_exporter_class(plan.signal)(**common)


def _grpc_exporter_class(signal: str) -> Any:
    """The SDK's gRPC exporter, taught to send a request already serialized.

    The mixin turns a batch into a request with `_translate_data()` and
    sends it through `self._client.Export` with retries and reconnection.
    Here the stub takes bytes as they are (no serializer), and a batch is
    encoded by our encoder: the sender encodes once, and what it measured,
    cut or spooled is what goes on the wire.

    Limitation: these are private hooks of opentelemetry-exporter-otlp-proto-
    grpc (`_initialize_channel_and_stub`, `_client`, `_translate_data`,
    `_export`); the gRPC tests of this package pin them against a real
    receiver, so an SDK release that renames them fails there first.
    """
    from . import _encoding

    base: Any
    encode: Callable[[Sequence[Any]], bytes]
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as base,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse as response_type,
        )

        method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        encode = _encoding.encode_spans
    else:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter as base,
        )
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceResponse as response_type,
        )

        method = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        encode = _encoding.encode_logs

    class _BytesStub:
        def __init__(self, channel: Any) -> None:
            self.Export = channel.unary_unary(
                method, response_deserializer=response_type.FromString
            )

    class BytesExporter(base):
        def _initialize_channel_and_stub(self) -> None:
            super()._initialize_channel_and_stub()
            self._client = _BytesStub(self._channel)

        def _translate_data(self, data: Any) -> bytes:
            if isinstance(data, bytes):
                return data
            return encode(data)

        def _count_data(self, data: Any) -> int:
            # Only the SDK's optional self-metrics use this count.
            return 0 if isinstance(data, bytes) else len(data)

    return BytesExporter


def _grpc_credentials(plan: ExportPlan) -> Any:
    import grpc

    def read(path: str | None) -> bytes | None:
        if not path:
            return None
        with open(path, "rb") as file:
            return file.read()

    key = read(plan.client_key_file)
    chain = read(plan.client_certificate_file)
    if key is None or chain is None:
        # gRPC refuses one without the other; the init warning said so.
        key = chain = None

    return grpc.ssl_channel_credentials(
        root_certificates=read(plan.certificate_file),
        private_key=key,
        certificate_chain=chain,
    )


# -- sending ------------------------------------------------------------------


class ExportOutcome:
    """What became of one batch (and of any spooled requests sent with it).

    `exported` records reached the collector; `replayed` spooled records
    reached it; `spooled` records were written to the spool; `dropped`
    counts the lost ones by reason; `truncated` records were cut to fit;
    `failed_attempts` counts requests the collector did not take, and
    `error` is the last reason given.
    """

    __slots__ = (
        "dropped",
        "error",
        "exported",
        "failed_attempts",
        "replayed",
        "spooled",
        "truncated",
    )

    def __init__(self) -> None:
        self.exported = 0
        self.replayed = 0
        self.spooled = 0
        self.truncated = 0
        self.failed_attempts = 0
        self.dropped: dict[str, int] = {}
        self.error: str | None = None

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    @property
    def name(self) -> str:
        """SUCCESS or FAILURE, as the SDK names its export results."""
        lost = self.failed_attempts or self.spooled or self.dropped
        return "FAILURE" if lost else "SUCCESS"

    def __repr__(self) -> str:
        return (
            f"ExportOutcome(exported={self.exported}, replayed={self.replayed}, "
            f"spooled={self.spooled}, dropped={self.dropped}, "
            f"failed_attempts={self.failed_attempts})"
        )


class _ExporterLogCatcher(logging.Filter):
    """Holds back the SDK exporters' log lines emitted on the exporting thread.

    The sender reports failures itself, with counts and at most once per
    interval; the SDK would log every failed batch into the application's
    log output. The last message is kept as the failure's reason.
    """

    def __init__(self) -> None:
        super().__init__()
        self.thread: int | None = None
        self.last_message: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread:
            return True
        if record.levelno >= logging.WARNING:
            try:
                self.last_message = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad record must not break export
                self.last_message = str(record.msg)
        return False

    def attach(self) -> None:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).addFilter(self)

    def detach(self) -> None:
        for name in _EXPORTER_LOGGERS:
            logging.getLogger(name).removeFilter(self)


class _UnusableExporter:
    """Stands in when the settings make exporting impossible; fails each batch."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def export(self, batch: Sequence[Any]) -> ExportOutcome:
        outcome = ExportOutcome()
        outcome.failed_attempts = 1
        outcome.drop(_EXPORT_FAILED, len(batch))
        outcome.error = self.reason
        return outcome

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True


class OTLPSender:
    """Wraps an SDK OTLP exporter: size limits, the spool, honest counts.

    Used by one export thread; `shutdown()` may come from another thread.
    """

    def __init__(
        self,
        exporter: Any,
        *,
        signal: str,
        protocol: str,
        max_request_bytes: int,
        spool: Any = None,
        probe_interval_seconds: float = 1.0,
        timeout_seconds: float = _DEFAULT_TIMEOUT_SECONDS,
        batch_timeout_seconds: float | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.exporter = exporter
        self.signal = signal
        self.spool = spool
        self._max_request_bytes = max_request_bytes
        self._base_probe_interval = max(probe_interval_seconds, 0.01)
        self._probe_interval_seconds = self._base_probe_interval
        self._timeout_seconds = timeout_seconds
        # OTEL_BSP_EXPORT_TIMEOUT / OTEL_BLRP_EXPORT_TIMEOUT: the whole
        # export of one batch (a batch split in several requests, retries
        # included), where OTEL_EXPORTER_OTLP_TIMEOUT bounds one request.
        self._batch_timeout_seconds = batch_timeout_seconds
        # With a spool, the spool is the retry: each request gets one
        # attempt, so that a collector that refuses connections costs
        # milliseconds, not the SDK's backoff of up to the whole timeout,
        # while the queue fills. Without one, the SDK's retries are the
        # only second chance, and are kept.
        self._single_attempt = spool is not None
        self._redactor = redactor or Redactor((), ())
        self._redact = self._redactor.text
        self._encode, self._decode = _codec(signal)
        self._secret_markers = (
            _SecretMarkers(self._redactor) if signal == "traces" else None
        )
        self._grpc = protocol == "grpc"
        self._healthy = True
        self._next_probe = 0.0
        self._catcher = _ExporterLogCatcher()
        self._catcher.attach()
        self._closed = False

    # -- the exporter interface ---------------------------------------------

    def export(self, batch: Sequence[Any]) -> ExportOutcome:
        outcome = ExportOutcome()
        self._catcher.thread = threading.get_ident()
        deadline = None
        if self._batch_timeout_seconds is not None:
            deadline = time.monotonic() + self._batch_timeout_seconds
        try:
            for payload, count in self._payloads(batch, outcome):
                if self.spool is not None and self._breaker_open():
                    # The collector failed a moment ago: the spool is
                    # quicker than another timeout, and loses nothing.
                    self._spool_payload(payload, count, outcome)
                    continue
                timeout = self._timeout_seconds
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._out_of_time(payload, count, outcome)
                        continue
                    timeout = min(timeout, remaining)
                self._deliver(payload, count, outcome, timeout)
        finally:
            self._export_ended()

        return outcome

    def _export_ended(self) -> None:
        self._catcher.thread = None
        if self._closed:
            self._catcher.detach()

    def _out_of_time(self, payload: bytes, count: int, outcome: ExportOutcome) -> None:
        """What is left of a batch whose export time limit ran out."""
        outcome.failed_attempts += 1
        outcome.error = (
            f"the export of one batch took its whole time limit "
            f"({self._batch_timeout_seconds:g} s)"
        )
        if self.spool is None:
            outcome.drop(_EXPORT_FAILED, count)
        else:
            self._spool_payload(payload, count, outcome)

    def on_idle(self, count: Callable[[ExportOutcome], None]) -> None:
        """Send spooled requests back, within a time budget.

        `count` gets what became of each spooled request as soon as it is
        known, so that `Telemetry.stats()` read during a long replay is
        behind by one request at most.
        """
        if self.spool is None or self._breaker_open():
            return
        self._catcher.thread = threading.get_ident()
        try:
            self._replay(count, budget_seconds=min(self._base_probe_interval, 1.0))
        finally:
            self._export_ended()

    def force_flush(self, timeout_millis: int = 0) -> bool:
        return True

    def shutdown(self) -> None:
        try:
            self.exporter.shutdown()
        finally:
            self._closed = True
            # An export still under way on the export thread (a shutdown
            # that ran out of time) ends after this, and the SDK logs on
            # its way out ("Shutdown in progress, aborting retry."): the
            # catcher stays until that export is over.
            if self._catcher.thread is None:
                self._catcher.detach()

    # -- requests that fit ---------------------------------------------------

    def _payloads(
        self, batch: Sequence[Any], outcome: ExportOutcome
    ) -> Iterator[tuple[bytes, int]]:
        """Serialized requests of at most `max_request_bytes`, with record counts.

        The common case costs one encoding and a `len()`. A batch that
        encodes larger is split in halves, each encoded again, until every
        part fits or holds one record, which is then cut or dropped.
        """
        limit = self._max_request_bytes
        pending: list[Sequence[Any]] = [batch]
        while pending:
            part = pending.pop()
            if not part:
                continue
            try:
                payload = self._encode(part)
            except Exception as error:  # noqa: BLE001 - one bad record, not a bad batch
                # One record the encoder cannot take (an attribute of a
                # type no instrumentation should produce, say) would take
                # the whole batch with it: halve until it is found.
                if len(part) > 1:
                    middle = len(part) // 2
                    pending.append(part[middle:])
                    pending.append(part[:middle])
                else:
                    outcome.drop(UNENCODABLE, 1)
                    outcome.error = self._redact(f"cannot encode a record: {error!r}")
                continue
            if self._secret_markers is not None and self._secret_markers.found_in(
                payload
            ):
                payload = self._scrubbed(payload)
            if len(payload) <= limit:
                yield payload, len(part)
                continue
            if len(part) > 1:
                middle = len(part) // 2
                pending.append(part[middle:])
                pending.append(part[:middle])
                continue
            request = self._decode(payload)
            if _cut_strings(request, limit):
                outcome.truncated += 1
                yield request.SerializeToString(), 1
            else:
                outcome.drop(OVERSIZED, 1)

    def _scrubbed(self, payload: bytes) -> bytes:
        request = self._decode(payload)
        _scrub_spans(request, self._redactor)

        return bytes(request.SerializeToString())

    # -- delivery -------------------------------------------------------------

    def _deliver(
        self, payload: bytes, count: int, outcome: ExportOutcome, timeout: float
    ) -> None:
        started = time.monotonic()
        sent, error, permanent = self._send(payload, timeout)
        if sent:
            self._recovered()
            outcome.exported += count
            return

        outcome.failed_attempts += 1
        outcome.error = error
        if permanent or self.spool is None:
            outcome.drop(_EXPORT_FAILED, count)
        else:
            self._spool_payload(payload, count, outcome)
        if not permanent:
            self._failed(time.monotonic() - started)

    def _breaker_open(self) -> bool:
        return not self._healthy and time.monotonic() < self._next_probe

    def _recovered(self) -> None:
        self._healthy = True
        self._probe_interval_seconds = self._base_probe_interval

    def _failed(self, attempt_seconds: float) -> None:
        """Wait a while before the next attempt; longer when attempts hang.

        A refused connection is cheap to retry every schedule delay, which
        is what resumes export promptly after a restart. An attempt that
        took long (a collector that accepts and never answers) holds the
        export thread while the queue fills, so the wait doubles, to 30 s.

        Limitation: a collector that accepts connections and never answers
        holds the export thread for a whole timeout on the first attempt
        and for up to 2 s on each probe; records that arrive meanwhile
        beyond the queue's size are dropped (counted as `queue_full`),
        spool or not.
        """
        self._healthy = False
        if attempt_seconds >= _SLOW_ATTEMPT_SECONDS:
            self._probe_interval_seconds = min(
                self._probe_interval_seconds * 2, _LONGEST_PROBE_INTERVAL_SECONDS
            )
        else:
            self._probe_interval_seconds = self._base_probe_interval
        self._next_probe = time.monotonic() + self._probe_interval_seconds

    def _send(self, payload: bytes, timeout: float) -> tuple[bool, str | None, bool]:
        """(sent, why not, whether sending it again is pointless)."""
        self._catcher.last_message = None
        # The exporter's own retries take up to its whole timeout: with
        # less time left than that, one attempt.
        once = self._single_attempt or timeout < self._timeout_seconds
        if self._grpc:
            if once:
                return self._send_grpc_once(payload, timeout)
            return self._send_grpc(payload)
        if once:
            return self._send_http_once(payload, timeout)

        return self._send_http(payload)

    # Limitation: sending bytes we encoded goes through the SDK HTTP
    # exporter's private client (`_client.export`, `_client._submit`,
    # `_client._compress`, as of opentelemetry-exporter-otlp-proto-http
    # 1.45); every HTTP test of this package sends through them against a
    # real receiver, so a release that renames them fails there first.
    def _send_http(self, payload: bytes) -> tuple[bool, str | None, bool]:
        result = self.exporter._client.export(payload)
        if result.success:
            return True, None, False

        return self._http_failure(result.status_code, result.reason, result.error)

    def _send_http_once(
        self, payload: bytes, timeout: float
    ) -> tuple[bool, str | None, bool]:
        client = self.exporter._client
        try:
            result = client._submit(client._compress(payload), timeout)
        except Exception as error:  # noqa: BLE001 - the transport's failure, reported
            return False, self._redact(_describe(error) or repr(error)), False
        status = result.status_code
        if status is not None and 200 <= status < 400:
            return True, None, False

        return self._http_failure(status, result.reason, result.error)

    def _http_failure(
        self, status: int | None, reason: str | None, error: BaseException | None
    ) -> tuple[bool, str | None, bool]:
        if status is not None:
            text = f"HTTP {status} {reason or ''}".strip()
        else:
            text = (
                _describe(error)
                or self._catcher.last_message
                or "the collector did not accept the request"
            )
        # A request the collector calls malformed or too large fails again
        # however often it is sent.
        permanent = status in (400, 413)

        return False, self._redact(text), permanent

    def _send_grpc(self, payload: bytes) -> tuple[bool, str | None, bool]:
        result = self.exporter._export(payload)
        if getattr(result, "name", "") == "SUCCESS":
            return True, None, False
        error = self._catcher.last_message or "the collector did not accept the request"

        return False, self._redact(error), False

    def _send_grpc_once(
        self, payload: bytes, timeout: float
    ) -> tuple[bool, str | None, bool]:
        import grpc

        exporter = self.exporter
        try:
            exporter._client.Export(
                request=payload, metadata=exporter._headers, timeout=timeout
            )
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                # A channel that failed to connect waits out its own
                # reconnection backoff (up to minutes); a new one connects
                # at once when the collector is back. The SDK does the same.
                exporter._channel.close()
                exporter._initialize_channel_and_stub()
            permanent = code == grpc.StatusCode.INVALID_ARGUMENT
            text = f"gRPC {code.name}: {error.details()}"
            return False, self._redact(text), permanent

        return True, None, False

    # -- the spool --------------------------------------------------------------

    def _spool_payload(
        self, payload: bytes, count: int, outcome: ExportOutcome
    ) -> None:
        try:
            evicted = self.spool.add(payload, count)
        except OSError as error:
            outcome.drop(_EXPORT_FAILED, count)
            outcome.error = self._redact(f"cannot spool: {error}")
            return
        outcome.spooled += count
        for reason, lost in evicted.items():
            outcome.drop(reason, lost)

    def _replay(
        self, count: Callable[[ExportOutcome], None], budget_seconds: float
    ) -> None:
        from ._spool import SPOOL_UNREADABLE

        deadline = time.monotonic() + budget_seconds
        while time.monotonic() < deadline:
            outcome = ExportOutcome()
            entry, expired = self.spool.claim_oldest()
            for reason, lost in expired.items():
                outcome.drop(reason, lost)
            if entry is None:
                count(outcome)
                return
            started = time.monotonic()
            try:
                payload = self.spool.read(entry)
                # A file cut short by a crash must not reach the collector.
                self._decode(payload)
                sent, error, permanent = self._send(
                    payload, min(self._timeout_seconds, _PROBE_TIMEOUT_SECONDS)
                )
            except Exception as problem:  # noqa: BLE001 - a bad file, not a bad collector
                self.spool.remove(entry)
                outcome.drop(SPOOL_UNREADABLE, entry.records)
                outcome.error = self._redact(f"unreadable spool file: {problem!r}")
                count(outcome)
                continue
            if sent:
                self.spool.remove(entry)
                self._recovered()
                outcome.replayed += entry.records
                count(outcome)
                continue
            outcome.failed_attempts += 1
            outcome.error = error
            if permanent:
                self.spool.remove(entry)
                outcome.drop(SPOOL_UNREADABLE, entry.records)
                count(outcome)
                continue
            self.spool.release(entry)
            self._failed(time.monotonic() - started)
            count(outcome)
            return


# Span attributes that carry URLs (old and new HTTP semantic conventions),
# and event attributes that carry exception texts.
_URL_ATTRIBUTES = frozenset({"url.full", "url.query", "http.url", "http.target"})
_TEXT_ATTRIBUTES = frozenset({"exception.message", "exception.stacktrace"})


class _SecretMarkers:
    """A quick look at encoded spans: could they hold a secret to take out?

    Parsing and re-serializing a request costs more than encoding it, so it
    is done only when the bytes contain a captured header's attribute, or
    a URL or exception attribute together with a secret-looking parameter
    name (as written or percent-encoded) or a password in a URL. A false
    alarm costs one parse.
    """

    _CARRIERS = (
        b"url.full",
        b"url.query",
        b"http.url",
        b"http.target",
        b"exception.message",
        b"exception.stacktrace",
    )
    _PASSWORD = re.compile(rb"://[^/@\s:]*:[^/@\s]+@")
    _ENCODED_NAME = re.compile(rb"%[0-9A-Fa-f]{2}[^\x00-\x20&#?;=%]*=")

    def __init__(self, redactor: Redactor) -> None:
        # A word that contains another word adds nothing to the search
        # ("signature" once "sig" is searched for).
        words: list[bytes] = []
        for word in sorted({w.encode() for w in redactor.param_words}, key=len):
            if not any(shorter in word for shorter in words):
                words.append(word)
        self._params = tuple(words)

    def found_in(self, payload: bytes) -> bool:
        # Each test is a scan of the whole payload (about 0.5 ns a byte).
        # Any captured header is looked at by the scrub, which knows every
        # spelling of a secret one (`x_api_key`, `X-CSRF-Token`).
        lowered = payload.lower()
        if b".header." in lowered:
            return True
        if not any(carrier in payload for carrier in self._CARRIERS):
            return False
        if any(word in lowered for word in self._params):
            return True
        if self._ENCODED_NAME.search(payload) is not None:
            return True  # a parameter whose name is percent-encoded (`%74oken=`)

        return self._PASSWORD.search(payload) is not None


def _scrub_spans(request: Any, redactor: Redactor) -> None:
    """Take secrets out of spans, whichever instrumentation made them.

    The last point before the process boundary: URL attributes lose secret
    query values and passwords, captured secret headers lose their value,
    and recorded exceptions keep their text but not the secrets in URLs in
    it. Only the few attribute names that carry such things are looked at.
    """
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _scrub_attributes(span.attributes, redactor, _URL_ATTRIBUTES)
                for event in span.events:
                    _scrub_attributes(event.attributes, redactor, _TEXT_ATTRIBUTES)


def _scrub_attributes(
    attributes: Any, redactor: Redactor, text_keys: frozenset[str]
) -> None:
    for pair in attributes:
        key = pair.key
        value = pair.value
        if key in text_keys:
            if value.WhichOneof("value") == "string_value":
                text = value.string_value
                # url.query is a bare query string, with no '?' to find.
                if key == "url.query":
                    text = redactor.query(text)
                value.string_value = redactor.text(text)
        elif key.startswith("http.") and redactor.is_secret_attribute(key):
            # Captured headers are string arrays by the conventions.
            value.Clear()
            value.string_value = REDACTED


def _describe(error: BaseException | None) -> str | None:
    """An exception as one line: its type and its innermost reason."""
    if error is None:
        return None
    reason: BaseException = error
    seen = 0
    while seen < 8 and (reason.__cause__ or reason.__context__) is not None:
        reason = reason.__cause__ or reason.__context__  # type: ignore[assignment]
        seen += 1
    text = f"{type(error).__name__}: {error}"
    if reason is not error:
        text += f" (caused by {type(reason).__name__}: {reason})"

    return text


def _codec(
    signal: str,
) -> tuple[Callable[[Sequence[Any]], bytes], Callable[[bytes], Any]]:
    """Our encoder (batch to bytes) and the protobuf parser for the slow paths."""
    from . import _encoding

    if signal == "traces":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        return _encoding.encode_spans, ExportTraceServiceRequest.FromString

    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
    )

    return _encoding.encode_logs, ExportLogsServiceRequest.FromString


def _is_repeated(descriptor: Any) -> bool:
    # protobuf 6 added is_repeated and later releases removed label.
    repeated = getattr(descriptor, "is_repeated", None)
    if repeated is None:
        return bool(descriptor.label == descriptor.LABEL_REPEATED)

    return bool(repeated)


def _string_fields(message: Any) -> Iterator[tuple[Any, str, int]]:
    """(message, field name, length in bytes) for every long string inside."""
    for descriptor, value in message.ListFields():
        if descriptor.type == descriptor.TYPE_STRING:
            if _is_repeated(descriptor):
                continue  # no long repeated strings in OTLP
            size = len(value.encode("utf-8", "surrogatepass"))
            if size >= _SHORTEST_CUT:
                yield message, descriptor.name, size
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            if _is_repeated(descriptor):
                for item in value:
                    yield from _string_fields(item)
            else:
                yield from _string_fields(value)


def _cut_strings(request: Any, limit: int) -> bool:
    """Cut the longest strings of a one-record request until it fits.

    Returns False when it cannot be made to fit (thousands of attributes,
    say), and the record is then dropped and counted.
    """
    excess = request.ByteSize() - limit + _CUT_MARGIN_BYTES
    mark = _TRUNCATION_MARK.encode()
    fields = sorted(_string_fields(request), key=lambda item: item[2], reverse=True)
    for message, name, size in fields:
        if excess <= 0:
            break
        keep = max(size - excess - len(mark), 0)
        text = getattr(message, name).encode("utf-8", "surrogatepass")[:keep]
        setattr(message, name, text.decode("utf-8", "ignore") + _TRUNCATION_MARK)
        excess -= size - keep - len(mark)

    return bool(request.ByteSize() <= limit)
