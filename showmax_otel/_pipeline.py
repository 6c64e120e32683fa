"""Providers, processors and exporters: build, start, flush, shut down, count.

A span end or a log record costs the request one `deque.append` and a few
attribute reads. Everything else (encoding, export, retries) runs on a real
OS thread, started lazily in the process that emits, so that:

- under gevent the hub never runs export work: the SDK's own batch worker
  is a `threading.Thread`, which monkey-patching turns into a greenlet
  that encodes whole batches on the event loop;
- in a pre-fork server each worker starts its own thread and its own
  exporter (connection pools and gRPC channels are never shared across a
  fork), and a fork that only execs starts nothing;
- flush and shutdown keep their time bounds even when the collector
  accepts connections and never answers.

Every record that does not reach the exporter with success is counted in
`dropped`, by reason. Nothing here knows about Falcon, uWSGI or the CLI.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.context import (
    _SUPPRESS_INSTRUMENTATION_KEY,
    attach,
    detach,
    set_value,
)
from opentelemetry.sdk._logs import (
    LogRecordProcessor,
    SynchronousMultiLogRecordProcessor,
)
from opentelemetry.sdk.trace import (
    ReadableSpan,
    Span,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
)

from ._exporters import ExportOutcome

__all__ = [
    "ExportQueue",
    "GuardedLogRecordProcessors",
    "GuardedSpanProcessors",
    "LogQueueProcessor",
    "SpanQueueProcessor",
    "native_allocate_lock",
    "native_start_thread",
]

_logger = logging.getLogger("showmax_otel.pipeline")

# Drop reasons, as reported by stats().
QUEUE_FULL = "queue_full"
EXPORT_FAILED = "export_failed"
EXPORT_ERROR = "export_error"
SHUTDOWN_TIMEOUT = "shutdown_timeout"
AFTER_SHUTDOWN = "after_shutdown"
NO_EXPORT_THREAD = "no_export_thread"


def _original(module: str, name: str) -> Any:
    """The object as it was before gevent's monkey-patching, if any."""
    if "gevent.monkey" in sys.modules:
        from gevent import monkey

        return monkey.get_original(module, name)

    return getattr(__import__(module), name)


def native_start_thread(target: Callable[[], None], name: str) -> None:
    """Start a real OS thread, even in a gevent-patched process."""
    start_new_thread = _original("_thread", "start_new_thread")

    # threading.current_thread() would invent a dummy Thread object for
    # us; naming the OS thread helps in py-spy and top -H. Imported here, on
    # the caller's thread: a thread that imports while its process forks
    # leaves the module's import lock held in the child, whose own import
    # of the module then hangs (seen with gunicorn --preload).
    try:
        import ctypes

        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        prctl = None

    def run() -> None:
        if prctl is not None:
            prctl(15, name[:15].encode(), 0, 0, 0)
        target()

    # Process-directed signals (SIGINT, SIGTERM, SIGHUP) are left to the main
    # thread, where servers wait for them: Python runs its handlers there
    # only, and one delivered here would wait for the main thread's next
    # wake-up. A thread starts with its creator's mask.
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        start_new_thread(run, ())
        return
    previous = mask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
    try:
        start_new_thread(run, ())
    finally:
        mask(signal.SIG_SETMASK, previous)


# Signals sent to the process rather than raised by a faulting thread.
_ASYNC_SIGNALS = frozenset(signal.valid_signals()) - {
    getattr(signal, name)
    for name in ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGABRT", "SIGTRAP")
    if hasattr(signal, name)
}


def native_allocate_lock() -> Any:
    """A real (not gevent) lock: waiting on it never yields to the hub."""
    return _original("_thread", "allocate_lock")()


