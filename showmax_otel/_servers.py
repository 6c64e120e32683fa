"""uWSGI and gunicorn: where export may start, worker start and exit hooks, checks.

Pre-fork servers import the application once and fork workers from it.
Each worker must export its own records through its own thread and
connections; `_pipeline` starts both lazily in the process that emits.
What the servers add, and this module handles:

- uWSGI forks in C. Python's `os.register_at_fork` hooks do not run (unless
  `--py-call-osafterfork`), so the SDK never learns about the fork and a
  worker's first spans would carry the master's `process.pid`; nor does
  gevent's, so a hub the master made (the SDK's resource detection runs
  on a thread pool, which under gevent starts the hub) would stay shared
  with it, and a worker would miss its own stop signals. The
  `uwsgi.post_fork_hook` set here re-initialises gevent, updates the
  resource and starts the gevent hub-block watch in each worker before it
  serves.
- A master serves nothing (uWSGI's; gunicorn's when it imported the app);
  `may_start_worker()` keeps it from starting an export thread (or a gRPC
  channel), so no thread runs while it forks (one holding an import lock
  at that moment leaves it held, forever, in the worker), and it exports
  nothing.
- The SDK's providers refresh their resource in every `os.fork()` child
  on a thread pool, which under gevent switches greenlets in a child that
  gevent's `subprocess` forked only to exec: the parent's requests then
  run in the child. `ForkSafeTracerProvider` and `ForkSafeLoggerProvider`
  do the same refresh inline.
- A uWSGI worker never runs Python's `atexit` in async (gevent) mode, nor
  when uWSGI skips the interpreter teardown: the flush runs from
  `uwsgi.atexit`, uWSGI's own exit hook, bounded by
  `shutdown_timeout_seconds` so that a reload never reaches the
  worker-reload-mercy kill. Workers stop gracefully on a master FIFO `q`
  or `r`, or SIGHUP (reload); on SIGTERM and SIGINT uWSGI stops them
  abruptly, and a busy sync worker skips its exit hooks altogether.
- gunicorn forks with `os.fork()` and runs `atexit` in its workers, so it
  needs nothing beyond the pid check; no `post_fork` hook is needed, and
  calling `init_telemetry()` again in one changes nothing. Its gevent
  worker patches after the fork: with `--preload` the application was
  imported unpatched, which the patch-all subscription below reports.
- Stop signals are held back during the exit flush, and under gevent the
  flush waits on a real lock (uWSGI's gevent loop calls its exit hook
  twice and exits as soon as the second call returns).
  Limitation: not before the flush starts. A worker that has just served
  its last request (max-requests) and is on its way to the exit hook when
  the master's graceful stop reaches it runs uWSGI's SIGHUP handler, which
  calls exit() again from inside the first exit: the hooks still to run,
  ours among them, never do, and what the worker queued is lost. The
  window is the time uWSGI's exit path takes to reach the hook (mostly
  waiting for the GIL while an export thread holds it, a few
  milliseconds); a test that stopped the master right after a recycle
  lost a worker's records about once in twenty runs.
- Under `opentelemetry-instrument`, `init_telemetry()` runs from
  `sitecustomize`, which uWSGI's master imports inside `Py_Initialize()`:
  before uWSGI has made its `uwsgi` module (and while `sys.argv` is
  `['']`). Nothing can be hooked then, and the process is the master to
  be, so it prepares nothing and starts no thread; each worker installs
  the hooks (the exit flush above) and re-initialises gevent when it first
  exports, as the post-fork hook would have done.
  Limitation: until that first export a worker still shares the master's
  gevent hub (its epoll set), and the uWSGI option checks at init
  (`--skip-atexit`, a `--worker-reload-mercy` shorter than the flush) find
  no `uwsgi` module and say nothing; `showmax-otel doctor --server
  "uwsgi ..."` still reports them.

This module never imports `uwsgi` or `gunicorn`; it looks at them only when
they are already loaded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from . import _gevent, _state

__all__ = [
    "ForkSafeLoggerProvider",
    "ForkSafeTracerProvider",
    "ServerHooks",
    "after_init",
    "findings_for_uwsgi_options",
    "in_uwsgi_master",
    "may_start_worker",
    "uwsgi_option_findings",
]

_logger = logging.getLogger("showmax_otel.servers")

# Set on the hooks installed into the uwsgi module, to recognise our own.
_HOOK_MARK = "_showmax_otel_hooks"


# -- providers that survive a fork -------------------------------------------------


def process_resource() -> Resource:
    """The attributes a forked child must not share with its parent.

    Its pid, and a `service.instance.id` of its own, unless one was
    configured (`resource_attributes` or OTEL_RESOURCE_ATTRIBUTES): that one
    is the user's name for the whole service and stays, where the SDK's own
    fork step would replace it.
    """
    resource = Resource({"process.pid": os.getpid()})
    if _instance_id_configured():
        return resource
    try:
        from opentelemetry.sdk.resources import ServiceInstanceIdResourceDetector
    except ImportError:
        # Older SDKs have no such detector, and no per-process instance id.
        return resource

    return resource.merge(ServiceInstanceIdResourceDetector().detect())


def _instance_id_configured() -> bool:
    key = "service.instance.id"
    telemetry = _state.current()
    if telemetry is not None and key in telemetry.settings.resource_attributes:
        return True
    return f"{key}=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").replace(" ", "")


class ForkSafeTracerProvider(TracerProvider):
    """The SDK's TracerProvider, with an after-fork step that never yields.

    The SDK refreshes the resource in every child of `os.fork()` by running
    the resource detectors on a thread pool. Under gevent that pool is made
    of greenlets, and waiting for them switches to the hub inside the child:
    a child that gevent's `subprocess` forks only to exec a program first
    runs the parent's other greenlets (its requests), which then answer on
    the parent's sockets. This one refreshes the same attributes inline.
    """

    def _handle_fork(self) -> None:
        import threading

        self._tracers_lock = threading.Lock()
        self._update_resource(process_resource())


class ForkSafeLoggerProvider(LoggerProvider):
    """The SDK's LoggerProvider, with an after-fork step that never yields."""

    def _handle_fork(self) -> None:
        import threading

        self._logger_cache_lock = threading.Lock()
        self._active_loggers_lock = threading.Lock()
        self._update_resource(process_resource())


