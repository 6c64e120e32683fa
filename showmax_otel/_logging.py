"""The one log bridge handler, the filters that stop feedback, `get_logger`.

The bridge is the handler of opentelemetry-instrumentation-logging (the
SDK's own `LoggingHandler` is deprecated), subclassed to:

- ship each record once, even when it passes two loggers the bridge sits
  on (a non-propagating logger listed in `bridge_loggers` whose propagate
  flag is later turned on);
- never ship records of our own loggers, of `opentelemetry.*` or of the
  HTTP and gRPC clients the exporters use, so a failing collector cannot
  feed itself;
- turn any `extra` value into something OTLP can carry, and cut bodies and
  attributes that would make an export request too large;
- count and report its own failures instead of printing a traceback into
  the application's stderr for every record.

`install_bridge()` keeps exactly one bridge on the root logger whatever
the application does afterwards: `basicConfig(force=True)`, `dictConfig`,
`fileConfig`, the logging instrumentor, or another init.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import logging.config
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from opentelemetry._logs import LogRecord as APILogRecord
from opentelemetry._logs import NoOpLogger
from opentelemetry._logs import get_logger as _otel_logger
from opentelemetry.context import get_current
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.instrumentation.logging.handler import (
    LoggingHandler as _InstrumentationHandler,
)
from opentelemetry.sdk._logs import Logger as SDKLogger
from opentelemetry.sdk._logs import LogRecordLimits, ReadWriteLogRecord

from . import _state
from ._redaction import Redactor

__all__ = ["BridgeHandler", "get_logger", "install_bridge"]

# Top-level logger names whose records never reach the bridge.
_NEVER_BRIDGED = frozenset(
    {
        "showmax_otel",
        "opentelemetry",
        "urllib3",
        "requests",
        "grpc",
        "charset_normalizer",
    }
)
# Set on a LogRecord by the bridge, so that a record met again (on a
# non-propagating logger that is bridged too) ships once; excluded from its
# attributes. Limitation: a formatter that prints every field of a record
# (a JSON formatter walking record.__dict__) shows it as well.
_SHIPPED = "_showmax_otel_shipped"
_TRUNCATION_MARK = "...[truncated by showmax_otel]"
_CORRELATION_FIELDS = (
    "otelTraceID",
    "otelSpanID",
    "otelTraceSampled",
    "otelServiceName",
)
_MAX_INT = 2**63 - 1
# How many SDK loggers the bridge keeps at hand, by logger name. Names are
# few in practice; past this many, the rest are asked of the provider for
# each record. (An application that makes a logger per request, a name with
# an id in it, grows `logging`'s own table and the SDK provider's anyway.)
_MAX_SDK_LOGGERS = 1024
# The OpenTelemetry names of the levels whose Python names differ.
_SEVERITY_TEXT = {logging.WARNING: "WARN", logging.CRITICAL: "FATAL"}


def _is_bridge(handler: logging.Handler) -> bool:
    """Any OpenTelemetry logging bridge: ours, the instrumentation's, the SDK's."""
    if isinstance(handler, _InstrumentationHandler):
        return True
    cls = type(handler)
    return cls.__name__ == "LoggingHandler" and cls.__module__.startswith(
        "opentelemetry.sdk._logs"
    )


def _clean_value(value: Any, limit: int) -> Any:
    """A value OTLP can carry: str, bool, int, float or a list of one of them."""
    if isinstance(value, bool) or value is None:
        return value if value is not None else "None"
    if isinstance(value, int):
        return value if -_MAX_INT - 1 <= value <= _MAX_INT else str(value)
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, bytes):
        return _cut(value.decode("utf-8", "backslashreplace"), limit)
    if isinstance(value, (list, tuple)):
        items = [_clean_value(item, limit) for item in value]
        if items and all(isinstance(i, str) for i in items):
            return items
        if items and len({type(i) for i in items}) == 1:
            return items
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the record
        text = f"<unrepresentable {type(value).__name__}>"

    return _cut(text, limit)


def exception_stack(
    exc_type: type[BaseException] | None,
    error: BaseException | None,
    tb: Any,
) -> str:
    """The formatted traceback, as `traceback.format_exception` writes it,
    without the `^^^^` lines that Python 3.11 and newer put under a frame.

    Those markers cost a parse of every frame's source line (about 0.1 ms
    for a short Falcon stack, more than half of the formatting) and say
    nothing a reader of a log backend needs that the line itself does not.
    Text prepared by `stack_prepared` for this very exception and traceback
    is used as it is.
    """
    prepared = _PREPARED_STACK.get()
    if prepared is not None and prepared[0] is error and prepared[1] is tb:
        return prepared[2]
    # What format_exception() builds: the type is taken from the value.
    summary = traceback.TracebackException(
        type(error),  # type: ignore[arg-type]
        error,  # type: ignore[arg-type]
        tb,
        compact=True,
    )
    if _FRAMES_HAVE_COLUMNS:
        _forget_columns(summary)

    return "".join(summary.format())


# A failed request needs its traceback twice, for its span's exception
# event and for its ERROR record: the text formatted for the first is
# handed to the second while that record is logged, and forgotten after.
# Nothing is kept on the exception (it must stay picklable, and a note
# added to it later must show).
_PREPARED_STACK: contextvars.ContextVar[tuple[BaseException, Any, str] | None] = (
    contextvars.ContextVar("showmax_otel_prepared_stack", default=None)
)


@contextlib.contextmanager
def stack_prepared(error: BaseException, text: str) -> Iterator[None]:
    """Within the block, `exception_stack` of `error` is `text`."""
    token = _PREPARED_STACK.set((error, error.__traceback__, text))
    try:
        yield
    finally:
        _PREPARED_STACK.reset(token)


# Python 3.11 added column positions to frame summaries; a frame without
# them is formatted as before, with no marker line.
_FRAMES_HAVE_COLUMNS = sys.version_info >= (3, 11)


def _forget_columns(summary: traceback.TracebackException) -> None:
    """Drop the column positions of every frame, chained exceptions included."""
    seen: set[int] = set()
    pending = [summary]
    # Finite: each exception is summarised once (TracebackException guards
    # against cycles itself), and `seen` keeps a shared one from a second visit.
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for frame in current.stack:
            frame.colno = None  # type: ignore[attr-defined]
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
        pending.extend(getattr(current, "exceptions", None) or ())


def _regularize_keys(attributes: dict[Any, Any], keys: list[Any], limit: int) -> None:
    """Attribute keys as the SDK would have them: an `extra` key that is not
    a string is named by its str(), an empty or None one is left out."""
    for key in keys:
        value = attributes.pop(key)
        if key is None or key == "":
            continue
        try:
            name = str(key)
        except Exception:  # noqa: BLE001 - an unnameable key is left out
            continue
        if name and name not in attributes:
            attributes[name] = _clean_value(value, limit)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit < 2 * len(_TRUNCATION_MARK):
        # Too short to say it was cut and keep something: only cut.
        return text[:limit]
    return text[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


class BridgeHandler(_InstrumentationHandler):
    """The log bridge: Python `logging` records to the OpenTelemetry pipeline."""

    def __init__(
        self,
        *,
        logger_provider: Any,
        level: int = logging.NOTSET,
        max_attribute_bytes: int = 65536,
        redactor: Redactor | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
        before_emit: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(level=level, logger_provider=logger_provider)
        self._before_emit = before_emit
        # The upstream handler formats through self.format() when a formatter
        # is set: ours turns a failed %-format into a readable body.
        self.setFormatter(_MessageFormatter())
        self._limit = max_attribute_bytes
        self._redact = (redactor or Redactor((), ())).text
        self._on_error = on_error
        self._emitting: contextvars.ContextVar[bool] = contextvars.ContextVar(
            "showmax_otel_bridge_emitting", default=False
        )
        # The SDK logger of each logging name, asked of the provider once:
        # the provider hands back the same logger every time, but only after
        # a cache lookup, a lock and a WeakSet insertion, for every record.
        self._sdk_loggers: dict[str, SDKLogger] = {}

    def handle(self, record: logging.LogRecord) -> bool:
        """`Handler.handle` without the handler's lock.

        Emitting appends to the export queue, which is safe from any thread
        or greenlet; under gevent the lock is a Python-level RLock, taken
        and released for every record, for nothing.
        """
        accepted = self.filter(record)
        if isinstance(accepted, logging.LogRecord):
            record = accepted
        if accepted:
            self.emit(record)
        return bool(accepted)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get(_SHIPPED):
            return False
        if record.name.partition(".")[0] in _NEVER_BRIDGED:
            return False
        record.__dict__[_SHIPPED] = True

        return super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._before_emit()
            if self._emitting.get():
                # Logged while this thread or greenlet emits (from an extra
                # value's __repr__, say): upstream's path, whose own guard
                # stops a loop.
                super().emit(record)
                return
            token = self._emitting.set(True)
            try:
                self._emit(record)
            finally:
                self._emitting.reset(token)
        except Exception:  # noqa: BLE001 - handleError counts and reports it
            self.handleError(record)

    def sole_handler_of(
        self, logger: logging.Logger, harmless: Iterable[object] = ()
    ) -> bool:
        """Whether this bridge, and nothing else, would get `logger`'s records.

        No other handler on the way up, no filter on `logger` (the only
        logger whose filters a record meets) nor on the bridge, except the
        `harmless` ones the caller knows let its record through: then a
        record built by `emit_direct` ships exactly what `logger.log()`
        would have shipped, and nobody else would have seen it.
        """
        allowed = set(harmless)
        if any(f not in allowed for f in self.filters) or logger.filters:
            return False
        if logger.disabled:
            return False  # logging drops its records: the caller's path does too
        # A record factory or a Logger class of the application's may add
        # fields to every record: only logging itself builds those.
        if (
            logging.getLogRecordFactory() is not logging.LogRecord
            or type(logger).makeRecord is not logging.Logger.makeRecord
        ):
            return False
        found = False
        current: logging.Logger | None = logger
        while current is not None:
            for handler in current.handlers:
                if handler is self:
                    found = True
                elif type(handler) is not logging.NullHandler:
                    # A library's NullHandler (Falcon 3 puts one on
                    # "falcon") does nothing with a record: it may stay.
                    return False
            if not current.propagate:
                break
            current = current.parent

        return found

    def emit_direct(
        self, name: str, level: int, body: str, attributes: dict[str, Any]
    ) -> None:
        """Ship a record of logger `name` without a `logging.LogRecord`.

        For the package's own records (the access log) when `sole_handler_of`
        says no one else listens: building a `LogRecord` and walking the
        logger tree costs as much again as shipping it. The caller checked
        the logger's level; `attributes` must hold values OTLP carries
        (str, int, float, bool), already cut to size.
        """
        if level < self.level:
            return
        limit = self._limit
        for key, value in attributes.items():
            if type(value) is str and len(value) > limit:
                attributes[key] = _cut(value, limit)
        try:
            self._before_emit()
            logger = self._sdk_logger(name)
            if isinstance(logger, NoOpLogger):
                return
            now = time.time_ns()
            translated = APILogRecord(
                timestamp=now,
                observed_timestamp=now,
                context=get_current(),
                severity_text=_SEVERITY_TEXT.get(level) or logging.getLevelName(level),
                severity_number=std_to_otel(level),
                body=_cut(body, limit),
                attributes=attributes,
            )
            self._ship(logger, translated)
        except Exception as error:  # noqa: BLE001 - counted and reported
            if self._on_error is not None:
                self._on_error("shipping a log record", error)

    def _emit(self, record: logging.LogRecord) -> None:
        """What upstream's `emit` does, shipped through `_ship`."""
        logger = self._sdk_logger(record.name)
        if isinstance(logger, NoOpLogger):
            return
        self._ship(logger, self._translate(record))

    def _sdk_logger(self, name: str) -> Any:
        """The OpenTelemetry logger records of logger `name` go to.

        Only the SDK's own loggers are kept: a no-op or proxy logger (the
        global provider not set yet, or disabled) is asked for again the
        next time.
        """
        logger = self._sdk_loggers.get(name)
        if logger is not None:
            return logger
        found = _otel_logger(name, logger_provider=self._logger_provider)
        if isinstance(found, SDKLogger) and len(self._sdk_loggers) < _MAX_SDK_LOGGERS:
            self._sdk_loggers[name] = found
        return found

    def _ship(self, logger: Any, translated: Any) -> None:
        """Hand a translated record to the SDK logger, cleaned once.

        The SDK wraps a record's attributes in a new `BoundedAttributes`,
        which checks and copies every value again under a lock: a third of
        what a record costs here. Ours are already values OTLP carries, cut
        to `max_attribute_bytes`, so when the SDK's limits could not change
        anything (no length limit, no more attributes than the count limit)
        the SDK logger gets the `ReadWriteLogRecord` it would have built,
        with those attributes as a plain dict. Otherwise the SDK's path.
        """
        attributes = translated.attributes
        # The limits this logger applies: its provider's, or the OTEL_*_LIMIT
        # variables'. Private in the SDK; without them, the SDK's own path.
        limits = getattr(logger, "_log_record_limits", None)
        if not isinstance(logger, SDKLogger) or not isinstance(
            limits, LogRecordLimits
        ):
            logger.emit(translated)
            return
        count_limit = limits.max_log_record_attributes
        if (
            limits.max_log_record_attribute_length is not None
            or (
                attributes is not None
                and count_limit is not None
                and len(attributes) > count_limit
            )
        ):
            logger.emit(translated)
            return
        translated.attributes = None
        writable = ReadWriteLogRecord(
            log_record=translated,
            resource=logger.resource,
            instrumentation_scope=logger.instrumentation_scope,
            limits=limits,
        )
        writable.log_record.attributes = attributes
        # The SDK logger takes a ReadWriteLogRecord as it is (its annotation
        # names only the API record); tests/test_telemetry.py pins that.
        logger.emit(writable)  # type: ignore[arg-type]

    def _get_attributes(
        self, record: logging.LogRecord
    ) -> tuple[dict[str, Any], str | None]:
        # Upstream formats the traceback itself, every time; the exception
        # attributes are set below, from one formatting per exception.
        exc_info = record.exc_info
        record.exc_info = None
        try:
            found, event_name = super()._get_attributes(record)
        finally:
            record.exc_info = exc_info
        attributes: dict[str, Any] = found
        attributes.pop(_SHIPPED, None)
        # Log correlation (OTEL_PYTHON_LOG_CORRELATION) copies the ids into
        # every record for console formats; the OTLP record has them already.
        if "otelTraceID" in attributes:
            for injected in _CORRELATION_FIELDS:
                attributes.pop(injected, None)
        limit = self._limit
        irregular_keys = None
        for key, value in attributes.items():
            if type(key) is not str or not key:
                irregular_keys = [*(irregular_keys or ()), key]
                continue
            # Runs for every attribute of every record: the values OTLP
            # carries as they are (short strings, floats, bools, int64s)
            # are only type-checked here.
            kind = type(value)
            if kind is str:
                if len(value) > limit:
                    attributes[key] = _cut(value, limit)
            elif kind is float or kind is bool:
                continue
            elif kind is not int or not -_MAX_INT - 1 <= value <= _MAX_INT:
                attributes[key] = _clean_value(value, limit)
        if irregular_keys is not None:
            _regularize_keys(attributes, irregular_keys, limit)
        if exc_info:
            exc_type, error, tb = exc_info
            if exc_type is not None:
                attributes["exception.type"] = exc_type.__name__
            if error is not None:
                # The semantic conventions want the whole message; upstream
                # takes args[0] only, which loses it for most exceptions.
                message = _safe_str(error)
                attributes["exception.message"] = _cut(self._redact(message), limit)
            if tb is not None:
                stack = exception_stack(exc_type, error, tb)
                attributes["exception.stacktrace"] = _cut(self._redact(stack), limit)

        return attributes, event_name

    def _translate(self, record: logging.LogRecord) -> Any:
        log_record = super()._translate(record)
        body = log_record.body
        if isinstance(body, str):
            if len(body) > self._limit:
                log_record.body = _cut(body, self._limit)
        elif body is not None:
            log_record.body = _clean_value(body, self._limit)

        return log_record

    def handleError(self, record: logging.LogRecord) -> None:
        error = _current_exception()
        if self._on_error is not None and error is not None:
            self._on_error("shipping a log record", error)
        else:
            super().handleError(record)

    def flush(self) -> None:
        """Do nothing: the pipeline flushes with its own bounds.

        The upstream handler starts a new thread on every flush, and
        `logging.shutdown()` flushes every handler at exit.
        """