class ExportQueue:
    """A bounded queue drained by one real OS thread per process.

    `put()` is the only method on the request path. The worker wakes up when
    a batch is full or every `schedule_delay_seconds`, and exports batches
    of at most `max_batch_size` items through the exporter built by
    `exporter_factory` inside the worker thread, in the process that uses it.
    """

    def __init__(
        self,
        signal: str,
        exporter_factory: Callable[[], Any],
        *,
        max_queue_size: int,
        max_batch_size: int,
        schedule_delay_seconds: float,
        on_new_process: Callable[[str, int], None] = lambda signal, inherited: None,
        may_start_worker: Callable[[], bool] = lambda: True,
        report_interval_seconds: float = 60.0,
        on_internal_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.signal = signal
        self._exporter_factory = exporter_factory
        self._max_queue_size = max_queue_size
        self._max_batch_size = min(max_batch_size, max_queue_size)
        self._schedule_delay_seconds = max(schedule_delay_seconds, 0.001)
        self._on_new_process = on_new_process
        self._may_start_worker = may_start_worker
        self._report_interval_seconds = report_interval_seconds
        self._on_internal_error = on_internal_error

        self._queue: collections.deque[Any] = collections.deque()
        # The pid whose worker drains the queue; 0 until one is started.
        self._owner_pid = 0
        self._built_pid = os.getpid()
        self._reset_process_state()

    def _reset_process_state(self) -> None:
        self._counter_lock = native_allocate_lock()
        self._wake = native_allocate_lock()
        self._wake.acquire()
        self._emitted = 0
        self._exported = 0
        self._export_failures = 0
        self._dropped: dict[str, int] = collections.Counter()
        # Records written to the on-disk spool, sent from it, and cut to fit.
        self._spooled = 0
        self._replayed = 0
        self._truncated = 0
        self._last_error: str | None = None
        self._in_flight = 0
        self._flush_requested = 0
        self._flush_done = 0
        self._stopping = False
        self._stopped = False
        self._worker_alive = False
        self._exporter: Any = None
        self._last_report = time.monotonic()
        self._reported: tuple[int, int] = (0, 0)

    # -- request path --------------------------------------------------------

    def put(self, item: Any) -> None:
        if self._owner_pid != os.getpid():
            self._adopt_process()
        with self._counter_lock:
            self._emitted += 1
        if self._stopped:
            self._count_drop(AFTER_SHUTDOWN, 1)
            return

        queue = self._queue
        queue.append(item)
        if len(queue) > self._max_queue_size:
            try:
                queue.popleft()
            except IndexError:
                # The worker took the oldest first: nothing was dropped.
                return
            self._count_drop(QUEUE_FULL, 1)
        if len(queue) >= self._max_batch_size:
            self._wake_worker()

    # -- process and worker --------------------------------------------------

    def _forget_parent(self) -> None:
        """In a forked child, start from an empty queue and zero counters.

        What is queued belongs to the parent, which exports it; the child
        gets its own counters, worker and exporter. Runs before anything a
        child does with the queue: put, flush, shutdown and stats.
        """
        pid = os.getpid()
        if pid != self._built_pid:
            inherited = len(self._queue)
            self._queue.clear()
            self._reset_process_state()
            self._built_pid = pid
            self._owner_pid = 0
            self._on_new_process(self.signal, inherited)

    def _adopt_process(self) -> None:
        pid = os.getpid()
        self._forget_parent()
        if not self._may_start_worker():
            return
        self._owner_pid = pid
        self._start_worker()

    def _start_worker(self) -> None:
        if self._worker_alive or self._stopped:
            return
        self._worker_alive = True
        native_start_thread(self._run_worker, f"otel-{self.signal}")

    def _wake_worker(self) -> None:
        # Releasing an unlocked lock raises: the worker is already awake.
        with contextlib.suppress(RuntimeError):
            self._wake.release()

    def _run_worker(self) -> None:
        try:
            self._exporter = self._exporter_factory()
        except Exception as error:  # noqa: BLE001 - reported, then counted
            self._internal_error("building the exporter", error)
            self._worker_alive = False
            return

        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            while True:
                woken = self._wake.acquire(timeout=self._schedule_delay_seconds)
                # Read once: a stop that arrives after this line has released
                # the wake lock, so the next turn drains and then returns.
                stopping = self._stopping
                flush_target = self._flush_requested
                drain = stopping or flush_target > self._flush_done
                self._export_available(everything=drain, timer_fired=not woken)
                if not stopping and len(self._queue) < self._max_batch_size:
                    self._export_spooled()
                self._flush_done = flush_target
                self._maybe_report()
                if stopping:
                    return
        finally:
            detach(token)
            self._worker_alive = False

    def _export_available(self, *, everything: bool, timer_fired: bool) -> None:
        queue = self._queue
        while queue:
            if not (everything or timer_fired or len(queue) >= self._max_batch_size):
                return
            batch = []
            for _ in range(min(self._max_batch_size, len(queue))):
                try:
                    batch.append(queue.popleft())
                except IndexError:
                    break
            if not batch:
                return
            self._export_batch(batch)
            timer_fired = False
            if self._stopped:
                return

    def _export_batch(self, batch: Sequence[Any]) -> None:
        self._in_flight = len(batch)
        try:
            result = self._exporter.export(batch)
        except Exception as error:  # noqa: BLE001 - counted and reported
            if not self._stopped:
                self._count_failure(EXPORT_ERROR, len(batch))
                self._internal_error(f"exporting {self.signal}", error)
            return
        finally:
            if not self._stopped:
                self._in_flight = 0

        if self._stopped:
            # shutdown() gave up on this batch and already counted it.
            return
        if isinstance(result, ExportOutcome):
            self._count_outcome(result)
            return
        if getattr(result, "name", "") == "SUCCESS":
            with self._counter_lock:
                self._exported += len(batch)
        else:
            self._count_failure(EXPORT_FAILED, len(batch))

    def _export_spooled(self) -> None:
        """Give the exporter's spool, if it has one, a turn while the queue is low."""
        on_idle = getattr(self._exporter, "on_idle", None)
        if on_idle is None:
            return
        try:
            on_idle(self._count_outcome)
        except Exception as error:  # noqa: BLE001 - reported; the spool keeps its files
            self._internal_error(f"sending spooled {self.signal}", error)

    # -- counting and reporting ----------------------------------------------

    def _count_outcome(self, outcome: ExportOutcome) -> None:
        """Counts from an exporter that says what became of each record."""
        with self._counter_lock:
            self._exported += outcome.exported
            self._replayed += outcome.replayed
            self._spooled += outcome.spooled
            self._truncated += outcome.truncated
            self._export_failures += outcome.failed_attempts
            for reason, count in outcome.dropped.items():
                self._dropped[reason] += count
            if outcome.error is not None:
                self._last_error = outcome.error

    def _count_drop(self, reason: str, count: int) -> None:
        with self._counter_lock:
            self._dropped[reason] += count

    def _count_failure(self, reason: str, count: int) -> None:
        with self._counter_lock:
            self._export_failures += 1
            self._dropped[reason] += count

    def _internal_error(self, what: str, error: BaseException) -> None:
        if self._on_internal_error is not None:
            self._on_internal_error(what, error)
        else:
            _logger.error("showmax_otel: error while %s: %r", what, error)

    def _maybe_report(self) -> None:
        now = time.monotonic()
        if now - self._last_report < self._report_interval_seconds:
            return
        dropped = sum(self._dropped.values())
        state = (dropped, self._export_failures)
        if state == self._reported:
            return
        self._last_report = now
        self._reported = state
        # Our own logger is never bridged, so this cannot feed the pipeline.
        _logger.warning(
            "showmax_otel: %s: %d dropped so far %s, %d failed exports, "
            "%d spooled; last error: %s; see Telemetry.stats()",
            self.signal,
            dropped,
            dict(self._dropped),
            self._export_failures,
            self._spooled,
            self._last_error,
        )

    def stats(self) -> dict[str, Any]:
        self._forget_parent()
        with self._counter_lock:
            return {
                "emitted": self._emitted,
                "exported": self._exported,
                "queued": len(self._queue) + self._in_flight,
                "dropped": dict(self._dropped),
                "export_failures": self._export_failures,
                "spooled": self._spooled,
                "replayed": self._replayed,
                "truncated": self._truncated,
            }

    # -- flush and shutdown --------------------------------------------------

    def force_flush(self, timeout_seconds: float) -> bool:
        """Export everything queued now; True when all of it was exported."""
        deadline = time.monotonic() + timeout_seconds
        self._forget_parent()
        if self._stopped:
            return not self._queue
        if not self._queue and not self._in_flight:
            return True
        if self._owner_pid != os.getpid():
            self._adopt_process()
        if not self._worker_alive:
            # No worker may run in this process (a uWSGI master): the records
            # wait for shutdown, which counts them.
            return False
        failures_before = self._export_failures + sum(self._dropped.values())
        self._flush_requested += 1
        target = self._flush_requested
        self._wake_worker()
        done = _wait_until(lambda: self._flush_done >= target, deadline)
        failures_after = self._export_failures + sum(self._dropped.values())

        return done and failures_after == failures_before

    def shutdown(self, timeout_seconds: float) -> bool:
        """Drain within the bound, then stop; counts what could not be sent."""
        self._forget_parent()
        if self._stopped:
            return True
        deadline = time.monotonic() + timeout_seconds
        failures_before = self._export_failures + sum(self._dropped.values())
        drained = True
        if self._queue and self._owner_pid != os.getpid():
            self._adopt_process()
        if self._worker_alive:
            self._stopping = True
            self._wake_worker()
            drained = _wait_until(lambda: not self._worker_alive, deadline)

        self._stopped = True
        abandoned = len(self._queue) + self._in_flight
        self._queue.clear()
        # A batch still on the wire is counted here, once: the worker ignores
        # its late result, and stats() no longer reports it as queued.
        self._in_flight = 0
        if abandoned and self._owner_pid != os.getpid():
            # Limitation: records emitted in a pre-fork master (a uWSGI
            # master importing the app, gunicorn's arbiter with --preload)
            # are never exported: no export thread may run where the
            # workers are forked from, and the workers leave the parent's
            # records to it. They are counted here, at the master's exit.
            self._count_drop(NO_EXPORT_THREAD, abandoned)
        elif abandoned:
            self._count_drop(SHUTDOWN_TIMEOUT, abandoned)
        exporter = self._exporter
        if exporter is not None:
            try:
                exporter.shutdown()
            except Exception as error:  # noqa: BLE001 - reported, shutting down
                self._internal_error(f"shutting down the {self.signal} exporter", error)
        failures_after = self._export_failures + sum(self._dropped.values())
        if failures_after != failures_before:
            _logger.warning(
                "showmax_otel: %s at shutdown: %s", self.signal, self.stats()
            )

        return drained and not abandoned and failures_after == failures_before


def _wait_until(condition: Callable[[], bool], deadline: float) -> bool:
    """Poll `condition` until it holds or the deadline passes.

    The sleep is `time.sleep`, which under gevent yields to the hub, so a
    flush called from a greenlet lets the rest of the process run.
    """
    delay = 0.001
    while not condition():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return condition()
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.02)

    return True


