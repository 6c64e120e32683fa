"""Every option of `init_telemetry()`, declared once.

Each option is a field of `Settings` with its environment variable, its
parser, its default and a docstring. `load_settings()` resolves an option
in this order: the keyword given to `init_telemetry()`, then its
environment variable (standard `OTEL_*` where one exists, `SHOWMAX_OTEL_*`
for ours), then the default. A bad keyword raises `ValueError` naming the
option, what is accepted and what was given; a bad environment value warns
with the variable's name and falls back to the default, as the
OpenTelemetry specification asks of SDKs.

The README's option table is generated from these declarations
(`python -m showmax_otel.options`).
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

__all__ = [
    "ConfigurationWarning",
    "Settings",
    "describe_options",
    "load_settings",
]

PROTOCOLS = ("http/protobuf", "grpc")
SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
EXPORTERS = ("otlp", "console", "none")
COMPRESSIONS = ("none", "gzip")
LOG_LEVELS = ("NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigurationWarning(UserWarning):
    """A setting from the environment was invalid or contradictory."""


class InvalidValue(ValueError):
    """Raised by parsers; the message says what is accepted."""


# -- parsers: text (from the environment) or a Python value -> typed value --


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue("a string")
    return value.strip()


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
    raise InvalidValue("true or false")


def _parse_positive_int(value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidValue("a whole number greater than 0")
    try:
        number = int(value.strip()) if isinstance(value, str) else value
    except ValueError:
        raise InvalidValue("a whole number greater than 0") from None
    if not isinstance(number, int) or number <= 0:
        raise InvalidValue("a whole number greater than 0")
    return number


def _parse_non_negative_float(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidValue("a number of 0 or more")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise InvalidValue("a number of 0 or more") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidValue("a number of 0 or more")
    return number


def _parse_ratio(value: Any) -> float:
    number = _parse_non_negative_float(value)
    if number > 1:
        raise InvalidValue("a number from 0 to 1")
    return number


def _choice(*accepted: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else value
        if text not in accepted:
            raise InvalidValue("one of " + ", ".join(repr(a) for a in accepted))
        return str(text)

    return parse


def _parse_level(value: Any) -> int:
    import logging

    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        return int(logging.getLevelName(value.strip().upper()))
    raise InvalidValue("a logging level: " + ", ".join(LOG_LEVELS) + ", or an int")


def _parse_mapping(value: Any) -> dict[str, str]:
    """`key=value,key2=value2` (values URL-decoded, W3C Baggage style) or a dict."""
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise InvalidValue("a mapping of strings to strings")
        return dict(value)
    if not isinstance(value, str):
        raise InvalidValue("'key=value,key2=value2' or a dict of strings")
    result = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise InvalidValue("'key=value,key2=value2' (an item has no '=')")
        result[unquote(key.strip())] = unquote(val.strip())
    return result


def _parse_mapping_from_env(value: Any) -> dict[str, str]:
    """Like `_parse_mapping`, but one malformed item does not lose the rest.

    The OTLP exporter specification's own SDKs skip a bad item of
    `OTEL_EXPORTER_OTLP_HEADERS` and keep the others; throwing them all away
    would drop the Authorization header and fail every export.
    """
    if not isinstance(value, str):
        return _parse_mapping(value)
    result = {}
    for position, item in enumerate(value.split(","), start=1):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            warnings.warn(
                f"item {position} of a key=value list has no '=' and is "
                "ignored (its text is not shown: it may hold a secret)",
                ConfigurationWarning,
                stacklevel=4,
            )
            continue
        result[unquote(key.strip())] = unquote(val.strip())

    return result


def _parse_names(value: Any) -> tuple[str, ...]:
    """A comma-separated list, or a list/tuple of strings."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidValue("a comma-separated string or a list of strings")


def _millis_to_seconds(parse: Callable[[Any], float]) -> Callable[[Any], float]:
    """Environment variables of the specification give durations in ms."""

    def from_env(value: Any) -> float:
        return parse(value) / 1000.0

    return from_env


# -- declaration --------------------------------------------------------------


def _option(
    default: Any,
    doc: str,
    parse: Callable[[Any], Any],
    env: str | None = None,
    *,
    env_parse: Callable[[Any], Any] | None = None,
    secret: bool = False,
) -> Any:
    metadata = {
        "doc": doc,
        "parse": parse,
        "env": env,
        "env_parse": env_parse or parse,
        "secret": secret,
        "default": default,
    }
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)

    return field(default=default, metadata=metadata)


