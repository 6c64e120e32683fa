"""Start and stop real uWSGI and gunicorn servers from the tests.

`ServerProcess` runs any command line (a server, or a server under
`opentelemetry-instrument`) with its own environment on a loopback port
chosen at run time, waits for it with a bounded readiness poll, and stops
it by its pid with a signal, keeping everything it printed::

    port = free_port()
    with ServerProcess(uwsgi_command("app:app", port, processes=2), port=port,
                       env=server_env(receiver)) as server:
        status, body = server.get("/ok")
        elapsed = server.stop(signal.SIGINT)

Every wait here has a deadline; nothing sleeps to synchronise. The server
runs in its own session, so a stop that times out kills its whole process
group and no worker outlives the test.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "APPS_DIR",
    "ServerProcess",
    "free_port",
    "gunicorn_command",
    "server_env",
    "uwsgi_command",
]

APPS_DIR = Path(__file__).parent / "apps" / "servers"
_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(
    endpoint: str | None = None,
    *,
    protocol: str = "http/protobuf",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """This process's environment without OTEL_*/SHOWMAX_OTEL_*, plus `extra`.

    `endpoint` becomes OTEL_EXPORTER_OTLP_ENDPOINT; the batching delays are
    short so that records leave the workers within a test's patience.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(APPS_DIR), env.get("PYTHONPATH", "")) if part
    )
    env["PYTHONUNBUFFERED"] = "1"
    env["OTEL_SERVICE_NAME"] = "server-tests"
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    env["OTEL_BLRP_SCHEDULE_DELAY"] = "200"
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.update(extra or {})

    return env


def uwsgi_command(
    module: str,
    port: int,
    *,
    processes: int = 2,
    gevent: int | None = None,
    enable_threads: bool = True,
    socket_option: str = "--http-socket",
    extra: Iterable[str] = (),
) -> list[str]:
    """A uWSGI command line: master plus `processes` workers on 127.0.0.1:`port`.

    `module` is `module:callable` (found through PYTHONPATH). With `gevent`,
    each worker runs uWSGI's gevent loop with that many async cores.
    """
    command = [
        str(_BIN / "uwsgi"),
        socket_option,
        f"127.0.0.1:{port}",
        "--master",
        "--processes",
        str(processes),
        "--module",
        module,
        "--need-app",
        "--die-on-term",
        # A worker that does not stop within this bound is killed by the
        # master; the tests keep the flush well below it and read the log
        # for the kill.
        "--worker-reload-mercy",
        "20",
        "--reload-mercy",
        "20",
        "--disable-logging",
    ]
    if enable_threads:
        command.append("--enable-threads")
    if gevent is not None:
        command += ["--gevent", str(gevent)]
    command += list(extra)

    return command


def gunicorn_command(
    module: str,
    port: int,
    *,
    workers: int = 2,
    worker_class: str = "sync",
    preload: bool = False,
    extra: Iterable[str] = (),
) -> list[str]:
    """A gunicorn command line: `workers` workers on 127.0.0.1:`port`."""
    command = [
        str(_BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        worker_class,
        "--graceful-timeout",
        "20",
        "--log-level",
        "info",
    ]
    if preload:
        command.append("--preload")
    command += [*extra, module]

    return command


class ServerProcess:
    """A server process started from a test, stopped by its pid.

    `argv` and `env` are used as given; `port` is where `ready()` polls.
    The output (stdout and stderr together) goes to a temporary file that
    `output()` reads at any time.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        ready_path: str = "/ok",
        start_timeout_seconds: float = 60.0,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.ready_path = ready_path
        self.start_timeout_seconds = start_timeout_seconds
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="server-", suffix=".log", delete=False
        )

    # -- lifecycle -------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server has not been started")
        return self.process.pid

    def start(self) -> ServerProcess:
        """Start the server and wait until `ready_path` answers 200."""
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.ready(self.start_timeout_seconds)

        return self

    def ready(self, timeout_seconds: float) -> None:
        """Poll `ready_path` until it answers 200; raise with the output if not."""
        deadline = time.monotonic() + timeout_seconds
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self.returncode() is not None:
                raise RuntimeError(
                    f"server exited with {self.returncode()} before it was ready:\n"
                    + self.output()
                )
            try:
                status, _ = self.get(self.ready_path, timeout_seconds=2.0)
            except OSError as error:
                last_error = error
            else:
                if status == 200:
                    return
            self.wait(0.05)
        raise TimeoutError(
            f"server not ready within {timeout_seconds} s ({last_error!r}):\n"
            + self.output()
        )

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def wait(self, timeout_seconds: float) -> int | None:
        """Wait for the server to exit; its status, or None if it still runs."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            return None

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the server's main process (the master)."""
        if self.returncode() is None:
            os.kill(self.pid, signum)

    def stop(
        self, signum: int = signal.SIGTERM, timeout_seconds: float = 30.0
    ) -> float:
        """Send `signum` and wait for the exit; the seconds it took.

        If the server outlives `timeout_seconds`, its process group is
        killed and TimeoutError is raised.
        """
        started = time.monotonic()
        self.send_signal(signum)
        if self.wait(timeout_seconds) is None:
            self.kill()
            raise TimeoutError(
                f"server did not stop within {timeout_seconds} s of signal "
                f"{signum}:\n" + self.output()
            )

        return time.monotonic() - started

    def kill(self) -> None:
        """Kill the whole process group at once (workers included)."""
        if self.process is None:
            return
        # Already gone, with all its children, is fine.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.returncode() is None:
            # On a timeout stop() has killed the process group already.
            with contextlib.suppress(TimeoutError):
                self.stop(signal.SIGINT, timeout_seconds=15)
        else:
            # The master is gone; make sure no orphaned worker remains.
            self.kill()
        self._log.close()
        # What a failing test needs of the log it has read by now; keep /tmp clean.
        Path(self._log.name).unlink(missing_ok=True)

    # -- talking to it ---------------------------------------------------------

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def get(self, path: str, timeout_seconds: float = 10.0) -> tuple[int, bytes]:
        """One GET on a fresh connection: (status, body)."""
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=timeout_seconds
        )
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def get_json(self, path: str, timeout_seconds: float = 10.0) -> dict[str, Any]:
        """GET `path`, insist on 200, and decode the JSON body."""
        status, body = self.get(path, timeout_seconds)
        if status != 200:
            raise AssertionError(f"GET {path} answered {status}: {body!r}")
        result: dict[str, Any] = json.loads(body)

        return result
