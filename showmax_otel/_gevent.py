"""gevent: patch checks, the hub-block watch, and what export needs under gevent.

Export never runs on the hub. `_pipeline` encodes and sends every batch on
a real OS thread built from gevent's saved originals, so the most a batch
can take from the event loop is the interpreter's switch interval (5 ms by
default, `sys.setswitchinterval`): the GIL is handed back to a waiting
thread after that long, and the encoder is Python code that lets go of it.
The SDK's own batch worker is a `threading.Thread`, which monkey-patching
turns into a greenlet that encodes each batch on the hub. Measured on the
shared 2-core development machine with eight 512-span batches of 40
attributes: a greenlet sleeping 5 ms woke up 69-163 ms late (fourth worst
of each run) with the SDK's processor, 5.5-8.5 ms with ours, whose single
worst wake-up (the first export) was 16-25 ms
(`tests/test_gevent.py::test_encoding_batches_leaves_the_hub_responsive`,
run with `-rP`, prints both).

gRPC is allowed under gevent for the same reason: the gRPC exporter is
only called from that thread, where gRPC's blocking unary call waits in C
with the GIL released. Against a collector that accepts and never answers,
with a 2 s export timeout, the SDK's processor froze every greenlet for
the whole 2 s; ours kept the hub's wake-up lag under 5 ms, with or without
gRPC's gevent integration (`grpc.experimental.gevent.init_gevent()`),
which this package neither needs nor calls.

Limitation: the export thread uses the patched sockets, so under gevent
it runs a hub of its own while it waits for the network. If the
interpreter finalises while an export is still waiting (the collector
is unreachable past `shutdown_timeout_seconds` and the process ends
through Python's normal exit), that thread is torn down inside a greenlet
switch and the process can die with SIGSEGV after its last line: seen
with a plain gevent script, not in the gunicorn gevent-worker tests; uWSGI
workers exit without finalising the interpreter.

What gevent cannot make safe is a process patched late or in part: a
module that took `ssl.SSLContext`, a socket function, `time.sleep` or
`threading.local` before `patch_all()` keeps the blocking original.
`patch_findings()` names such modules with the fix.

The hub-block watch reports, as a WARNING log record, every time one
greenlet runs longer than the threshold without yielding, with the
blocking stack and the trace of the request that was running. gevent's
own monitor thread (`gevent.config.monitor_thread`) was not used: it only
notices a block that covers a whole polling period (so blocks shorter than
twice the threshold slip through), and each report walks every object in
the heap (`gc.get_objects()`) to list the greenlets, with the GIL held.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

__all__ = [
    "HubBlock",
    "HubBlockWatch",
    "RequestSpans",
    "gevent_in_use",
    "in_main_thread",
    "patch_findings",
    "prepare_export",
    "reinit_after_c_fork",
    "subscribe_to_patch_all",
]

_logger = logging.getLogger("showmax_otel.gevent")

# The modules `gevent.monkey.patch_all()` patches by default that matter for
# a server: one left out while the others are patched blocks the hub.
_EXPECTED_PATCHED = (
    "socket",
    "ssl",
    "select",
    "threading",
    "time",
    "os",
    "subprocess",
    "queue",
)

# Originals that a module imported before patching keeps: (module, name,
# what it means for the application).
_ORIGINALS = (
    ("ssl", "SSLContext", "unpatched ssl (TLS on gevent sockets fails or blocks)"),
    ("socket", "socket", "blocking sockets"),
    ("socket", "create_connection", "blocking connects"),
    ("select", "select", "blocking select"),
    ("time", "sleep", "blocking sleep"),
    ("threading", "local", "thread-locals shared by every greenlet"),
    ("_threading_local", "local", "thread-locals shared by every greenlet"),
)
# Not listed: a module that kept the original `threading.Lock` class (many
# do, opentelemetry and wrapt among them) only guards short critical
# sections with it; naming them all would bury the findings that matter.

# What the export thread would otherwise import on its first export under
# gevent, holding the import lock while greenlets on the hub may need it.
_EXPORT_THREAD_IMPORTS = ("gevent.resolver.thread", "gevent.threadpool", "gevent.util")

# Said last, after "; ", so that `doctor` can show it as the fix.
_PATCH_FIX = (
    "call gevent.monkey.patch_all() before anything else is imported, in the "
    "first lines of the WSGI module (in the gunicorn config file with "
    "--preload), or use uWSGI's --gevent-early-monkey-patch"
)


# -- facts -------------------------------------------------------------------


def gevent_in_use() -> bool:
    """Whether gevent has monkey-patched this process (its sockets at least)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def in_main_thread() -> bool:
    """Whether the caller runs on the process's main OS thread (any greenlet).

    Under gevent `threading.main_thread()` only answers for the main
    greenlet; the hub of the main thread serves requests from others.
    """
    get_ident = _original("_thread", "get_ident")
    hub_module = sys.modules.get("gevent.hub")
    main_ident = getattr(hub_module, "MAIN_THREAD_IDENT", None)
    if main_ident is None:
        import threading

        return threading.current_thread() is threading.main_thread()

    return bool(get_ident() == main_ident)