class _QueuedSpan(ReadableSpan):
    """An ended span as it waits for export, over plain containers.

    The SDK's read-only span shares the live span's bounded containers:
    its attributes and its lists of events and links, each with its lock
    (a gevent lock when patched) and its deque, some fifteen objects that
    the garbage collector tracks for each span while it is queued,
    thousands of them under load. This one holds the same values, the
    attributes' plain dict (the SDK refuses writes to it once the span
    ended) and tuples, and keeps the counts of what the limits dropped,
    which the SDK's read-only span asks its containers for. The events and
    links themselves are the span's own, with their attributes. Costs
    about 3 µs per span on the thread that ends it.
    """

    def __init__(self, span: ReadableSpan) -> None:
        attributes = getattr(span, "_attributes", None)
        super().__init__(
            name=span.name,
            context=span.context,
            parent=span.parent,
            resource=span.resource,
            attributes=getattr(attributes, "_dict", attributes),
            events=tuple(span.events),
            links=tuple(span.links),
            kind=span.kind,
            status=span.status,
            start_time=span.start_time,
            end_time=span.end_time,
            instrumentation_info=getattr(span, "_instrumentation_info", None),
            instrumentation_scope=span.instrumentation_scope,
        )
        self._dropped = (
            span.dropped_attributes,
            span.dropped_events,
            span.dropped_links,
        )

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def _settled(span: ReadableSpan) -> ReadableSpan:
    # What the SDK's Span.end() hands processors; any other class (one of
    # another SDK, a subclass with properties of its own) is queued as it is.
    if type(span) is not ReadableSpan:
        return span
    try:
        return _QueuedSpan(span)
    except Exception:  # noqa: BLE001 - an unexpected span class: queued as it is
        return span