def _without_credentials(url: str) -> str:
    """A URL without its user, password and query, for printing."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = parts.netloc
    if parts.username or parts.password:
        netloc = f"REDACTED@{host}{port}"
    query = "REDACTED" if parts.query else ""

    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_DEFAULT_REDACTED_PARAMS = (
    "token",
    "password",
    "passwd",
    "secret",
    "key",
    "signature",
    "sig",
    "auth",
    "session",
    "credential",
)
_DEFAULT_REDACTED_HEADERS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-auth-token",
)


@dataclass(frozen=True, repr=False)
class Settings:
    """The resolved configuration. Built by `load_settings()`."""

    # --- where and how to export (standard variables) -----------------------
    service_name: str | None = _option(
        None,
        "`service.name` of the resource. Default: `unknown_service`.",
        _parse_str,
        "OTEL_SERVICE_NAME",
    )
    resource_attributes: dict[str, str] = _option(
        {},
        "Extra resource attributes, `key=value,key2=value2`.",
        _parse_mapping,
        "OTEL_RESOURCE_ATTRIBUTES",
    )
    endpoint: str | None = _option(
        None,
        "Base URL of the collector; `/v1/<signal>` is appended for HTTP. "
        "Default: `http://localhost:4318` (HTTP) or `http://localhost:4317` (gRPC).",
        _parse_str,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    traces_endpoint: str | None = _option(
        None,
        "Full URL for spans, used as given.",
        _parse_str,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    )
    logs_endpoint: str | None = _option(
        None,
        "Full URL for log records, used as given.",
        _parse_str,
        "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
    )
    protocol: str = _option(
        "http/protobuf",
        "OTLP transport: `http/protobuf` or `grpc`.",
        _choice(*PROTOCOLS),
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    )
    traces_protocol: str | None = _option(
        None,
        "Transport for spans; default: `protocol`.",
        _choice(*PROTOCOLS),
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    )
    logs_protocol: str | None = _option(
        None,
        "Transport for log records; default: `protocol`.",
        _choice(*PROTOCOLS),
        "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    )
    headers: dict[str, str] = _option(
        {},
        "Headers sent with every export, `key=value` pairs, URL-encoded. "
        "Values are never printed.",
        _parse_mapping,
        "OTEL_EXPORTER_OTLP_HEADERS",
        env_parse=_parse_mapping_from_env,
        secret=True,
    )
    traces_headers: dict[str, str] | None = _option(
        None,
        "Headers for span exports; default: `headers`.",
        _parse_mapping,
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        env_parse=_parse_mapping_from_env,
        secret=True,
    )
    logs_headers: dict[str, str] | None = _option(
        None,
        "Headers for log exports; default: `headers`.",
        _parse_mapping,
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
        env_parse=_parse_mapping_from_env,
        secret=True,
    )
    timeout_seconds: float = _option(
        10.0,
        "Time limit of one export request, retries included (env: milliseconds).",
        _parse_non_negative_float,
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        env_parse=_millis_to_seconds(_parse_non_negative_float),
    )
    compression: str = _option(
        "none",
        "Compression of export requests: `none` or `gzip`.",
        _choice(*COMPRESSIONS),
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    )
    certificate_file: str | None = _option(
        None,
        "CA bundle that verifies the collector's TLS certificate.",
        _parse_str,
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    )
    client_certificate_file: str | None = _option(
        None,
        "Client certificate for mutual TLS.",
        _parse_str,
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    )
    client_key_file: str | None = _option(
        None,
        "Client private key for mutual TLS.",
        _parse_str,
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    )
    insecure: bool | None = _option(
        None,
        "gRPC without TLS when the endpoint has no scheme.",
        _parse_bool,
        "OTEL_EXPORTER_OTLP_INSECURE",
    )
    traces_exporter: str = _option(
        "otlp",
        "Where spans go: `otlp`, `console` or `none`.",
        _choice(*EXPORTERS),
        "OTEL_TRACES_EXPORTER",
    )
    logs_exporter: str = _option(
        "otlp",
        "Where log records go: `otlp`, `console` or `none`.",
        _choice(*EXPORTERS),
        "OTEL_LOGS_EXPORTER",
    )
    traces_sampler: str = _option(
        "parentbased_always_on",
        "Sampler: " + ", ".join(f"`{s}`" for s in SAMPLERS) + ".",
        _choice(*SAMPLERS),
        "OTEL_TRACES_SAMPLER",
    )
    traces_sampler_arg: float = _option(
        1.0,
        "Ratio for the `traceidratio` samplers, 0 to 1.",
        _parse_ratio,
        "OTEL_TRACES_SAMPLER_ARG",
    )
    sdk_disabled: bool = _option(
        False,
        "Set nothing up: no provider, no handler, no instrumentation.",
        _parse_bool,
        "OTEL_SDK_DISABLED",
    )

    # --- batching (standard variables) --------------------------------------
    bsp_schedule_delay_millis: float = _option(
        5000.0,
        "Longest wait before queued spans are exported.",
        _parse_non_negative_float,
        "OTEL_BSP_SCHEDULE_DELAY",
    )
    bsp_max_queue_size: int = _option(
        2048,
        "Spans held at most; beyond it the oldest is dropped and counted.",
        _parse_positive_int,
        "OTEL_BSP_MAX_QUEUE_SIZE",
    )
    bsp_max_export_batch_size: int = _option(
        512,
        "Spans per export request at most.",
        _parse_positive_int,
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    )
    bsp_export_timeout_millis: float = _option(
        30000.0,
        "Time limit of exporting one batch of spans: every request it "
        "takes, retries included (each request also within `timeout_seconds`); "
        "0: no limit but `timeout_seconds`.",
        _parse_non_negative_float,
        "OTEL_BSP_EXPORT_TIMEOUT",
    )
    blrp_schedule_delay_millis: float = _option(
        1000.0,
        "Longest wait before queued log records are exported.",
        _parse_non_negative_float,
        "OTEL_BLRP_SCHEDULE_DELAY",
    )
    blrp_max_queue_size: int = _option(
        2048,
        "Log records held at most; beyond it the oldest is dropped and counted.",
        _parse_positive_int,
        "OTEL_BLRP_MAX_QUEUE_SIZE",
    )
    blrp_max_export_batch_size: int = _option(
        512,
        "Log records per export request at most.",
        _parse_positive_int,
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
    )
    blrp_export_timeout_millis: float = _option(
        30000.0,
        "Time limit of exporting one batch of log records: every request it "
        "takes, retries included (each request also within `timeout_seconds`); "
        "0: no limit but `timeout_seconds`.",
        _parse_non_negative_float,
        "OTEL_BLRP_EXPORT_TIMEOUT",
    )

    # --- ours -----------------------------------------------------------------
    shutdown_timeout_seconds: float = _option(
        5.0,
        "Bound on the flush at exit, at worker stop and in `shutdown_telemetry()`.",
        _parse_non_negative_float,
        "SHOWMAX_OTEL_SHUTDOWN_TIMEOUT_SECONDS",
    )
    log_level: int = _option(
        0,
        "Lowest level the bridge ships (the loggers' own levels apply first).",
        _parse_level,
        "SHOWMAX_OTEL_LOG_LEVEL",
    )
    bridge_loggers: tuple[str, ...] = _option(
        ("gunicorn.error",),
        "Loggers that do not propagate to the root but are shipped all the same, "
        "each record once.",
        _parse_names,
        "SHOWMAX_OTEL_BRIDGE_LOGGERS",
    )
    instrument_falcon: bool = _option(
        True,
        "Instrument Falcon apps: those built after init, and any passed to "
        "`instrument_app()`.",
        _parse_bool,
        "SHOWMAX_OTEL_INSTRUMENT_FALCON",
    )
    access_log: bool = _option(
        True,
        "One access-log record per request, correlated with its server span.",
        _parse_bool,
        "SHOWMAX_OTEL_ACCESS_LOG",
    )
    access_logger_name: str = _option(
        "falcon.access",
        "Logger name of the access-log records.",
        _parse_str,
        "SHOWMAX_OTEL_ACCESS_LOGGER",
    )
    exception_logger_name: str = _option(
        "falcon.error",
        "Logger name of the records of unhandled exceptions.",
        _parse_str,
        "SHOWMAX_OTEL_EXCEPTION_LOGGER",
    )
    redacted_params: tuple[str, ...] = _option(
        _DEFAULT_REDACTED_PARAMS,
        "Query parameters whose values are replaced by `REDACTED` when their "
        "name contains one of these words (case-insensitive).",
        _parse_names,
        "SHOWMAX_OTEL_REDACTED_PARAMS",
    )
    redacted_headers: tuple[str, ...] = _option(
        _DEFAULT_REDACTED_HEADERS,
        "Headers that never reach spans or records.",
        _parse_names,
        "SHOWMAX_OTEL_REDACTED_HEADERS",
    )
    max_attribute_bytes: int = _option(
        65536,
        "Longest log body or attribute value, in characters; longer ones are "
        "cut and marked.",
        _parse_positive_int,
        "SHOWMAX_OTEL_MAX_ATTRIBUTE_BYTES",
    )
    max_request_bytes: int = _option(
        3 * 1024 * 1024,
        "Largest export request; a larger batch is split (4 MiB is the "
        "collector's default gRPC limit).",
        _parse_positive_int,
        "SHOWMAX_OTEL_MAX_REQUEST_BYTES",
    )
    report_interval_seconds: float = _option(
        60.0,
        "At most one report of drops and export failures per interval.",
        _parse_non_negative_float,
        "SHOWMAX_OTEL_REPORT_INTERVAL_SECONDS",
    )
    hub_block_threshold_millis: float = _option(
        100.0,
        "Under gevent, report event-loop blocks longer than this, with the "
        "blocking stack, correlated with the request; 0 turns the watch off.",
        _parse_non_negative_float,
        "SHOWMAX_OTEL_HUB_BLOCK_THRESHOLD_MILLIS",
    )
    raise_internal_errors: bool = _option(
        False,
        "Re-raise the package's own internal errors instead of logging them "
        "once (for test suites; never in production).",
        _parse_bool,
        "SHOWMAX_OTEL_RAISE_INTERNAL_ERRORS",
    )
    spool_directory: str | None = _option(
        None,
        "Directory where export requests the collector did not take wait, on "
        "disk, until it takes them; unset: no spool, such records are dropped "
        "and counted.",
        _parse_str,
        "SHOWMAX_OTEL_SPOOL_DIRECTORY",
    )
    spool_max_bytes: int = _option(
        64 * 1024 * 1024,
        "Largest size of the spool, per signal; the oldest requests are dropped "
        "and counted to make room.",
        _parse_positive_int,
        "SHOWMAX_OTEL_SPOOL_MAX_BYTES",
    )
    spool_max_age_seconds: float = _option(
        3600.0,
        "Spooled requests older than this are dropped unsent, and counted.",
        _parse_non_negative_float,
        "SHOWMAX_OTEL_SPOOL_MAX_AGE_SECONDS",
    )

    def __repr__(self) -> str:
        """Every option, with secrets hidden and endpoint credentials cut.

        Settings end up in logs and bug reports: header values are never
        shown, nor the user, password or query of an endpoint URL.
        """
        shown = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value:
                text = "<hidden>"
            elif spec.name.endswith("endpoint") and isinstance(value, str):
                text = repr(_without_credentials(value))
            else:
                text = repr(value)
            shown.append(f"{spec.name}={text}")

        return f"Settings({', '.join(shown)})"

    def changed_from(self, other: Settings) -> list[str]:
        """Names of the options whose values differ from `other`'s."""
        return [
            f.name
            for f in fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]

    def signal_protocol(self, signal: str) -> str:
        specific = self.traces_protocol if signal == "traces" else self.logs_protocol
        return specific or self.protocol

    def signal_headers(self, signal: str) -> dict[str, str]:
        specific = self.traces_headers if signal == "traces" else self.logs_headers
        return self.headers if specific is None else specific