def _original(module: str, name: str) -> Any:
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        return monkey.get_original(module, name)

    return getattr(__import__(module), name)


# -- patch checks --------------------------------------------------------------


def patch_findings() -> list[str]:
    """Problems with how gevent patched this process, each with its fix.

    Empty when gevent is not loaded or patched everything in time.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_anything_patched():
        return []

    findings = []
    missing = [name for name in _EXPECTED_PATCHED if not monkey.is_module_patched(name)]
    if missing:
        findings.append(
            "gevent monkey-patching is partial: "
            + ", ".join(missing)
            + " left unpatched, so calls through them block every greenlet of "
            "the worker; call gevent.monkey.patch_all() with its defaults"
        )
    late = _late_imports(monkey)
    if late:
        findings.append(
            "gevent monkey-patched after these modules were imported, and they "
            "keep the blocking originals: " + "; ".join(late) + "; " + _PATCH_FIX
        )

    return findings


def _late_imports(monkey: Any) -> list[str]:
    """Modules outside the standard library that hold pre-patch originals."""
    wanted: dict[int, str] = {}
    for patched_module, name, meaning in _ORIGINALS:
        if monkey.is_object_patched(patched_module, name):
            original = monkey.get_original(patched_module, name)
            wanted[id(original)] = f"{patched_module}.{name}: {meaning}"
    if not wanted:
        return []

    skip_dirs = _standard_library_dirs()
    found: dict[str, set[str]] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or module_name.partition(".")[0] in _OWN_OR_PATCHERS:
            continue
        path = getattr(module, "__file__", None)
        if not isinstance(path, str):
            continue
        if path.startswith(skip_dirs) and "-packages" not in path:
            continue
        for value in list(vars(module).values()):
            held = wanted.get(id(value))
            if held is not None:
                found.setdefault(held, set()).add(module_name)
    ssl_context = (
        monkey.get_original("ssl", "SSLContext")
        if monkey.is_object_patched("ssl", "SSLContext")
        else None
    )
    if ssl_context is not None:
        for subclass in ssl_context.__subclasses__():
            if not subclass.__module__.startswith(("gevent", "ssl")):
                found.setdefault(wanted[id(ssl_context)], set()).add(
                    f"{subclass.__module__}.{subclass.__qualname__} (subclass)"
                )

    return [
        f"{', '.join(sorted(modules)[:5])}"
        + (f" and {len(modules) - 5} more" if len(modules) > 5 else "")
        + f" ({meaning})"
        for meaning, modules in sorted(found.items())
    ]


# gevent and greenlet keep originals on purpose; so does this package (it
# fetches them at call time, but never mind).
_OWN_OR_PATCHERS = frozenset({"gevent", "greenlet", "zope", "showmax_otel", "__main__"})


def _standard_library_dirs() -> tuple[str, ...]:
    import sysconfig

    # The base interpreter's: in a virtual environment "platstdlib" is the
    # environment's lib directory, which holds site-packages.
    paths = sysconfig.get_paths(
        vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    )
    dirs = {paths["stdlib"], paths["platstdlib"]}

    return tuple(os.path.join(d, "") for d in dirs if d)


def subscribe_to_patch_all(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after each `gevent.monkey.patch_all()` in this process.

    Subscribes only if gevent is already imported (a process that imports
    it later is seen by the other checks). Returns the unsubscribe function.
    """
    if "gevent" not in sys.modules:
        return lambda: None

    from gevent import events

    def on_event(event: object) -> None:
        if isinstance(event, events.GeventDidPatchAllEvent):
            callback()

    events.subscribers.append(on_event)

    def unsubscribe() -> None:
        if on_event in events.subscribers:
            events.subscribers.remove(on_event)

    return unsubscribe