class SpanQueueProcessor(SpanProcessor):
    """Hands ended, sampled spans to an `ExportQueue`."""

    def __init__(self, queue: ExportQueue) -> None:
        self.queue = queue

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is not None and context.trace_flags.sampled:
            self.queue.put(_settled(span))

    def shutdown(self) -> None:
        # The Telemetry object shuts the queue down with its own bound; the
        # provider's shutdown (at exit, or by a user) must not wait longer.
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.queue.force_flush(timeout_millis / 1000)


class LogQueueProcessor(LogRecordProcessor):
    """Hands log records to an `ExportQueue`."""

    def __init__(self, queue: ExportQueue) -> None:
        self.queue = queue

    def on_emit(self, log_record: Any) -> None:
        self.queue.put(_detached(log_record))

    # Older SDKs call emit(), newer ones on_emit().
    emit = on_emit

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.queue.force_flush(timeout_millis / 1000)


def _detached(record: Any) -> Any:
    """`record` as it waits in the queue: without its context and exception.

    The API record keeps the context it was emitted in (and so the
    request's span, with all it holds) and the exception it reports (and so
    that traceback's frames, with every local variable of the failed
    request). Queued, they would stay alive for up to the schedule delay,
    thousands of records under load, and every garbage collection would
    walk them. Export reads the ids copied out of the context and the
    attributes made from the exception, not these. The copies are shallow
    and new, so that whoever else kept the record sees it whole (the SDK's
    batch processor copies the record to drop the context too); the queue
    takes it after every other processor ran (`GuardedLogRecordProcessors`),
    so what they changed is exported.
    """
    inner = getattr(record, "log_record", None)
    if inner is None:
        return record
    context = getattr(inner, "context", None)
    if not context and getattr(inner, "exception", None) is None:
        # An empty context and no exception: nothing to let go of.
        return record
    try:
        light = _shallow_copy(inner)
        light.context = None
        light.exception = None
        queued = _shallow_copy(record)
        queued.log_record = light
    except Exception:  # noqa: BLE001 - an unusual record class: queued as it is
        return record

    return queued


