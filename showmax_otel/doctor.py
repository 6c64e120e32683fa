"""`showmax-otel doctor`: set-ups that lose, double or slow down telemetry.

Each check returns `Finding`s, each with the fix. The command runs them on
the environment and, given `module:app`, on the live configuration of a
process that imported the application; `check()` runs them inside any
process (a shell in a worker, a test). `init_time_findings()` is the cheap
subset that `init_telemetry()` reports as warnings: no network, no probe
records, nothing the export settings' own warnings already say.

Nothing here prints a header value, nor the password or query of a URL.
Importing this module imports no ssl, requests or grpc: the command line
imports it to build its parser.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import logging.handlers
import os
import re
import shlex
import socket
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Finding",
    "add_arguments",
    "check",
    "endpoint_findings",
    "environment_findings",
    "init_time_findings",
    "logging_findings",
    "read_uwsgi_ini",
    "run",
    "server_findings",
]

# Falcon releases this package's Falcon layer is written and tested for.
SUPPORTED_FALCON = ((3, 1), (5, 0))

# How long a handler may take for one record before it counts as slow.
_SLOW_HANDLER_MILLIS = 20.0
_PROBE_LOGGER = "showmax_otel.doctor.probe"

_SIGNALS = ("traces", "logs")
_SIGNAL_PATH = {"traces": "/v1/traces", "logs": "/v1/logs"}
_GRPC_METHOD = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_HEADER_VARIABLES = (
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
)
# What may appear in a header value as typed in the environment variable:
# RFC 3986 unreserved and sub-delimiters except ',' and ';' (the list's
# separators), ':' '/' '?' '@' '=', and '%' followed by two hex digits.
_ENCODED_VALUE = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+=:/?@]|%[0-9A-Fa-f]{2})*$")


@dataclass(frozen=True)
class Finding:
    """One problem: a stable `code`, what is wrong, and how to fix it."""

    code: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.problem}\n    fix: {self.fix}"


# -- environment -----------------------------------------------------------------


def environment_findings(environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Mistakes in OTEL_* variables that the exporters' own checks do not catch.

    Per-signal endpoints without or with a doubled `/v1/<signal>` path,
    header values that are not URL-encoded, and a distro/configurator pair
    that builds two pipelines.
    """
    environ = os.environ if environ is None else environ
    findings: list[Finding] = []
    findings += _signal_endpoint_findings(environ)
    findings += _header_encoding_findings(environ)
    findings += _distro_findings(environ)

    return findings


def _signal_protocol(environ: Mapping[str, str], signal: str) -> str:
    specific = environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", "")
    generic = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")

    return (specific or generic or "http/protobuf").strip().lower()