# -- where export may run --------------------------------------------------------


def _uwsgi() -> Any:
    """The embedded `uwsgi` module, when this process runs inside uWSGI."""
    return sys.modules.get("uwsgi")


def in_uwsgi_master() -> bool:
    """Whether this process is the uWSGI master (which serves nothing)."""
    uwsgi = _uwsgi()
    if uwsgi is None:
        return False
    try:
        return bool(uwsgi.masterpid() == os.getpid())
    except Exception:  # noqa: BLE001 - an odd embedding; treat it as a worker
        return False


def _uwsgi_starting() -> bool:
    """Whether uWSGI is initialising this interpreter and has no module yet.

    True only while `sitecustomize` runs in uWSGI's master (under
    `opentelemetry-instrument`): uWSGI leaves `sys.argv` empty until it
    has made its `uwsgi` module, and the kernel's command line names it.
    """
    if _uwsgi() is not None or any(getattr(sys, "argv", None) or ()):
        return False
    from .server_logs import process_command_line

    argv = process_command_line()

    return bool(argv) and os.path.basename(argv[0]).startswith("uwsgi")


def may_start_worker() -> bool:
    """Whether this process may start export threads now.

    Called by the export queues the first time a process emits. False in a
    pre-fork server's master (uWSGI's, or gunicorn's with `--preload` or
    under `opentelemetry-instrument`): a thread there may hold a lock (an
    import's, say) at the moment it forks, and the worker that inherits
    that lock hangs on it. Elsewhere it first finishes this process's setup
    (once per pid): the resource's pid and, under gevent, the watch.
    """
    if in_uwsgi_master() or _uwsgi_starting():
        return False
    hooks = _hooks()
    if hooks is not None:
        if hooks.master_pid == os.getpid():
            return False
        hooks.prepare_process()

    return True


