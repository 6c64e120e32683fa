"""The Telemetry object: one per process tree, built by `init_telemetry()`."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
import warnings
from typing import Any

from opentelemetry.sdk.trace.sampling import Sampler

from . import _state
from ._pipeline import (
    ExportQueue,
    GuardedLogRecordProcessors,
    GuardedSpanProcessors,
    LogQueueProcessor,
    SpanQueueProcessor,
)
from ._redaction import Redactor
from .options import ConfigurationWarning, Settings, load_settings

__all__ = ["Telemetry", "init_telemetry", "shutdown_telemetry"]

_logger = logging.getLogger("showmax_otel")

try:
    from importlib.metadata import version as _dist_version

    _VERSION = _dist_version("showmax-otel")
except Exception:  # noqa: BLE001 - running from a source tree that is not installed
    _VERSION = "0.0.0"


class Telemetry:
    """The process's telemetry pipeline, as `init_telemetry()` built it.

    `tracer_provider` and `logger_provider` are the SDK providers (None when
    the SDK is disabled). `stats()` reports, per signal, what was emitted,
    exported, dropped (by reason), still queued, and how many exports failed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.disabled = settings.sdk_disabled
        self.tracer_provider: Any = None
        self.logger_provider: Any = None
        self.bridge: Any = None
        self.redactor = Redactor(settings.redacted_params, settings.redacted_headers)
        self._queues: dict[str, ExportQueue] = {}
        self._resource_pid = os.getpid()
        self._internal_errors = 0
        self._errors_reported: set[str] = set()
        self._warned_changes: set[tuple[str, ...]] = set()
        self._shut_down = False
        # Set by `_servers.after_init()`: the uWSGI and gunicorn hooks in place.
        self.server_hooks: Any = None

    # -- public ----------------------------------------------------------------

    def force_flush(self, timeout_seconds: float = 5.0) -> bool:
        """Export what is queued now; True when all of it was exported in time."""
        deadline = time.monotonic() + timeout_seconds
        ok = True
        for queue in self._queues.values():
            ok = queue.force_flush(max(deadline - time.monotonic(), 0.0)) and ok

        return ok

    def shutdown(self, timeout_seconds: float = 5.0) -> bool:
        """Flush within the bound and stop; True when nothing was lost."""
        if self._shut_down:
            return True
        self._shut_down = True
        deadline = time.monotonic() + timeout_seconds
        ok = True
        # Spans first: a request's records are usually queued after its span
        # ends, but the logs queue drains faster (shorter schedule delay).
        for queue in self._queues.values():
            ok = queue.shutdown(max(deadline - time.monotonic(), 0.0)) and ok

        return ok

    def stats(self) -> dict[str, Any]:
        """Counts for this process, per signal: logs and spans."""
        result: dict[str, Any] = {
            name: queue.stats() for name, queue in self._queues.items()
        }
        result.setdefault("logs", _empty_stats())
        result.setdefault("spans", _empty_stats())
        result["internal_errors"] = self._internal_errors

        return result

    # -- internal ----------------------------------------------------------------

    def report_internal_error(self, what: str, error: BaseException) -> None:
        """Count an internal failure and log it once per kind.

        With `raise_internal_errors` (test suites) it is raised instead, so
        that it cannot hide.
        """
        self._internal_errors += 1
        if self.settings.raise_internal_errors:
            raise error
        if what in self._errors_reported:
            return
        self._errors_reported.add(what)
        _logger.error(
            "showmax_otel: internal error while %s (reported once; telemetry "
            "goes on): %r",
            what,
            error,
            exc_info=error,
        )

    def warn_if_changed(self, overrides: dict[str, Any]) -> None:
        try:
            asked = load_settings(overrides)
        except (TypeError, ValueError):
            raise
        changed = tuple(
            name for name in asked.changed_from(self.settings) if name in overrides
        )
        if changed and changed not in self._warned_changes:
            self._warned_changes.add(changed)
            warnings.warn(
                "init_telemetry() was already called; these options differ from "
                "the first call and are ignored: " + ", ".join(changed),
                ConfigurationWarning,
                stacklevel=3,
            )

    def check_process(self) -> None:
        """Notice a fork before the next span or record takes its resource.

        Runs before each span is created (through the sampler) and before
        each record is translated (in the bridge): a getpid() and a compare.
        """
        if os.getpid() != self._resource_pid:
            self.on_new_process()

    def on_queue_forked(self, signal: str, inherited: int) -> None:
        """A queue noticed it runs in a forked child and left the parent's
        records to the parent."""
        self.on_new_process()

    def on_new_process(self) -> None:
        """In a forked child: give the resource this process's pid and instance id."""
        pid = os.getpid()
        if pid == self._resource_pid:
            return
        self._resource_pid = pid
        from ._servers import process_resource

        # A pre-fork server may have reconfigured logging in the parent
        # through a reference taken before init (gunicorn's dictConfig on
        # reload): the bridge must be back before this worker's first record.
        if self.bridge is not None:
            self.bridge.ensure()
        # Each worker is an instance of its own (the SDK's fork hook does
        # the same): its pid, and a service.instance.id of its own.
        update = process_resource()
        # The SDK does this itself from os.register_at_fork, which uWSGI's
        # fork never triggers; the method is private, and the servers' tests
        # pin that each worker reports its own pid.
        for provider in (self.tracer_provider, self.logger_provider):
            if provider is not None and hasattr(provider, "_update_resource"):
                provider._update_resource(update)