def _shallow_copy(item: Any) -> Any:
    cls = type(item)
    slotted = _SLOTTED.get(cls)
    if slotted is None:
        slotted = _SLOTTED[cls] = any(
            getattr(base, "__slots__", ()) for base in cls.__mro__
        )
    if slotted:
        # Slots hold values the instance dict does not.
        return copy.copy(item)
    # A quarter of what copy.copy() costs.
    copied = object.__new__(cls)
    copied.__dict__.update(item.__dict__)

    return copied


# Record classes seen, and whether their instances hold values in slots.
_SLOTTED: dict[type, bool] = {}


class GuardedSpanProcessors(SynchronousMultiSpanProcessor):
    """A provider's span processors, none of which can fail a request.

    The SDK calls each processor on the thread that starts or ends the span
    and lets an exception from any of them (ours, or one an application
    added) escape into the request. Here it goes to `on_error` instead
    (`Telemetry.report_internal_error`: logged once per processor, or
    raised under a test suite). A try costs nothing until it catches.
    """

    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        super().__init__()
        self._on_error = on_error

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        for processor in self._span_processors:
            try:
                processor.on_start(span, parent_context=parent_context)
            except Exception as error:  # noqa: BLE001 - reported, the request goes on
                self._on_error(f"{type(processor).__name__}.on_start", error)

    def _on_ending(self, span: Span) -> None:
        for processor in self._span_processors:
            try:
                processor._on_ending(span)
            except Exception as error:  # noqa: BLE001 - reported, the request goes on
                self._on_error(f"{type(processor).__name__}._on_ending", error)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._span_processors:
            try:
                processor.on_end(span)
            except Exception as error:  # noqa: BLE001 - reported, the request goes on
                self._on_error(f"{type(processor).__name__}.on_end", error)


class GuardedLogRecordProcessors(SynchronousMultiLogRecordProcessor):
    """A provider's log record processors, none of which can fail a log call."""

    def __init__(self, on_error: Callable[[str, BaseException], None]) -> None:
        super().__init__()
        self._on_error = on_error

    def add_log_record_processor(
        self, log_record_processor: LogRecordProcessor
    ) -> None:
        # The export queue takes each record last, whenever it was added:
        # what an application's processor changes (a scrubbed body, an
        # added attribute) is what gets exported. Ordered here, once, not
        # on every record. Only with the provider the package builds; one
        # the application set up first keeps the SDK's order of
        # registration.
        with self._lock:
            processors = (*self._log_record_processors, log_record_processor)
            self._log_record_processors = tuple(
                sorted(processors, key=lambda p: isinstance(p, LogQueueProcessor))
            )

    def on_emit(self, log_record: Any) -> None:
        for processor in self._log_record_processors:
            try:
                processor.on_emit(log_record)
            except Exception as error:  # noqa: BLE001 - reported, the call goes on
                self._on_error(f"{type(processor).__name__}.on_emit", error)

    emit = on_emit