def _in_gunicorn_master() -> bool:
    """Whether this process is gunicorn's arbiter, before any fork.

    True when the command is gunicorn and no worker is loading the
    application on the current stack (gunicorn's own workers import it
    from `gunicorn/workers/`; with `--preload` the arbiter does).
    """
    # Limitation: gunicorn started from Python (`WSGIApplication().run()`
    # in a script of one's own) is not recognised; its master then
    # exports its own records, from a thread that is running while it forks.
    if not _command_name().startswith("gunicorn"):
        return False
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        if f"gunicorn{os.sep}workers{os.sep}" in frame.f_code.co_filename:
            return False
        frame = frame.f_back

    return True


def _command_name() -> str:
    argv = [arg for arg in getattr(sys, "argv", []) if arg]
    if not argv:
        return ""
    name = os.path.basename(argv[0])
    if name.startswith("python") and len(argv) > 2 and argv[1] == "-m":
        name = argv[2]

    return name


def _hooks() -> ServerHooks | None:
    telemetry = _state.current()
    hooks = getattr(telemetry, "server_hooks", None)

    return hooks if isinstance(hooks, ServerHooks) else None


def after_init(telemetry: Any) -> None:
    """Hook the server's worker start and exit, report what needs fixing."""
    hooks = ServerHooks(telemetry)
    # The Telemetry object owns the hooks: they live and die with it.
    telemetry.server_hooks = hooks
    _state.on_reset(hooks.close)
    hooks.install()


# -- the hooks ------------------------------------------------------------------