def reinit_after_c_fork() -> None:
    """In a child forked by C code (uWSGI), do what gevent's own fork does.

    A hub created before the fork (in the uWSGI master: the OpenTelemetry
    SDK's resource detection runs on a thread pool, which under gevent
    starts the hub) would otherwise be shared with the parent and every
    sibling: one epoll set and one signal pipe for all of them, so a worker
    misses its own SIGINT or SIGTERM and waits for the master's kill.
    """
    if "gevent" not in sys.modules:
        return
    import gevent

    gevent.reinit()


def prepare_export(*, http: bool) -> None:
    """Import now, on the caller's thread, what the first export would import.

    Under gevent the first export on the export thread imports gevent's
    resolver and thread pool (and requests, for HTTP); doing it here keeps
    that thread from holding the import lock while a greenlet waits for it.
    Importing requests (and so ssl) is only done once gevent has patched.
    """
    if not gevent_in_use():
        return
    from importlib import import_module

    names = list(_EXPORT_THREAD_IMPORTS)
    if http:
        names.append("requests")
    for name in names:
        try:
            import_module(name)
        except ImportError:
            continue  # the exporter will report it when it needs the module


# -- the hub-block watch -------------------------------------------------------


@dataclass(frozen=True)
class HubBlock:
    """One stretch of time in which a single greenlet held the event loop."""

    greenlet: str
    started_unix_nano: int
    duration_seconds: float
    ongoing: bool
    stack: str
    span_context: Any


class RequestSpans(SpanProcessor):
    """Remembers, per greenlet, the local root spans it is running.

    The watch runs on its own thread and cannot read a running greenlet's
    context, so a span that starts a request (or a background job) in a
    greenlet is noted here when it starts, for the watch to look up, and
    forgotten when it ends. A greenlet may hold several (a root started
    inside another: a job with a fresh context, a message with a remote
    parent); the innermost one still open is the one reported.
    """

    def __init__(self) -> None:
        from greenlet import getcurrent

        self._getcurrent = getcurrent
        # Weak keys: a greenlet that dies with its span still open (a
        # killed request) takes its entry with it.
        self._spans: weakref.WeakKeyDictionary[Any, list[Span]] = (
            weakref.WeakKeyDictionary()
        )

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        parent = span.parent
        if parent is None or parent.is_remote:
            current = self._getcurrent()
            started = self._spans.get(current)
            if started is None:
                self._spans[current] = [span]
            else:
                started.append(span)

    def on_end(self, span: ReadableSpan) -> None:
        # The SDK hands processors a read-only copy at the end, never the
        # span itself: the two are matched by their span id.
        parent = span.parent
        ended = span.context
        if (parent is not None and not parent.is_remote) or ended is None:
            return
        span_id = ended.span_id
        current = self._getcurrent()
        started = self._spans.get(current)
        if started and started[-1].get_span_context().span_id == span_id:
            started.pop()
            if not started:
                del self._spans[current]
            return
        # Ended out of order, or in another greenlet than it started in.
        for greenlet, spans in list(self._spans.items()):
            for index, candidate in enumerate(spans):
                if candidate.get_span_context().span_id == span_id:
                    del spans[index]
                    if not spans:
                        self._spans.pop(greenlet, None)
                    return

    def span_context_of(self, greenlet: Any) -> Any:
        # Read on the watch's thread while the hub's thread may be ending
        # the last span of that greenlet.
        spans = self._spans.get(greenlet)
        try:
            return spans[-1].get_span_context() if spans else None
        except IndexError:
            return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _SwitchTracer:
    """The greenlet trace function: notes each switch, on the hub's thread.

    It runs on every switch, so it does the least it can: one tuple
    assignment (read whole by the watch thread, never half-updated) and,
    while the watch waits for a block to end, the time it ended.
    """

    __slots__ = ("count", "state", "watched", "ended_at", "previous", "_clock")

    def __init__(self, previous: Any) -> None:
        self._clock = time.perf_counter
        self.count = 0
        self.state: tuple[int, Any, float] = (0, None, self._clock())
        self.watched = -1
        self.ended_at = 0.0
        self.previous = previous

    def __call__(self, event: str, args: Any) -> None:
        now = self._clock()
        count = self.count
        if count == self.watched:
            self.ended_at = now
        self.count = count + 1
        target = args[1] if event == "switch" or event == "throw" else None
        self.state = (count + 1, target, now)
        if self.previous is not None:
            self.previous(event, args)