def _empty_stats() -> dict[str, Any]:
    return {
        "emitted": 0,
        "exported": 0,
        "queued": 0,
        "dropped": {},
        "export_failures": 0,
        "spooled": 0,
        "replayed": 0,
        "truncated": 0,
    }


def _build(settings: Settings) -> Telemetry:
    telemetry = Telemetry(settings)
    if telemetry.disabled:
        return telemetry

    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider, set_logger_provider
    from opentelemetry._logs._internal import ProxyLoggerProvider
    from opentelemetry.sdk.resources import Resource

    from . import _exporters
    from ._logging import install_bridge

    # The SDK's providers, with an after-fork step that cannot switch
    # greenlets in a child forked under gevent (see `_servers`).
    from ._servers import ForkSafeLoggerProvider as LoggerProvider
    from ._servers import ForkSafeTracerProvider as TracerProvider

    attributes: dict[str, Any] = dict(settings.resource_attributes)
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    attributes.update(
        {
            "process.pid": os.getpid(),
            "telemetry.distro.name": "showmax-otel",
            "telemetry.distro.version": _VERSION,
        }
    )
    resource = Resource.create(attributes)

    # Import the exporter modules now, in the caller, so that the first
    # export does not import requests or grpc on the worker thread while
    # the application holds the import lock.
    for signal in ("traces", "logs"):
        _exporters.preload(settings, signal)
    _exporters.warn_about_settings(settings)

    report = telemetry.report_internal_error

    def queue(name: str, signal: str, prefix: str) -> ExportQueue:
        return ExportQueue(
            name,
            lambda: _exporters.build_exporter(settings, signal),
            max_queue_size=getattr(settings, f"{prefix}_max_queue_size"),
            max_batch_size=getattr(settings, f"{prefix}_max_export_batch_size"),
            schedule_delay_seconds=getattr(settings, f"{prefix}_schedule_delay_millis")
            / 1000,
            on_new_process=telemetry.on_queue_forked,
            may_start_worker=_may_start_worker,
            report_interval_seconds=settings.report_interval_seconds,
            on_internal_error=lambda what, error: _report_quietly(report, what, error),
        )

    tracer_provider: Any
    logger_provider: Any
    current = trace.get_tracer_provider()
    if isinstance(current, trace.ProxyTracerProvider):
        tracer_provider = TracerProvider(
            resource=resource,
            sampler=_ForkAwareSampler(_sampler(settings), telemetry.check_process),
            shutdown_on_exit=False,
            active_span_processor=GuardedSpanProcessors(report),
        )
        trace.set_tracer_provider(tracer_provider)
        spans_welcome = True
    else:
        # Someone configured tracing before us (another distro, a test);
        # ship through their provider rather than fight over the global.
        tracer_provider = current
        spans_welcome = _adopt(
            current,
            "TracerProvider",
            "add_span_processor",
            exporting=settings.traces_exporter != "none",
        )
    telemetry.tracer_provider = tracer_provider
    if settings.traces_exporter != "none" and spans_welcome:
        telemetry._queues["spans"] = queue("spans", "traces", "bsp")
        tracer_provider.add_span_processor(
            SpanQueueProcessor(telemetry._queues["spans"])
        )

    current_logs = get_logger_provider()
    if isinstance(current_logs, ProxyLoggerProvider):
        logger_provider = LoggerProvider(
            resource=resource,
            shutdown_on_exit=False,
            multi_log_record_processor=GuardedLogRecordProcessors(report),
        )
        set_logger_provider(logger_provider)
        logs_welcome = True
    else:
        logger_provider = current_logs
        logs_welcome = _adopt(
            current_logs,
            "LoggerProvider",
            "add_log_record_processor",
            exporting=settings.logs_exporter != "none",
        )
    telemetry.logger_provider = logger_provider
    if settings.logs_exporter != "none" and logs_welcome:
        telemetry._queues["logs"] = queue("logs", "logs", "blrp")
        logger_provider.add_log_record_processor(
            LogQueueProcessor(telemetry._queues["logs"])
        )

    telemetry.bridge = install_bridge(
        logger_provider,
        level=settings.log_level,
        extra_loggers=settings.bridge_loggers,
        max_attribute_bytes=settings.max_attribute_bytes,
        redactor=telemetry.redactor,
        on_error=report,
        before_emit=telemetry.check_process,
    )

    return telemetry