class ServerHooks:
    """Per-process setup, the uWSGI hooks and the gevent watch of one Telemetry."""

    def __init__(self, telemetry: Any) -> None:
        self.telemetry = telemetry
        self.settings = telemetry.settings
        self.watch: _gevent.HubBlockWatch | None = None
        # The pid of a gunicorn arbiter that loaded the app: it exports nothing.
        self.master_pid = os.getpid() if _in_gunicorn_master() else 0
        # Built before uWSGI made its module (`opentelemetry-instrument`):
        # the uWSGI hooks wait for the first worker that exports.
        self._uwsgi_pending = _uwsgi_starting()
        self._built_pid = os.getpid()
        self._request_spans: _gevent.RequestSpans | None = None
        self._prepared_pid = 0
        self._exit_flushed_pid = 0
        self._reported: set[str] = set()
        self._undo: list[Callable[[], None]] = []

    def install(self) -> None:
        # `init_telemetry()` has reported these already (see `doctor`); a
        # worker reports only what changes after the fork or a late patch.
        self._reported.update(_gevent.patch_findings())
        self._reported.update(
            uwsgi_option_findings(self.settings.shutdown_timeout_seconds)
        )
        uwsgi = _uwsgi()
        if uwsgi is not None:
            self._install_uwsgi_hooks(uwsgi)
        self._undo.append(_gevent.subscribe_to_patch_all(self.on_patch_all))
        if (
            not self._uwsgi_pending
            and not in_uwsgi_master()
            and self.master_pid != os.getpid()
        ):
            # In a master, workers do this after the fork.
            self.prepare_process()

    def prepare_process(self) -> None:
        """Once per process: the resource's pid, then gevent's part."""
        pid = os.getpid()
        if self._prepared_pid == pid:
            return
        self._prepared_pid = pid
        if self._uwsgi_pending:
            self._install_late_uwsgi_hooks()
        self.telemetry.on_new_process()
        self._setup_gevent()

    def _install_late_uwsgi_hooks(self) -> None:
        """The uWSGI hooks `install()` could not set, in a worker that exports.

        uWSGI reads `uwsgi.atexit` when the worker exits, so setting it now
        is enough for the exit flush. The post-fork hook cannot run any
        more for this worker: its gevent re-initialisation is done here.
        """
        uwsgi = _uwsgi()
        if uwsgi is None:
            return
        self._uwsgi_pending = False
        self._install_uwsgi_hooks(uwsgi)
        if os.getpid() != self._built_pid:
            # Forked in C from the master, whose hub (made by the SDK's
            # resource detection) this worker still shares.
            _gevent.reinit_after_c_fork()

    def after_uwsgi_fork(self) -> None:
        """uWSGI's post-fork hook, in each new worker, mule or spooler."""
        try:
            _gevent.reinit_after_c_fork()
            self.prepare_process()
        except Exception as error:  # noqa: BLE001 - a hook must not stop the worker
            self._internal_error("preparing a uWSGI worker", error)

    def on_patch_all(self) -> None:
        """gevent just patched this process (a gunicorn gevent worker, say)."""
        try:
            if in_uwsgi_master() or self.master_pid == os.getpid() or _uwsgi_starting():
                self._report(_gevent.patch_findings())
                return
            # A gunicorn gevent worker patches before it loads the app and
            # serves: its process is prepared before its first request.
            self.prepare_process()
            self._setup_gevent()
        except Exception as error:  # noqa: BLE001 - never break the patching
            self._internal_error("setting up after gevent patched", error)

    def flush_at_exit(self) -> None:
        """Flush and stop within the shutdown bound (uWSGI's exit hook).

        uWSGI's gevent loop calls its exit hook twice in a worker that
        stops after its last request: from that request's greenlet, then
        from the main one, which exits the process as soon as the hook
        returns. So under gevent the flush runs on a real thread while this
        one waits on a real lock: the hub stays blocked (the worker serves
        nothing any more), the second call cannot start before the first
        ends, and the export threads go on meanwhile.
        """
        pid = os.getpid()
        if self._exit_flushed_pid == pid:
            return
        self._exit_flushed_pid = pid
        if self.watch is not None:
            # Blocking the hub here is on purpose; it is not worth a report.
            self.watch.stop()
        timeout_seconds = self.settings.shutdown_timeout_seconds
        # A stop signal arriving now (the master's SIGHUP to a worker that
        # is already exiting after max-requests, say) would run uWSGI's
        # handler, which exits from inside this flush. Held back, it is
        # delivered when the flush is over; the master's mercy kill still
        # bounds the whole.
        with _stop_signals_held():
            self._flush_at_exit(timeout_seconds)

    def _flush_at_exit(self, timeout_seconds: float) -> None:
        if not _gevent.gevent_in_use():
            self._shutdown(timeout_seconds)
            return

        from ._pipeline import native_allocate_lock, native_start_thread

        done = native_allocate_lock()
        done.acquire()

        def shutdown_and_release() -> None:
            try:
                self._shutdown(timeout_seconds)
            finally:
                done.release()

        native_start_thread(shutdown_and_release, "otel-exit-flush")
        # A little beyond the bound: the shutdown keeps it by itself.
        done.acquire(timeout=timeout_seconds + 1.0)

    def _shutdown(self, timeout_seconds: float) -> None:
        try:
            self.telemetry.shutdown(timeout_seconds)
        except Exception as error:  # noqa: BLE001 - the worker is exiting anyway
            self._internal_error("flushing at worker exit", error)

    def close(self) -> None:
        """Undo what `install()` did in this process (for tests)."""
        if self.watch is not None:
            self.watch.stop()
        while self._undo:
            self._undo.pop()()

    # -- gevent -------------------------------------------------------------------

    def _setup_gevent(self) -> None:
        uwsgi_gevent = _uwsgi_loop() == "gevent"
        if not (_gevent.gevent_in_use() or uwsgi_gevent):
            return
        self._report(_gevent.patch_findings())
        _gevent.prepare_export(http=self._uses_http())
        self._start_watch()

    def _start_watch(self) -> None:
        threshold_seconds = self.settings.hub_block_threshold_millis / 1000
        if threshold_seconds <= 0 or not _gevent.in_main_thread():
            # Limitation: a process whose first record comes from a thread
            # other than the main one, and that neither forks from uWSGI
            # nor patches after init, runs without the watch.
            return
        if self.watch is None:
            provider = self.telemetry.tracer_provider
            if hasattr(provider, "add_span_processor"):
                self._request_spans = _gevent.RequestSpans()
                provider.add_span_processor(self._request_spans)
            self.watch = _gevent.HubBlockWatch(
                threshold_seconds,
                self._block_reporter(threshold_seconds),
                spans=self._request_spans,
                on_error=self._internal_error,
            )
        self.watch.start()

    def _block_reporter(self, threshold_seconds: float) -> Callable[[Any], None]:
        provider = self.telemetry.logger_provider
        if provider is None or self.settings.logs_exporter == "none":
            return lambda block: _logger.warning(
                "showmax_otel: gevent event loop blocked for %.1f ms by %s",
                block.duration_seconds * 1000,
                block.greenlet,
            )

        return _gevent.block_record_reporter(
            provider,
            threshold_seconds=threshold_seconds,
            max_attribute_bytes=self.settings.max_attribute_bytes,
        )

    def _uses_http(self) -> bool:
        protocols = {self.settings.signal_protocol(s) for s in ("traces", "logs")}

        return protocols != {"grpc"}

    # -- uWSGI ----------------------------------------------------------------------

    def _install_uwsgi_hooks(self, uwsgi: Any) -> None:
        previous_exit = getattr(uwsgi, "atexit", None)
        if getattr(previous_exit, _HOOK_MARK, None) is not self:

            def flush_at_uwsgi_exit() -> None:
                # The application's own exit hook first: what it logs ships.
                try:
                    if previous_exit is not None:
                        previous_exit()
                finally:
                    self.flush_at_exit()

            setattr(flush_at_uwsgi_exit, _HOOK_MARK, self)
            uwsgi.atexit = flush_at_uwsgi_exit
            self._undo.append(lambda: setattr(uwsgi, "atexit", previous_exit))

        decorators = sys.modules.get("uwsgidecorators")
        chain = getattr(decorators, "postfork_chain", None)
        previous_fork = getattr(uwsgi, "post_fork_hook", None)
        if isinstance(chain, list) and previous_fork is getattr(
            decorators, "postfork_chain_hook", None
        ):
            # uwsgidecorators owns the hook and replaces any other on import;
            # join its chain, first, so the pid is right for its hooks' spans.
            chain.insert(0, self.after_uwsgi_fork)
            self._undo.append(lambda: chain.remove(self.after_uwsgi_fork))
            return

        def prepare_uwsgi_worker() -> None:
            self.after_uwsgi_fork()
            if previous_fork is not None:
                previous_fork()

        uwsgi.post_fork_hook = prepare_uwsgi_worker
        self._undo.append(lambda: setattr(uwsgi, "post_fork_hook", previous_fork))

    # -- reporting ------------------------------------------------------------------

    def _report(self, findings: list[str]) -> None:
        for finding in findings:
            if finding not in self._reported:
                self._reported.add(finding)
                _logger.warning("showmax_otel: %s", finding)

    def _internal_error(self, what: str, error: BaseException) -> None:
        try:
            self.telemetry.report_internal_error(what, error)
        except BaseException:  # raised in strict mode (tests); keep it visible
            _logger.exception("showmax_otel: internal error while %s", what)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Block SIGHUP, SIGINT, SIGTERM and SIGQUIT on this thread meanwhile."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    stops = {
        getattr(signal, name)
        for name in ("SIGHUP", "SIGINT", "SIGTERM", "SIGQUIT")
        if hasattr(signal, name)
    }
    previous = mask(signal.SIG_BLOCK, stops)
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, previous)