class _MessageFormatter(logging.Formatter):
    """The record's message alone, even when its arguments do not fit.

    `logger.warning("%d items", "many")` makes the standard library print a
    "--- Logging error ---" block to stderr and lose the record; the bridge
    ships it instead, with the format and the arguments side by side.
    """

    def format(self, record: logging.LogRecord) -> str:
        try:
            return record.getMessage()
        except Exception as error:  # noqa: BLE001 - the caller's bug, not ours
            return (
                f"{_safe_repr(record.msg)} % {_safe_repr(record.args)} "
                f"[the arguments do not fit the format: {type(error).__name__}]"
            )


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the record
        return f"<unrepresentable {type(value).__name__}>"


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the record
        return f"<unprintable {type(value).__name__}>"


def _current_exception() -> BaseException | None:
    import sys

    return sys.exc_info()[1]


class _OwnReportsFallback(logging.StreamHandler):
    """Prints the package's own warnings when nothing else would.

    The bridge never ships `showmax_otel.*` records, and once it sits on
    the root logger Python's last-resort handler stays silent, so in an
    application that configured no logging (the common case under uWSGI)
    drop reports and internal errors would reach nobody. This handler, on
    the `showmax_otel` logger, writes them to stderr unless a handler of
    the application's own is on the root logger to do it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        # The record reached the `showmax_otel` logger; it goes on to the root
        # when that logger propagates, and a handler of the application's
        # there prints it.
        if logging.getLogger("showmax_otel").propagate and any(
            not _is_bridge(h) for h in logging.getLogger().handlers
        ):
            return False

        return super().filter(record)


class _Bridge:
    """Keeps one bridge handler where it belongs."""

    def __init__(self, handler: BridgeHandler, extra_loggers: Iterable[str]) -> None:
        self.handler = handler
        self.extra_loggers = tuple(extra_loggers)
        self.removed_foreign = 0

    def ensure(self) -> None:
        root = logging.getLogger()
        handler = self.handler
        for other in list(root.handlers):
            if other is not handler and _is_bridge(other):
                root.removeHandler(other)
                self.removed_foreign += 1
        if handler not in root.handlers:
            root.addHandler(handler)
        for name in self.extra_loggers:
            logger = logging.getLogger(name)
            handlers = logger.handlers
            if handlers and handlers[-1] is handler:
                continue
            # Last, after the server's own handlers: gunicorn gives a
            # request's `wsgi.errors` the stream of every handler of
            # "gunicorn.error" but the first, which it takes for its stderr
            # one; with the bridge first, stderr was written twice.
            logger.removeHandler(handler)
            logger.addHandler(handler)
        _point_instrumentor_at(handler)

    def remove(self) -> None:
        for name in ("", *self.extra_loggers):
            logging.getLogger(name or None).removeHandler(self.handler)


def _point_instrumentor_at(handler: BridgeHandler) -> None:
    """Make the logging instrumentor treat our handler as its own.

    Its uninstrument() then removes ours, and an instrument() after ours
    (the `opentelemetry-instrument` CLI loads it) gets our handler back from
    the function it calls to build one, instead of adding a second bridge.
    Both names are private to the instrumentation; the tests that instrument
    logging after init pin them.
    """
    import opentelemetry.instrumentation.logging as instrumentation

    instrumentor: Any = instrumentation.LoggingInstrumentor
    instrumentor._logging_handler = handler
    original = instrumentation._setup_logging_handler
    if getattr(original, "_showmax_otel", False):
        return

    def setup_logging_handler(*args: Any, **kwargs: Any) -> Any:
        telemetry = _state.current()
        if telemetry is not None and telemetry.bridge is not None:
            telemetry.bridge.ensure()
            return telemetry.bridge.handler
        return original(*args, **kwargs)

    setup_logging_handler._showmax_otel = True  # type: ignore[attr-defined]
    instrumentation._setup_logging_handler = setup_logging_handler

    def undo() -> None:
        instrumentation._setup_logging_handler = original

    _state.on_reset(undo)


def _make_foreign_bridges_ship_once() -> None:
    """Let other OpenTelemetry bridge handlers ship a record only once too.

    A hand-added `LoggingHandler` (the instrumentation's or the SDK's
    deprecated one) on a named logger would ship every record a second
    time. Their `filter` now honours and sets the same mark as ours, so
    whichever bridge sees a record first ships it and the others skip it.
    """
    classes: list[type] = [_InstrumentationHandler]
    try:
        from opentelemetry.sdk._logs import LoggingHandler as SdkHandler

        classes.append(SdkHandler)
    except ImportError:
        # Newer SDKs removed the deprecated handler: nothing to guard.
        pass
    for cls in classes:
        original = cls.__dict__.get("filter")
        if getattr(original, "_showmax_otel", False):
            continue

        def filter_once(
            self: logging.Handler, record: logging.LogRecord, __cls: type = cls
        ) -> Any:
            if not isinstance(self, BridgeHandler):
                if record.__dict__.get(_SHIPPED):
                    return False
                record.__dict__[_SHIPPED] = True
            return super(__cls, self).filter(record)  # type: ignore[arg-type]

        filter_once._showmax_otel = True  # type: ignore[attr-defined]
        # setattr: `cls` is any class here, and mypy knows no `filter` on it.
        setattr(cls, "filter", filter_once)  # noqa: B010

        def undo(__cls: type = cls, __original: Any = original) -> None:
            if __original is None:
                delattr(__cls, "filter")
            else:
                setattr(__cls, "filter", __original)  # noqa: B010

        _state.on_reset(undo)


_CONFIG_FUNCTIONS = (
    (logging, "basicConfig"),
    (logging.config, "dictConfig"),
    (logging.config, "fileConfig"),
)


def _wrap_config_functions(bridge: _Bridge) -> None:
    """Re-attach the bridge after any logging configuration call.

    `basicConfig(force=True)` and `dictConfig` with a root section remove the
    root's handlers; wrapping them is how the upstream instrumentation keeps
    its handler too. A call that went through a reference taken before init
    (`from logging import basicConfig`) is caught by the next `get_logger()`.
    """
    for module, name in _CONFIG_FUNCTIONS:
        original = getattr(module, name)

        def wrapper(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
            # basicConfig() does nothing when the root has a handler: take the
            # bridge off for the call, so the application's own configuration
            # (its console handler, its level) still happens.
            telemetry = _state.current()
            bridge = telemetry.bridge if telemetry is not None else None
            if bridge is not None:
                logging.getLogger().removeHandler(bridge.handler)
            try:
                return __original(*args, **kwargs)
            finally:
                if bridge is not None:
                    bridge.ensure()

        wrapper.__wrapped__ = original  # type: ignore[attr-defined]
        wrapper.__doc__ = original.__doc__
        setattr(module, name, wrapper)

        def undo(
            __module: Any = module, __name: str = name, __orig: Any = original
        ) -> None:
            setattr(__module, __name, __orig)

        _state.on_reset(undo)


def install_bridge(
    logger_provider: Any,
    *,
    level: int,
    extra_loggers: Iterable[str],
    max_attribute_bytes: int,
    redactor: Redactor,
    on_error: Callable[[str, BaseException], None],
    before_emit: Callable[[], None],
) -> _Bridge:
    handler = BridgeHandler(
        logger_provider=logger_provider,
        level=level,
        max_attribute_bytes=max_attribute_bytes,
        redactor=redactor,
        on_error=on_error,
        before_emit=before_emit,
    )
    bridge = _Bridge(handler, extra_loggers)
    bridge.ensure()
    _wrap_config_functions(bridge)
    _make_foreign_bridges_ship_once()
    _state.on_reset(bridge.remove)

    own = logging.getLogger("showmax_otel")
    if not any(isinstance(h, _OwnReportsFallback) for h in own.handlers):
        fallback = _OwnReportsFallback()
        own.addHandler(fallback)
        _state.on_reset(lambda: own.removeHandler(fallback))

    return bridge


def get_logger(name: str | None = None) -> logging.Logger:
    """A standard logger whose records reach the bridge; never adds a handler.

    Call it as often as you like, on every request if need be: it returns
    `logging.getLogger(name)` after checking that the one bridge is still
    attached to the root logger (and re-attaching it if a logging
    configuration call removed it).
    """
    telemetry = _state.current()
    if telemetry is not None and telemetry.bridge is not None:
        ours = telemetry.bridge.handler
        handlers = logging.root.handlers
        if ours not in handlers or any(
            h is not ours and _is_bridge(h) for h in handlers
        ):
            telemetry.bridge.ensure()

    return logging.getLogger(name)
