"""The `opentelemetry-instrument` entry points: distro and configurator.

`opentelemetry-instrument <command>` puts a `sitecustomize` on PYTHONPATH;
in the launched process it then runs, in this order (opentelemetry-
instrumentation's `auto_instrumentation._initialize`):

1. gevent's `patch_all()` when OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_
   GEVENT_PATCH=patch_all;
2. the distro's `configure()` (ours: `ShowmaxDistro._configure`);
3. one configurator's `configure()` (ours: `ShowmaxConfigurator`, which
   calls `init_telemetry()`);
4. `distro.load_instrumentor()` for every instrumentor entry point.

Importing `opentelemetry.instrumentation.auto_instrumentation` has already
imported threading and ssl (through wrapt and asyncio) before step 1, so
"before anything imports ssl" cannot hold under this CLI. What gevent needs
is that nothing holding a reference to the original `ssl.SSLContext`
(urllib3, requests, grpc) is imported before patching; step 3 imports
them, so steps 1 and 2 are where patching must happen.

The pipeline that results is the one `init_telemetry()` builds, and calling
`init_telemetry()` or `instrument_app()` again from the application changes
nothing: the configurator's call is the first one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

# The module declares itself untyped (`# type: ignore` at its top).
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

__all__ = ["ShowmaxConfigurator", "ShowmaxDistro"]

_logger = logging.getLogger("showmax_otel.distro")

# What the distro sets when the environment does not say otherwise. The
# exporters' defaults already match; setting the variables keeps anything
# else in the process that reads them (another instrumentation's exporter)
# on the same transport.
_ENV_DEFAULTS = {
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_LOGS_EXPORTER": "otlp",
    # This package ships no metrics; without this, a configurator of
    # another distro would export metrics to a collector that may not
    # accept them.
    "OTEL_METRICS_EXPORTER": "none",
}

_CONFIGURATOR_NAME = "showmax_otel"
_CLI_GEVENT_SWITCH = "OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH"
_LEGACY_SDK_LOGGING = "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"

# Instrumentor entry points this package replaces with its own work.
_FALCON_ENTRY_POINT = "falcon"
_LOGGING_ENTRY_POINT = "logging"


class ShowmaxDistro(BaseDistro):
    """The distro `opentelemetry-instrument` loads as `showmax_otel`.

    Sets the environment defaults, patches gevent early when the command
    line starts a gevent server, makes our configurator the one that runs,
    and keeps the Falcon and logging instrumentors from doubling what the
    pipeline already does.
    """

    def _configure(self, **kwargs: Any) -> None:
        for name, value in _ENV_DEFAULTS.items():
            os.environ.setdefault(name, value)
        # With opentelemetry-distro also installed, the first configurator
        # found would run when none is named, and its SDK pipeline would sit
        # beside ours. Naming ours unless the user named one makes the
        # choice of distro enough.
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", _CONFIGURATOR_NAME)
        _patch_gevent_first()

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        from . import _state

        name = getattr(entry_point, "name", "")
        if _state.current() is None:
            # Another configurator was named and ours did not run: without
            # our pipeline, the instrumentors do their usual work.
            super().load_instrumentor(entry_point, **kwargs)
            return
        if name == _FALCON_ENTRY_POINT:
            # The upstream instrumentor swaps `falcon.App` for a subclass
            # that makes its own server span; ours (`instrument_falcon`,
            # `instrument_app()`) makes the one server span per request.
            _logger.debug("showmax_otel instruments Falcon itself; skipping %s", name)
            return
        if name == _LOGGING_ENTRY_POINT:
            _load_logging_instrumentor(entry_point, **kwargs)
            return

        super().load_instrumentor(entry_point, **kwargs)


class ShowmaxConfigurator:
    """The configurator `opentelemetry-instrument` loads as `showmax_otel`.

    It builds the pipeline with `init_telemetry()`, configured by the same
    OTEL_* and SHOWMAX_OTEL_* variables. It does not subclass the SDK's
    private `_BaseConfigurator`: the CLI only calls `configure()`.
    """

    def configure(self, **kwargs: Any) -> None:
        from ._telemetry import init_telemetry
        from .server_logs import install_uwsgi_logvars

        telemetry = init_telemetry()
        install_uwsgi_logvars(telemetry)


def _load_logging_instrumentor(entry_point: Any, **kwargs: Any) -> None:
    """Run the logging instrumentor for what it adds, and not its handler.

    It adds the trace-context record factory and, with
    OTEL_PYTHON_LOG_CORRELATION=true, a console handler with a format that
    shows the ids. Its own bridge handler would ship every record a second
    time, so it is asked not to install one. Its `basicConfig()` call does
    nothing while the root logger has a handler, so the bridge steps aside
    for that call and comes back after it.
    """
    from . import _state

    instrumentor = entry_point.load()
    kwargs.setdefault("enable_log_auto_instrumentation", False)
    telemetry = _state.current()
    bridge = getattr(telemetry, "bridge", None)
    with _hidden_env(_LEGACY_SDK_LOGGING), _bridge_stepped_aside(bridge):
        # The variable only tells the instrumentor that the SDK's handler
        # is active, which is never the case with our configurator; hidden,
        # the instrumentor does not warn about skipping its handler.
        instrumentor().instrument(**kwargs)


@contextmanager
def _hidden_env(name: str) -> Iterator[None]:
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


@contextmanager
def _bridge_stepped_aside(bridge: Any) -> Iterator[None]:
    if bridge is None:
        yield
        return
    root = logging.getLogger()
    root.removeHandler(bridge.handler)
    try:
        yield
    finally:
        bridge.ensure()


# -- gevent ------------------------------------------------------------------


def _patch_gevent_first() -> None:
    """Patch before the configurator imports urllib3, requests or grpc.

    Done only when the CLI's own switch did not do it and the command line
    starts a gevent server: gunicorn with a gevent worker class, or uWSGI
    with `--gevent`. Their workers patch again, which changes nothing; a
    gunicorn `--preload` or a uWSGI master that loads the application
    needs it done here.
    """
    if os.environ.get(_CLI_GEVENT_SWITCH):
        return
    from .server_logs import process_command_line

    if not _command_starts_gevent_server(process_command_line()):
        return
    try:
        from gevent import monkey
    except ImportError:
        return
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()


def _command_starts_gevent_server(argv: Sequence[str]) -> bool:
    if not argv:
        return False
    program = os.path.basename(argv[0])
    if program.startswith("gunicorn"):
        extra = os.environ.get("GUNICORN_CMD_ARGS", "").split()
        return _gunicorn_worker_is_gevent([*argv[1:], *extra])
    if program.startswith("uwsgi"):
        return _uwsgi_uses_gevent(argv[1:])

    return False


def _gunicorn_worker_is_gevent(args: Sequence[str]) -> bool:
    """A gevent worker class given with -k or --worker-class."""
    # Limitation: a worker class set only in a gunicorn config file is not
    # seen, so nothing is patched early; such set-ups need the CLI's switch
    # (OTEL_PYTHON_AUTO_INSTRUMENTATION_EXPERIMENTAL_GEVENT_PATCH=patch_all)
    # or patching at the top of the config file.
    worker_class = ""
    for index, arg in enumerate(args):
        if arg in ("-k", "--worker-class") and index + 1 < len(args):
            worker_class = args[index + 1]
        elif arg.startswith("--worker-class="):
            worker_class = arg.partition("=")[2]
        elif arg.startswith("-k") and len(arg) > 2:
            worker_class = arg[2:]

    return "gevent" in worker_class.lower()


def _uwsgi_uses_gevent(args: Sequence[str]) -> bool:
    """`--gevent N` on the command line, UWSGI_GEVENT, or `gevent` in an ini."""
    # Limitation: only ini files named on the command line are read; a
    # gevent option in XML, YAML, JSON or included files is not seen, and
    # nothing is patched early (use the CLI's switch with those).
    if os.environ.get("UWSGI_GEVENT"):
        return True
    ini_files = []
    for index, arg in enumerate(args):
        if arg == "--gevent" or arg.startswith("--gevent="):
            return True
        if arg == "--ini" and index + 1 < len(args):
            ini_files.append(args[index + 1])
        elif arg.startswith("--ini="):
            ini_files.append(arg.partition("=")[2])
        elif arg.endswith(".ini") and not arg.startswith("-"):
            ini_files.append(arg)

    from .doctor import read_uwsgi_ini

    return any("gevent" in read_uwsgi_ini(path) for path in ini_files)