# -- uWSGI option checks --------------------------------------------------------------


def _uwsgi_loop() -> str | None:
    uwsgi = _uwsgi()
    loop = getattr(uwsgi, "loop", None)
    if isinstance(loop, bytes):
        loop = loop.decode()

    return loop if isinstance(loop, str) else None


def uwsgi_option_findings(shutdown_timeout_seconds: float | None = None) -> list[str]:
    """Problems with the running uWSGI's options, each with its fix.

    Empty outside uWSGI. `shutdown_timeout_seconds` defaults to the
    configured one (or 5 s before `init_telemetry()`).
    """
    uwsgi = _uwsgi()
    if uwsgi is None:
        return []
    if shutdown_timeout_seconds is None:
        telemetry = _state.current()
        shutdown_timeout_seconds = 5.0
        if telemetry is not None:
            shutdown_timeout_seconds = telemetry.settings.shutdown_timeout_seconds
    gevent_version = ""
    if "gevent" in sys.modules:
        gevent_version = str(getattr(sys.modules["gevent"], "__version__", ""))

    return findings_for_uwsgi_options(
        getattr(uwsgi, "opt", {}),
        has_threads=bool(getattr(uwsgi, "has_threads", True)),
        uwsgi_version=_text(getattr(uwsgi, "version", "")),
        gevent_version=gevent_version,
        shutdown_timeout_seconds=shutdown_timeout_seconds,
    )