class _Pending:
    __slots__ = ("count", "greenlet", "since", "stack", "span_context", "reported")

    def __init__(
        self, count: int, greenlet: str, since: float, stack: str, span_context: Any
    ) -> None:
        self.count = count
        self.greenlet = greenlet
        self.since = since
        self.stack = stack
        self.span_context = span_context
        self.reported = False


class HubBlockWatch:
    """Reports each time one greenlet holds the main thread's hub too long.

    `start()` must run on the main thread (it installs the greenlet trace
    function there) and starts one real OS thread that looks every quarter
    threshold; `report` is called on that thread, once per block, after
    the block ends, or while it lasts once it has lasted `max(1 s, 10 x
    threshold)`.
    """

    def __init__(
        self,
        threshold_seconds: float,
        report: Callable[[HubBlock], None],
        *,
        spans: RequestSpans | None = None,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        if threshold_seconds <= 0:
            raise ValueError(
                f"hub-block threshold must be greater than 0; got {threshold_seconds!r}"
            )
        self.threshold_seconds = threshold_seconds
        self._poll_seconds = min(max(threshold_seconds / 4, 0.005), 0.05)
        self._ongoing_seconds = max(1.0, 10 * threshold_seconds)
        self._report = report
        self._spans = spans
        self._on_error = on_error
        self._tracer: _SwitchTracer | None = None
        self._pid = 0
        self._main_ident = 0
        self._pending: _Pending | None = None
        self._running = False

    @property
    def running(self) -> bool:
        return self._running and self._pid == os.getpid()

    def start(self) -> bool:
        """Start watching in this process; False if it already watches."""
        if self.running:
            return False
        import greenlet

        from ._pipeline import native_start_thread

        tracer = self._tracer
        if tracer is None or greenlet.gettrace() is not tracer:
            # After a fork the trace function survives (it is per-thread
            # state of the forking thread); only the watch thread is gone.
            tracer = _SwitchTracer(greenlet.gettrace())
            greenlet.settrace(tracer)
            self._tracer = tracer
        self._pid = os.getpid()
        self._main_ident = _original("_thread", "get_ident")()
        self._pending = None
        self._running = True
        native_start_thread(self._run, "otel-hub-watch")

        return True

    def stop(self) -> None:
        """Stop the watch thread; uninstall the trace function if on its thread."""
        self._running = False
        tracer = self._tracer
        if tracer is None:
            return
        import greenlet

        if greenlet.gettrace() is tracer and in_main_thread():
            greenlet.settrace(tracer.previous)
            self._tracer = None

    def _run(self) -> None:
        sleep = _original("time", "sleep")
        pid = self._pid
        while self._running and os.getpid() == pid:
            sleep(self._poll_seconds)
            try:
                self._check()
            except Exception as error:  # noqa: BLE001 - reported; the watch goes on
                if self._on_error is not None:
                    self._on_error("watching the gevent hub", error)

    def _check(self) -> None:
        tracer = self._tracer
        if tracer is None:
            return
        now = time.perf_counter()
        pending = self._pending
        if pending is not None:
            self._follow(tracer, pending, now)
            return

        count, active, since = tracer.state
        if count == 0 or active is None or _is_hub(active):
            # Nothing has switched yet (the hub is not running), or the
            # hub itself is running: waiting for I/O is not a block.
            return
        if now - since < self.threshold_seconds:
            return
        frame = sys._current_frames().get(self._main_ident)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
        if tracer.state[0] != count:
            return  # it yielded while we looked
        span_context = None
        if self._spans is not None:
            span_context = self._spans.span_context_of(active)
        tracer.watched = count
        self._pending = _Pending(count, _describe(active), since, stack, span_context)

    def _follow(self, tracer: _SwitchTracer, pending: _Pending, now: float) -> None:
        if tracer.state[0] != pending.count:
            # The block is over; the trace function noted when.
            ended_at = tracer.ended_at if tracer.ended_at >= pending.since else now
            tracer.watched = -1
            self._pending = None
            if not pending.reported:
                self._emit(pending, ended_at - pending.since, ongoing=False)
            return
        if not pending.reported and now - pending.since >= self._ongoing_seconds:
            pending.reported = True
            self._emit(pending, now - pending.since, ongoing=True)

    def _emit(self, pending: _Pending, duration: float, *, ongoing: bool) -> None:
        started = time.time_ns() - int((time.perf_counter() - pending.since) * 1e9)
        self._report(
            HubBlock(
                greenlet=pending.greenlet,
                started_unix_nano=started,
                duration_seconds=duration,
                ongoing=ongoing,
                stack=pending.stack,
                span_context=pending.span_context,
            )
        )


def _is_hub(greenlet: Any) -> bool:
    from gevent.hub import Hub

    return isinstance(greenlet, Hub)


def _describe(greenlet: Any) -> str:
    try:
        return repr(greenlet)[:200]
    except Exception:  # noqa: BLE001 - a greenlet's repr runs user code
        return f"<{type(greenlet).__name__}>"


def block_record_reporter(
    logger_provider: Any, *, threshold_seconds: float, max_attribute_bytes: int
) -> Callable[[HubBlock], None]:
    """A `report` for `HubBlockWatch`: one WARNING log record per block.

    The record goes straight to the logger provider, carrying the trace and
    span ids of the request that was running; a one-line summary also goes
    to the `showmax_otel.gevent` logger (never shipped) for the server log.
    """
    from opentelemetry import trace
    from opentelemetry._logs import SeverityNumber

    otel_logger = logger_provider.get_logger("showmax_otel.gevent")
    threshold_ms = round(threshold_seconds * 1000, 1)

    def report(block: HubBlock) -> None:
        duration_ms = round(block.duration_seconds * 1000, 1)
        where = _innermost(block.stack)
        body = (
            f"gevent event loop blocked for {duration_ms} ms"
            + (" and counting" if block.ongoing else "")
            + f" (threshold {threshold_ms} ms) by {block.greenlet} at {where}"
        )
        context = None
        trace_id = ""
        if block.span_context is not None and block.span_context.is_valid:
            context = trace.set_span_in_context(
                trace.NonRecordingSpan(block.span_context)
            )
            trace_id = format(block.span_context.trace_id, "032x")
        otel_logger.emit(
            timestamp=block.started_unix_nano,
            context=context,
            severity_number=SeverityNumber.WARN,
            # The bridge's name for Python's WARNING, as every other record.
            severity_text="WARN",
            body=body,
            attributes={
                "gevent.block.duration_ms": duration_ms,
                "gevent.block.threshold_ms": threshold_ms,
                "gevent.block.ongoing": block.ongoing,
                "gevent.block.greenlet": block.greenlet,
                "code.stacktrace": block.stack[-max_attribute_bytes:],
            },
        )
        suffix = f" (trace {trace_id})" if trace_id else ""
        _logger.warning("showmax_otel: %s%s", body, suffix)

    return report


def _innermost(stack: str) -> str:
    """`file:line in function` of the last frame of a formatted stack."""
    lines = [
        line.strip() for line in stack.splitlines() if line.strip().startswith("File")
    ]
    if not lines:
        return "an unknown place"
    # 'File "/path/app.py", line 42, in on_get'
    parts = lines[-1].split('"')
    if len(parts) >= 3:
        rest = parts[2].strip(", ").replace("line ", "")
        line, _, function = rest.partition(", in ")
        return f"{parts[1]}:{line} in {function}"

    return lines[-1]