def _adopt(provider: Any, kind: str, method: str, *, exporting: bool) -> bool:
    """Say what becomes of a provider set before init; whether it takes our
    processor.

    A no-op provider (or another API-only implementation) set on purpose
    cannot take one: that signal stays as the application set it. With the
    signal's exporter set to "none" nothing is added, and nothing is said.
    """
    takes = callable(getattr(provider, method, None))
    if not exporting:
        return takes
    name = type(provider).__name__
    if takes:
        message = (
            f"a {kind} ({name}) was set before init_telemetry(); "
            "showmax_otel adds its processor to it"
        )
    else:
        message = (
            f"the {kind} set before init_telemetry() ({name}) takes no "
            "processors; showmax_otel exports nothing through it"
        )
    warnings.warn(message, ConfigurationWarning, stacklevel=_caller_stacklevel())

    return takes


def _caller_stacklevel() -> int:
    """The `stacklevel` that makes a warning point at the first frame outside
    this package: the application's call to `init_telemetry()` (or whatever
    ran the configurator), not the package's own lines."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    # Level 1 is the function calling warnings.warn(), our caller.
    frame: Any = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back
        level += 1

    return level


def _report_quietly(report: Any, what: str, error: BaseException) -> None:
    """Internal errors on the export thread are never raised: nobody would see."""
    try:
        report(what, error)
    except BaseException:  # noqa: BLE001 - counted already by report()
        _logger.error("showmax_otel: internal error while %s: %r", what, error)


def _may_start_worker() -> bool:
    from . import _servers

    return _servers.may_start_worker()


class _ForkAwareSampler(Sampler):
    """Delegates to the configured sampler after checking for a fork.

    The sampler is the one hook the SDK calls before it creates a span, and
    so before the span takes the provider's resource: checking here gives
    the first span of a forked uWSGI worker (whose fork runs no Python
    at-fork hook) its own `process.pid`.
    """

    def __init__(self, inner: Any, check_process: Any) -> None:
        self._inner = inner
        self._check_process = check_process

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        self._check_process()
        return self._inner.should_sample(*args, **kwargs)

    def get_description(self) -> str:
        return str(self._inner.get_description())


def _sampler(settings: Settings) -> Sampler:
    from opentelemetry.sdk.trace import sampling

    ratio = settings.traces_sampler_arg
    return {
        "always_on": lambda: sampling.ALWAYS_ON,
        "always_off": lambda: sampling.ALWAYS_OFF,
        "traceidratio": lambda: sampling.TraceIdRatioBased(ratio),
        "parentbased_always_on": lambda: sampling.ParentBased(sampling.ALWAYS_ON),
        "parentbased_always_off": lambda: sampling.ParentBased(sampling.ALWAYS_OFF),
        "parentbased_traceidratio": lambda: sampling.ParentBased(
            sampling.TraceIdRatioBased(ratio)
        ),
    }[settings.traces_sampler]()


def init_telemetry(**options: Any) -> Telemetry:
    """Set up tracing and log shipping for this process; once, whoever calls.

    Every option is keyword-only and falls back to its environment variable,
    then to a default (see `showmax_otel.options.Settings`). The first call
    builds one TracerProvider, one LoggerProvider, their export queues and
    one log bridge handler; later calls return the same object and change
    nothing (with a warning naming the options they asked to change).
    """
    existing = _state.current()
    if existing is not None:
        if options:
            existing.warn_if_changed(options)
        return existing

    settings = load_settings(options)
    telemetry, built = _state.configure_once(lambda: _build(settings))
    if not built:
        if options:
            telemetry.warn_if_changed(options)
        return telemetry

    if not telemetry.disabled:
        atexit.register(_shutdown_at_exit)
        _after_build(telemetry)

    return telemetry


def _after_build(telemetry: Telemetry) -> None:
    """The integrations: each guards itself and reports, never raises."""
    from . import _servers, doctor, server_logs

    _servers.after_init(telemetry)
    server_logs.install_uwsgi_logvars(telemetry)
    if telemetry.settings.instrument_falcon:
        from .falcon import _instrument_falcon_class

        _instrument_falcon_class(telemetry)

    # The same cheap, local checks as `showmax-otel doctor`, once, at init:
    # a duplicate handler or late monkey-patching is best heard of at start.
    for finding in doctor.init_time_findings(telemetry):
        _logger.warning("showmax_otel: %s (fix: %s)", finding.problem, finding.fix)


def _shutdown_at_exit() -> None:
    telemetry = _state.current()
    if telemetry is not None:
        telemetry.shutdown(telemetry.settings.shutdown_timeout_seconds)


def shutdown_telemetry(timeout_seconds: float = 5.0) -> bool:
    """Flush and stop within `timeout_seconds`; True when nothing was lost.

    Harmless before `init_telemetry()` and when called twice.
    """
    telemetry = _state.current()
    if telemetry is None:
        return True

    return telemetry.shutdown(timeout_seconds)