def findings_for_uwsgi_options(
    options: Mapping[str, Any],
    *,
    has_threads: bool | None = None,
    uwsgi_version: str = "",
    gevent_version: str = "",
    shutdown_timeout_seconds: float = 5.0,
) -> list[str]:
    """Problems with a set of uWSGI options (`uwsgi.opt`, or read from an ini).

    `has_threads` is what uWSGI decided (`uwsgi.has_threads`); None when
    unknown, as for options read offline.
    """
    opts = {str(name): value for name, value in options.items()}
    gevent_loop = "gevent" in opts or _text(opts.get("loop")) == "gevent"
    findings = []

    threads_asked = any(name in opts for name in ("enable-threads", "threads"))
    no_threads = has_threads is False or (has_threads is None and not threads_asked)
    if no_threads and not gevent_loop:
        findings.append(
            (
                "uWSGI runs without Python threads (no --enable-threads)"
                if has_threads is False
                else "no --enable-threads: uWSGI releases before 2.0.31 then run "
                "without Python threads"
            )
            + ": the export thread only runs while a request holds the "
            "interpreter, so records wait in the queue, or are lost at exit; "
            "add --enable-threads"
        )
    if gevent_loop and "http11-socket" in opts:
        versions = " ".join(
            part
            for part in (
                f"uWSGI {uwsgi_version}" if uwsgi_version else "",
                f"gevent {gevent_version}" if gevent_version else "",
            )
            if part
        )
        findings.append(
            "uWSGI's gevent loop with --http11-socket crashes workers on keep-alive "
            "connections (an AttributeError on the libev watcher, then a libev "
            "assertion; seen with uWSGI 2.0.31 and gevent 26"
            + (f"; running {versions}" if versions else "")
            + "): use --http-socket, or --socket behind a proxy"
        )
    if "skip-atexit" in opts:
        findings.append(
            "--skip-atexit: workers stopped by SIGTERM or SIGINT exit without "
            "flushing telemetry, and their last records are lost; drop the option, "
            "or stop workers through the master FIFO or SIGHUP"
        )
    for option in ("worker-reload-mercy", "reload-mercy"):
        mercy = _number(opts.get(option))
        if mercy is not None and mercy <= shutdown_timeout_seconds:
            findings.append(
                f"--{option} {mercy:g} is not longer than the telemetry shutdown "
                f"timeout ({shutdown_timeout_seconds:g} s): a worker still "
                "flushing at a reload is killed and its last records lost; raise "
                f"--{option} above {shutdown_timeout_seconds:g} or lower "
                "SHOWMAX_OTEL_SHUTDOWN_TIMEOUT_SECONDS"
            )
    if (
        gevent_loop
        and not any(
            name in opts
            for name in ("gevent-monkey-patch", "gevent-early-monkey-patch")
        )
        and not _gevent.gevent_in_use()
    ):
        findings.append(
            "uWSGI runs the gevent loop but nothing is monkey-patched: blocking "
            "calls in requests hold every greenlet of the worker; add "
            "--gevent-early-monkey-patch, or call gevent.monkey.patch_all() at "
            "the top of the WSGI module"
        )

    return findings


def _text(value: Any) -> str:
    if isinstance(value, list):
        value = value[-1] if value else ""
    if isinstance(value, bytes):
        return value.decode(errors="replace")

    return "" if value is None or value is True else str(value)


def _number(value: Any) -> float | None:
    try:
        return float(_text(value))
    except ValueError:
        return None