_FIELDS = {f.name: f for f in fields(Settings)}


def load_settings(
    overrides: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every option: keyword, then environment, then default.

    Raises `TypeError` for an unknown keyword and `ValueError` for a bad
    value given as a keyword. Warns (`ConfigurationWarning`) for a bad
    environment value and uses the default instead.
    """
    environ = os.environ if environ is None else environ
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, _FIELDS, n=1)
            hints.append(
                f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
            )
        raise TypeError("init_telemetry() got unknown options: " + ", ".join(hints))

    values: dict[str, Any] = {}
    for name, spec in _FIELDS.items():
        meta = spec.metadata
        given = overrides.get(name)
        if given is not None:
            try:
                values[name] = meta["parse"](given)
            except InvalidValue as error:
                shown = "<hidden>" if meta["secret"] else repr(given)
                raise ValueError(
                    f"init_telemetry(): option {name!r} must be {error}; got {shown}"
                ) from None
            continue

        env = meta["env"]
        raw = environ.get(env) if env else None
        if raw is None or not raw.strip():
            continue
        try:
            values[name] = meta["env_parse"](raw)
        except InvalidValue as error:
            shown = "<hidden>" if meta["secret"] else repr(raw)
            warnings.warn(
                f"{env}={shown} is invalid: must be {error}; "
                f"using the default {spec.metadata['default']!r}",
                ConfigurationWarning,
                stacklevel=3,
            )

    return Settings(**values)


def describe_options() -> list[dict[str, str]]:
    """One row per option: name, environment variable, default, description."""
    rows = []
    for name, spec in _FIELDS.items():
        default = spec.metadata["default"]
        if isinstance(default, tuple):
            default = ",".join(default)
        rows.append(
            {
                "name": name,
                "env": spec.metadata["env"] or "",
                "default": "" if default in (None, {}, "") else str(default),
                "doc": spec.metadata["doc"],
            }
        )

    return rows


def options_table_markdown() -> str:
    """The README's option table, made from the declarations above."""
    lines = [
        "| option | environment variable | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for row in describe_options():
        default = f"`{row['default']}`" if row["default"] else ""
        lines.append(f"| `{row['name']}` | `{row['env']}` | {default} | {row['doc']} |")

    return "\n".join(lines)


if __name__ == "__main__":
    print(options_table_markdown())