def _signal_endpoint_findings(environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    for signal in _SIGNALS:
        variable = f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"
        raw = environ.get(variable, "").strip()
        if not raw or _signal_protocol(environ, signal) == "grpc":
            continue
        path = urlsplit(raw if "://" in raw else "//" + raw).path.rstrip("/")
        expected = _SIGNAL_PATH[signal]
        shown = _redact_url(raw)
        if path.endswith(expected + expected):
            findings.append(
                Finding(
                    "signal-endpoint-path",
                    f"{variable}={shown!r} repeats {expected}; the collector "
                    f"answers 404 to every {signal} export",
                    f"end {variable} with a single {expected}",
                )
            )
        elif not path.endswith(expected):
            other = next(
                (
                    p
                    for s, p in _SIGNAL_PATH.items()
                    if s != signal and path.endswith(p)
                ),
                None,
            )
            what = f"ends in {other}" if other else f"does not end in {expected}"
            findings.append(
                Finding(
                    "signal-endpoint-path",
                    f"{variable}={shown!r} {what}; a per-signal endpoint is used "
                    f"as given, so {signal} exports go to a path the collector "
                    "does not serve",
                    f"set it to the collector's full URL ending in {expected}, "
                    "or set only OTEL_EXPORTER_OTLP_ENDPOINT (the base URL)",
                )
            )

    return findings


def _header_encoding_findings(environ: Mapping[str, str]) -> list[Finding]:
    findings = []
    for variable in _HEADER_VARIABLES:
        raw = environ.get(variable, "")
        if not raw.strip():
            continue
        for position, item in enumerate(raw.split(","), start=1):
            if not item.strip():
                continue
            key, separator, value = item.partition("=")
            if not separator:
                # The item may be a bare token: say where it is, not what.
                findings.append(
                    Finding(
                        "header-format",
                        f"item {position} of {variable} has no '=' and is ignored",
                        f"write {variable} as name=value pairs separated by commas",
                    )
                )
                continue
            if not _ENCODED_VALUE.match(value.strip()):
                findings.append(
                    Finding(
                        "header-not-url-encoded",
                        f"the value of header {key.strip()!r} in {variable} is "
                        "not URL-encoded (spaces, quotes, ',' ';' '%' or "
                        "non-ASCII characters must be written as %XX); it is "
                        "decoded to something other than what was meant",
                        "URL-encode each header value, e.g. "
                        "Authorization=Bearer%20<token> "
                        "(python -c 'import urllib.parse,sys; "
                        'print(urllib.parse.quote(sys.argv[1], safe=""))\' VALUE)',
                    )
                )

    return findings


def _distro_findings(environ: Mapping[str, str]) -> list[Finding]:
    distro = environ.get("OTEL_PYTHON_DISTRO", "").strip()
    configurator = environ.get("OTEL_PYTHON_CONFIGURATOR", "").strip()
    if distro == "showmax_otel" and configurator and configurator != "showmax_otel":
        return [
            Finding(
                "configurator-mismatch",
                f"OTEL_PYTHON_CONFIGURATOR={configurator!r} with "
                "OTEL_PYTHON_DISTRO=showmax_otel: opentelemetry-instrument builds "
                "that configurator's pipeline, and init_telemetry() then adds its "
                "own export to it, so spans and records are exported twice",
                "set OTEL_PYTHON_CONFIGURATOR=showmax_otel (or unset it)",
            )
        ]
    if configurator == "showmax_otel" and distro and distro != "showmax_otel":
        return [
            Finding(
                "distro-mismatch",
                f"OTEL_PYTHON_DISTRO={distro!r} with OTEL_PYTHON_CONFIGURATOR="
                "showmax_otel: that distro's defaults apply (opentelemetry-distro "
                "switches the protocol to gRPC) and its Falcon and logging "
                "instrumentors add a second server span and a second log bridge",
                "set OTEL_PYTHON_DISTRO=showmax_otel",
            )
        ]

    return []


def _export_setting_findings(settings: Any) -> list[Finding]:
    """The export settings' own problems (also warned about at init)."""
    from . import _exporters

    problems = getattr(_exporters, "configuration_problems", None)
    if problems is None:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = problems(settings)

    return [
        Finding("export-setting", problem, "correct the variable named above")
        for problem in found
    ]


def _load_settings_quietly() -> tuple[Any, list[Finding]]:
    """The settings as the environment gives them, bad values as findings."""
    from .options import load_settings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settings = load_settings({})
    findings = [
        Finding("invalid-setting", str(w.message), "correct the variable named above")
        for w in caught
    ]

    return settings, findings


def _redact_url(url: str) -> str:
    """`url` without password or query, wherever the query sits.

    A query typed into a base endpoint ends up before the `/v1/<signal>`
    path that is appended to it, where a URL parser takes it for part of
    the host; everything after the first `?` goes, whatever follows it.
    """
    from ._exporters import redact_url

    head, question, _ = url.partition("?")
    shown = redact_url(head)

    return shown + "?REDACTED" if question else shown


# -- logging ----------------------------------------------------------------------


def logging_findings(
    *, probe_handlers: bool = False, slow_handler_millis: float = _SLOW_HANDLER_MILLIS
) -> list[Finding]:
    """Duplicate handlers, handlers doing network I/O, and (probed) slow ones.

    With `probe_handlers`, one WARNING record from the logger
    `showmax_otel.doctor.probe` is passed to each handler that is not
    already known to do network I/O, and timed.
    """
    findings: list[Finding] = []
    loggers = _all_loggers()
    for name, logger in loggers:
        findings += _duplicate_handler_findings(name, logger)
    findings += _network_handler_findings(loggers)
    if probe_handlers:
        findings += _slow_handler_findings(loggers, slow_handler_millis)

    return findings


def _all_loggers() -> list[tuple[str, logging.Logger]]:
    found: list[tuple[str, logging.Logger]] = [("root", logging.getLogger())]
    for name, logger in sorted(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            found.append((name, logger))

    return found


def _is_our_bridge(handler: logging.Handler) -> bool:
    from ._logging import BridgeHandler

    return isinstance(handler, BridgeHandler)


def _handler_kind(handler: logging.Handler) -> tuple[Any, str]:
    """A key equal for two handlers that write the same records to one place."""
    from ._logging import _is_bridge, _OwnReportsFallback

    if _is_bridge(handler):
        return ("otel-bridge",), "OpenTelemetry log bridge"
    if isinstance(handler, _OwnReportsFallback):
        # Writes only when no handler of the application's is on the root,
        # so it never doubles a record.
        return ("fallback", id(handler)), "showmax_otel's own fallback"
    if isinstance(handler, logging.FileHandler):
        return ("file", handler.baseFilename), f"file {handler.baseFilename}"
    if isinstance(handler, logging.StreamHandler):
        stream = handler.stream
        label = getattr(stream, "name", None) or type(stream).__name__
        return ("stream", id(stream)), f"stream {label}"
    if isinstance(handler, logging.handlers.SysLogHandler):
        return ("syslog", repr(handler.address)), f"syslog {handler.address!r}"
    if isinstance(handler, logging.handlers.SocketHandler):
        return ("socket", handler.host, handler.port), "socket"
    if isinstance(handler, logging.handlers.HTTPHandler):
        return ("http", handler.host, handler.url), "HTTP"
    if isinstance(handler, logging.handlers.QueueHandler):
        return ("queue", id(handler.queue)), "a logging queue"
    if isinstance(handler, logging.NullHandler):
        # Writes nothing, so two of them double nothing.
        return ("null", id(handler)), "nowhere"

    # Limitation: two instances of one custom handler class count as the
    # same kind, even when they write to different places.
    return (type(handler),), type(handler).__name__


def _duplicate_handler_findings(name: str, logger: logging.Logger) -> list[Finding]:
    """Two handlers of one kind on a logger, or on it and an ancestor it reaches.

    One finding per logger at most. Duplicates that sit on an ancestor alone
    are reported for that ancestor, not again for each of its children.
    """
    first: dict[Any, tuple[str, logging.Handler]] = {}
    chain: list[logging.Logger] = []
    current: logging.Logger | None = logger
    while current is not None:
        chain.append(current)
        current = current.parent if current.propagate else None

    for position, current in enumerate(chain):
        owner = "root" if current is logging.root else current.name
        for handler in current.handlers:
            key, label = _handler_kind(handler)
            if key not in first:
                first[key] = (owner, handler)
                continue
            first_owner, first_handler = first[key]
            if _is_our_bridge(handler) and _is_our_bridge(first_handler):
                # The bridge marks each record it ships: a record passing it
                # twice (a bridged logger that propagates) is shipped once.
                continue
            if position > 0 and first_owner == owner:
                continue
            if first_owner == owner:
                where = f"logger {name!r} has two handlers writing to {label}"
            else:
                where = (
                    f"logger {name!r} has a handler writing to {label}, and so "
                    f"does {owner!r}, which its records propagate to"
                )
            return [
                Finding(
                    "duplicate-handler",
                    where + ": every record is written twice",
                    "keep one: configure handlers once (on the root logger), "
                    "or set propagate = False on the logger that has its own",
                )
            ]

    return []


def _network_handler(handler: logging.Handler) -> str | None:
    """Why `handler` does network I/O in the logging call, if it does."""
    if isinstance(handler, logging.handlers.HTTPHandler):
        return f"HTTPHandler to {handler.host}"
    if isinstance(handler, logging.handlers.SMTPHandler):
        return f"SMTPHandler to {handler.mailhost}"
    if isinstance(handler, logging.handlers.SysLogHandler):
        if handler.socktype == socket.SOCK_STREAM and not isinstance(
            handler.address, str
        ):
            return f"SysLogHandler over TCP to {handler.address!r}"
        return None
    if isinstance(handler, logging.handlers.DatagramHandler):
        return None
    if isinstance(handler, logging.handlers.SocketHandler):
        return f"SocketHandler to {handler.host}:{handler.port}"

    return None


def _network_handler_findings(
    loggers: Sequence[tuple[str, logging.Logger]],
) -> list[Finding]:
    findings = []
    for name, logger in loggers:
        for handler in logger.handlers:
            what = _network_handler(handler)
            if what is None:
                continue
            findings.append(
                Finding(
                    "network-handler",
                    f"logger {name!r} has a {what}: each record waits for the "
                    "network inside the request (and blocks every greenlet "
                    "under gevent) whenever the peer is slow or gone",
                    "ship these records through the OpenTelemetry bridge, or put "
                    "the handler behind a logging.handlers.QueueHandler with a "
                    "QueueListener",
                )
            )

    return findings


def _slow_handler_findings(
    loggers: Sequence[tuple[str, logging.Logger]], threshold_millis: float
) -> list[Finding]:
    findings = []
    timed: set[int] = set()
    for name, logger in loggers:
        for handler in logger.handlers:
            if id(handler) in timed or _network_handler(handler) is not None:
                continue
            timed.add(id(handler))
            record = logging.LogRecord(
                _PROBE_LOGGER,
                logging.WARNING,
                __file__,
                0,
                "showmax-otel doctor: timing this handler (one record)",
                None,
                None,
            )
            started = time.perf_counter()
            try:
                handler.handle(record)
            except Exception:  # noqa: BLE001 - a failing handler is timed all the same
                handler.handleError(record)
            millis = (time.perf_counter() - started) * 1000
            if millis > threshold_millis:
                findings.append(
                    Finding(
                        "slow-handler",
                        f"a {type(handler).__name__} on logger {name!r} took "
                        f"{millis:.0f} ms for one record (limit "
                        f"{threshold_millis:g} ms): every request that logs "
                        "waits for it",
                        "put the handler behind a logging.handlers.QueueHandler "
                        "with a QueueListener, or write to a local stream",
                    )
                )

    return findings


# -- gevent, servers, Falcon ------------------------------------------------------


def gevent_findings() -> list[Finding]:
    """Monkey-patching done late or in part (see `showmax_otel._gevent`)."""
    from . import _gevent

    return [
        _finding_from_text("gevent-patching", text) for text in _gevent.patch_findings()
    ]


def read_uwsgi_ini(path: str, section: str = "uwsgi") -> dict[str, list[str]]:
    """The options of one section of a uWSGI ini file, each with all its values.

    Keys are normalised as uWSGI does (`_` reads as `-`). A file that cannot
    be read gives no options.
    """
    options: dict[str, list[str]] = {}
    current = None
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError:
        return options
    for line in lines:
        text = line.strip()
        if not text or text.startswith((";", "#")):
            continue
        if text.startswith("[") and text.endswith("]"):
            current = text[1:-1].strip()
            continue
        if current != section:
            continue
        key, separator, value = text.partition("=")
        key = key.strip().replace("_", "-")
        options.setdefault(key, []).append(value.strip() if separator else "true")

    return options


def _uwsgi_options_from_command(args: Sequence[str]) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-"):
            if arg.endswith(".ini"):
                for key, values in read_uwsgi_ini(arg).items():
                    options.setdefault(key, []).extend(values)
            continue
        key, separator, value = arg.lstrip("-").partition("=")
        if not separator:
            if index < len(args) and not args[index].startswith("-"):
                value = args[index]
                index += 1
            else:
                value = "true"
        if key == "ini":
            for ini_key, values in read_uwsgi_ini(value).items():
                options.setdefault(ini_key, []).extend(values)
            continue
        key = {"T": "enable-threads", "M": "master", "p": "processes"}.get(key, key)
        options.setdefault(key.replace("_", "-"), []).append(value)

    return options


def _unreadable_ini_files(args: Sequence[str]) -> list[tuple[str, str]]:
    """The ini files a uWSGI command line names that cannot be read, and why."""
    paths = []
    for index, arg in enumerate(args):
        if arg.startswith("--ini="):
            paths.append(arg.partition("=")[2])
        elif arg == "--ini" and index + 1 < len(args):
            paths.append(args[index + 1])
        elif not arg.startswith("-") and arg.endswith(".ini"):
            paths.append(arg)
    unreadable = []
    for path in dict.fromkeys(paths):
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            unreadable.append((path, error.strerror or type(error).__name__))

    return unreadable


def uwsgi_findings(
    options: Mapping[str, Sequence[str]] | None = None,
    *,
    shutdown_timeout_seconds: float = 5.0,
) -> list[Finding]:
    """uWSGI options that lose telemetry: the running uWSGI's, or `options`."""
    # Limitation: options read offline come from the command line and ini
    # files only; uWSGI's placeholders, `@(...)` includes and the XML, YAML
    # and JSON formats are not expanded, so what they set is not checked.
    from . import _servers

    if options is None:
        texts = _servers.uwsgi_option_findings(shutdown_timeout_seconds)
    else:
        texts = _servers.findings_for_uwsgi_options(
            options, shutdown_timeout_seconds=shutdown_timeout_seconds
        )

    return [_finding_from_text("uwsgi-option", text) for text in texts]


def _finding_from_text(code: str, text: str) -> Finding:
    """A finding from a sentence that ends with its fix ("...; add X")."""
    cut = max(text.rfind("; "), text.rfind(": "))
    if cut <= 0:
        return Finding(code, text, "see the problem")

    return Finding(code, text[:cut], text[cut + 2 :])


def _gunicorn_options_from_command(args: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    index = 0
    aliases = {"k": "worker-class", "w": "workers", "t": "timeout", "c": "config"}
    flags = {"preload", "reload", "daemon"}
    while index < len(args):
        arg = args[index]
        index += 1
        if not arg.startswith("-"):
            continue
        if arg.startswith("--"):
            key, separator, value = arg[2:].partition("=")
        else:
            key, value = arg[1:2], arg[2:]
            separator = "=" if value else ""
            key = aliases.get(key, key)
        if not separator and key not in flags and index < len(args):
            value = args[index]
            index += 1
        options[key] = value if separator or key not in flags else "true"

    return options


def gunicorn_findings(
    options: Mapping[str, str], shutdown_timeout_seconds: float
) -> list[Finding]:
    """gunicorn options that lose telemetry."""
    findings = []
    worker_class = options.get("worker-class", "sync").lower()
    graceful = options.get("graceful-timeout")
    try:
        graceful_seconds = float(graceful) if graceful is not None else 30.0
    except ValueError:
        graceful_seconds = 30.0
    if graceful_seconds < shutdown_timeout_seconds:
        findings.append(
            Finding(
                "gunicorn-graceful-timeout",
                f"gunicorn's graceful timeout ({graceful_seconds:g} s) is shorter "
                f"than the telemetry shutdown bound ({shutdown_timeout_seconds:g} "
                "s): workers are killed while flushing at stop",
                "raise --graceful-timeout above SHOWMAX_OTEL_SHUTDOWN_TIMEOUT_SECONDS",
            )
        )
    if "gevent" in worker_class and options.get("preload") == "true":
        findings.append(
            Finding(
                "gunicorn-preload-gevent",
                "gunicorn --preload with gevent workers imports the application "
                "in the master before the workers monkey-patch, so whatever it "
                "imports keeps blocking sockets and ssl",
                "monkey-patch in the gunicorn config file (import gevent.monkey; "
                "gevent.monkey.patch_all() at its top), or start it with "
                "opentelemetry-instrument and OTEL_PYTHON_DISTRO=showmax_otel",
            )
        )

    return findings


def server_findings(
    command: str | Sequence[str] | None = None, *, shutdown_timeout_seconds: float = 5.0
) -> list[Finding]:
    """Server options that lose telemetry: a command line given, or this process's."""
    if command is None:
        return uwsgi_findings(shutdown_timeout_seconds=shutdown_timeout_seconds)

    argv = shlex.split(command) if isinstance(command, str) else list(command)
    while argv and os.path.basename(argv[0]) in ("opentelemetry-instrument", "exec"):
        argv = argv[1:]
    if not argv:
        return []
    program = os.path.basename(argv[0])
    if program.startswith("uwsgi") or argv[0].endswith(".ini"):
        args = argv[1:] if program.startswith("uwsgi") else argv
        unreadable = [
            Finding(
                "uwsgi-ini-unreadable",
                f"cannot read the ini file {path!r} ({problem}): its options "
                "were not checked",
                "run the doctor from the directory the service starts in, or "
                "give the file's full path",
            )
            for path, problem in _unreadable_ini_files(args)
        ]
        return unreadable + uwsgi_findings(
            _uwsgi_options_from_command(args),
            shutdown_timeout_seconds=shutdown_timeout_seconds,
        )
    if program.startswith("gunicorn"):
        extra = os.environ.get("GUNICORN_CMD_ARGS", "").split()
        return gunicorn_findings(
            _gunicorn_options_from_command([*argv[1:], *extra]),
            shutdown_timeout_seconds,
        )

    return []


def falcon_findings() -> list[Finding]:
    """The installed Falcon against the releases this package supports."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("falcon")
    except PackageNotFoundError:
        return []
    numbers = tuple(int(part) for part in re.findall(r"\d+", installed)[:2])
    low, high = SUPPORTED_FALCON
    if low <= numbers < high:
        return []
    supported = f">={low[0]}.{low[1]},<{high[0]}"

    return [
        Finding(
            "falcon-version",
            f"Falcon {installed} is installed; showmax-otel supports Falcon "
            f"{supported}, and its request wrapper may miss or double spans on "
            "other releases",
            f"install a supported Falcon (pip install 'falcon{supported}')",
        )
    ]


# -- the live pipeline ------------------------------------------------------------


def pipeline_findings(telemetry: Any) -> list[Finding]:
    """Providers and processors: one of each, and nothing that exports twice."""
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    findings = []
    tracer_provider = trace.get_tracer_provider()
    ours = None if telemetry is None else telemetry.tracer_provider
    if ours is not None and tracer_provider is not ours:
        findings.append(
            Finding(
                "foreign-provider",
                f"the global TracerProvider ({type(tracer_provider).__name__}) "
                "is not the one init_telemetry() built",
                "remove the other set_tracer_provider() call, or the other "
                "distro's configurator",
            )
        )
    exporting = _exporting_processors(
        getattr(
            getattr(tracer_provider, "_active_span_processor", None),
            "_span_processors",
            (),
        )
    )
    if len(exporting) > 1:
        findings.append(
            Finding(
                "duplicate-span-export",
                "the TracerProvider has more than one exporting span processor ("
                + ", ".join(exporting)
                + "): every span is exported twice",
                "let one pipeline export: init_telemetry() alone, or "
                "OTEL_PYTHON_CONFIGURATOR=showmax_otel under opentelemetry-instrument",
            )
        )
    logger_provider = get_logger_provider()
    exporting = _exporting_processors(
        getattr(
            getattr(logger_provider, "_multi_log_record_processor", None),
            "_log_record_processors",
            (),
        )
    )
    if len(exporting) > 1:
        findings.append(
            Finding(
                "duplicate-log-export",
                "the LoggerProvider has more than one exporting processor ("
                + ", ".join(exporting)
                + "): every record is exported twice",
                "let one pipeline export: init_telemetry() alone, or "
                "OTEL_PYTHON_CONFIGURATOR=showmax_otel under opentelemetry-instrument",
            )
        )

    return findings


def silent_provider_findings(telemetry: Any) -> list[Finding]:
    """Global providers that take no processors while their signal should
    export: a no-op provider set before init, which init_telemetry() kept
    (it warned then) and which exports nothing."""
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider

    settings = getattr(telemetry, "settings", None)
    if settings is None:
        return []
    findings = []
    for kind, provider, method, exporter, variable in (
        (
            "TracerProvider",
            trace.get_tracer_provider(),
            "add_span_processor",
            settings.traces_exporter,
            "OTEL_PYTHON_TRACER_PROVIDER",
        ),
        (
            "LoggerProvider",
            get_logger_provider(),
            "add_log_record_processor",
            settings.logs_exporter,
            "OTEL_PYTHON_LOGGER_PROVIDER",
        ),
    ):
        if exporter == "none" or callable(getattr(provider, method, None)):
            continue
        findings.append(
            Finding(
                "silent-provider",
                f"the global {kind} ({type(provider).__name__}) takes no "
                "processors: nothing of that signal is exported",
                f"remove what set it before init_telemetry() (a set_*_provider() "
                f"call, {variable}), or set that signal's exporter to none",
            )
        )

    return findings


def _exporting_processors(processors: Iterable[Any]) -> list[str]:
    """Names of the processors that export (the SDK's and this package's)."""
    exporting_names = ("BatchSpan", "SimpleSpan", "BatchLog", "SimpleLog")
    names = []
    for processor in processors:
        name = type(processor).__name__
        if (
            name.startswith(exporting_names)
            or name.endswith("QueueProcessor")
            or hasattr(processor, "span_exporter")
            or hasattr(processor, "_exporter")
        ):
            names.append(name)

    return names


# -- network ---------------------------------------------------------------------


def endpoint_findings(settings: Any, timeout_seconds: float = 3.0) -> list[Finding]:
    """Whether the OTLP endpoint answers, for each signal exported over OTLP.

    Sends one empty export request per signal, with the configured headers
    and TLS files; a collector accepts it and exports nothing.
    """
    findings = []
    from . import _exporters

    for signal in _SIGNALS:
        kind = (
            settings.traces_exporter if signal == "traces" else settings.logs_exporter
        )
        if kind != "otlp":
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan = _exporters.plan_export(settings, signal)
        if plan.unusable:
            continue  # reported by the export-setting findings
        shown = _redact_url(plan.endpoint)
        if plan.protocol == "grpc":
            error = _probe_grpc(plan, signal, timeout_seconds)
        else:
            error = _probe_http(plan, timeout_seconds)
        if error is not None:
            findings.append(
                Finding(
                    "endpoint-unreachable",
                    f"{signal} over {plan.protocol} to {shown}: {error}",
                    "check that the collector runs and listens there, and the "
                    "endpoint, protocol, TLS and header settings",
                )
            )

    return findings


def _probe_http(plan: Any, timeout_seconds: float) -> str | None:
    import ssl
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/x-protobuf", **plan.headers}
    request = urllib.request.Request(
        plan.endpoint, data=b"", headers=headers, method="POST"
    )
    context = None
    if plan.tls:
        context = ssl.create_default_context(cafile=plan.certificate_file)
        if plan.client_certificate_file:
            context.load_cert_chain(plan.client_certificate_file, plan.client_key_file)
    try:
        with urllib.request.urlopen(
            request, timeout=timeout_seconds, context=context
        ) as response:
            response.read()
    except urllib.error.HTTPError as error:
        hint = {
            401: " (the headers do not authenticate)",
            403: " (the headers do not authorise)",
            404: " (no OTLP receiver at this path)",
            405: " (no OTLP receiver at this path)",
        }.get(error.code, "")
        return f"answered HTTP {error.code}{hint}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"no answer ({_describe_error(reason)})"

    return None


def _probe_grpc(plan: Any, signal: str, timeout_seconds: float) -> str | None:
    import grpc

    target = plan.endpoint
    if "://" in target:
        target = urlsplit(target).netloc
    if plan.tls:

        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            with open(path, "rb") as file:
                return file.read()

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(plan.certificate_file),
            private_key=read(plan.client_key_file),
            certificate_chain=read(plan.client_certificate_file),
        )
        channel = grpc.secure_channel(target, credentials)
    else:
        channel = grpc.insecure_channel(target)
    try:
        call = channel.unary_unary(_GRPC_METHOD[signal])
        call(b"", timeout=timeout_seconds, metadata=tuple(plan.headers.items()))
    except grpc.RpcError as error:
        code = error.code() if hasattr(error, "code") else None
        name = getattr(code, "name", "UNKNOWN")
        return f"gRPC status {name}"
    finally:
        channel.close()

    return None


def _describe_error(error: object) -> str:
    if isinstance(error, socket.timeout):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror

    return type(error).__name__ if not str(error) else str(error)


# -- entry points ----------------------------------------------------------------


def init_time_findings(telemetry: Any) -> list[Finding]:
    """The checks `init_telemetry()` reports: cheap, local, no probes.

    Leaves out what the export settings' own warnings already say, the
    endpoint probe and the handler timing.
    """
    findings = environment_findings()
    findings += logging_findings()
    findings += gevent_findings()
    findings += server_findings()
    findings += falcon_findings()
    if telemetry is not None and not getattr(telemetry, "disabled", False):
        findings += pipeline_findings(telemetry)

    return _unique(findings)


def check(
    telemetry: Any = None,
    *,
    network: bool = True,
    timeout_seconds: float = 3.0,
    probe_handlers: bool = False,
    slow_handler_millis: float = _SLOW_HANDLER_MILLIS,
    server_command: str | Sequence[str] | None = None,
) -> list[Finding]:
    """Every check, in this process; `telemetry` defaults to the current one."""
    from . import _state

    if telemetry is None:
        telemetry = _state.current()
    findings: list[Finding] = []
    if telemetry is not None:
        settings = telemetry.settings
    else:
        settings, findings = _load_settings_quietly()

    findings += environment_findings()
    findings += _export_setting_findings(settings)
    findings += logging_findings(
        probe_handlers=probe_handlers, slow_handler_millis=slow_handler_millis
    )
    findings += gevent_findings()
    findings += server_findings(
        server_command, shutdown_timeout_seconds=settings.shutdown_timeout_seconds
    )
    if server_command is not None:
        findings += server_findings()
    findings += falcon_findings()
    if telemetry is not None and not telemetry.disabled:
        findings += pipeline_findings(telemetry)
        # Not among the init-time checks: init_telemetry() warned already.
        findings += silent_provider_findings(telemetry)
    if network and not settings.sdk_disabled:
        findings += endpoint_findings(settings, timeout_seconds)

    return _unique(findings)


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    result = []
    for finding in findings:
        key = (finding.code, finding.problem)
        if key not in seen:
            seen.add(key)
            result.append(finding)

    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `showmax-otel doctor` options."""
    parser.add_argument(
        "target",
        nargs="?",
        metavar="MODULE:APP",
        help="import this application (as a server would) and check the live "
        "configuration it leaves: handlers, providers, patching",
    )
    parser.add_argument(
        "--server",
        metavar="COMMAND",
        help="the uWSGI or gunicorn command line the service runs with (ini "
        'files it names are read), e.g. "uwsgi --ini app.ini"',
    )
    parser.add_argument(
        "--uwsgi-ini",
        metavar="FILE",
        help="a uWSGI ini file to check (same as --server 'uwsgi --ini FILE')",
    )
    parser.add_argument(
        "--no-network",
        action="store_true",
        help="do not send the empty export request that checks each endpoint",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="how long each endpoint may take to answer (default 3)",
    )
    parser.add_argument(
        "--no-handler-probe",
        action="store_true",
        help="do not time one record through each logging handler of MODULE:APP",
    )
    parser.add_argument(
        "--slow-handler-millis",
        type=float,
        default=_SLOW_HANDLER_MILLIS,
        metavar="MS",
        help="a handler slower than this for one record is reported "
        f"(default {_SLOW_HANDLER_MILLIS:g})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the findings as a JSON list"
    )


def run(args: argparse.Namespace) -> int:
    """Run the checks and print the findings; 1 when there is any, 0 otherwise."""
    if args.target:
        error = _import_target(args.target)
        if error is not None:
            print(f"showmax-otel doctor: {error}", file=sys.stderr)
            return 2
    server = args.server
    if args.uwsgi_ini:
        server = ["uwsgi", "--ini", args.uwsgi_ini]
    findings = check(
        network=not args.no_network,
        timeout_seconds=args.timeout,
        probe_handlers=bool(args.target) and not args.no_handler_probe,
        slow_handler_millis=args.slow_handler_millis,
        server_command=server,
    )
    if args.target:
        findings += _target_findings(args.target)

    if args.json:
        print(json.dumps([asdict(finding) for finding in findings], indent=2))
    else:
        for number, finding in enumerate(findings, start=1):
            print(f"{number}. {finding}")
        count = len(findings)
        summary = "no findings" if not count else f"{count} finding" + "s" * (count > 1)
        print(f"showmax-otel doctor: {summary}")

    return 1 if findings else 0


def _import_target(target: str) -> str | None:
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        # As a server does: the application is found from where it starts.
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure is the answer
        return f"cannot import {module_name!r}: {type(error).__name__}: {error}"
    if attribute and not hasattr(module, attribute):
        return f"module {module_name!r} has no attribute {attribute!r}"

    return None


def _target_findings(target: str) -> list[Finding]:
    from . import _state

    if _state.current() is not None or os.environ.get("OTEL_PYTHON_DISTRO"):
        return []

    return [
        Finding(
            "not-initialized",
            f"importing {target} did not call init_telemetry(): nothing is "
            "exported unless a server hook or opentelemetry-instrument does",
            "call showmax_otel.init_telemetry() in the application module (or "
            "the server's post-fork hook), or start the server with "
            "opentelemetry-instrument and OTEL_PYTHON_DISTRO=showmax_otel",
        )
    ]
