"""Run the rotel OTLP collector as a real collector hop, on loopback.

The `rotel` package on PyPI ships a real OpenTelemetry collector (written in
Rust) inside its wheel. The tests and `showmax-otel demo` put it between the
app and a receiver, so that telemetry crosses the same topology as in
production: app -> collector -> backend.

We start the binary itself rather than the package's Python wrapper: the
wrapper daemonises, writes a fixed pid file in /tmp and cannot be stopped by
pid. Here each instance gets free loopback ports chosen at run time, its own
temporary folder for its log, a bounded readiness poll and a bounded stop
(SIGTERM, then SIGKILL).

The binary links against the CPython shared library of the version its wheel
was built for (libpython3.11.so.1.0 for a cp311 wheel); `start_rotel` adds the
running interpreter's library folder to LD_LIBRARY_PATH when it holds that
library, and otherwise relies on the system's (Debian: `libpython3.11`).

Limitation: readiness means both ports accept TCP connections, and a port
picked free can be taken by another process before rotel binds it; a start
that fails that way is retried with new ports, up to three times. rotel is an
alpha release whose flags may change between versions, so the project pins it.

Importing this module starts nothing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

__all__ = [
    "RotelError",
    "RotelProcess",
    "find_rotel",
    "rotel_version",
    "start_rotel",
]

# The executable inside the installed `rotel` package (rotel 0.0.1a15 and
# earlier ship it as rotel-agent).
_BINARY_NAMES = ("rotel-agent", "rotel")
_PROTOCOLS = ("http", "grpc")
# Tries when the kernel hands a port that another process takes before rotel
# binds it; each try picks new ports.
_START_ATTEMPTS = 3


class RotelError(RuntimeError):
    """rotel is missing, did not start, or did not stop."""


def find_rotel() -> Path | None:
    """Path of the rotel collector binary in the installed `rotel` package.

    None when the package is not installed or holds no executable.
    """
    # find_spec does not import the package (its __init__ imports the wrapper).
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for name in _BINARY_NAMES:
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate

    return None


def _library_path() -> str | None:
    """The interpreter's shared-library folder, when it holds libpython."""
    folder = sysconfig.get_config_var("LIBDIR")
    version = sysconfig.get_config_var("LDVERSION") or sysconfig.get_python_version()
    if not folder or not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return None
    if (Path(folder) / f"libpython{version}.so.1.0").is_file():
        return str(folder)

    return None


def _environment() -> dict[str, str]:
    # rotel reads every flag from a ROTEL_* variable too; a stray one in the
    # caller's environment must not change the hop.
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("ROTEL_")
    }
    library = _library_path()
    if library is not None:
        current = environment.get("LD_LIBRARY_PATH")
        environment["LD_LIBRARY_PATH"] = f"{library}:{current}" if current else library

    return environment


def rotel_version(binary: str | os.PathLike[str] | None = None) -> str:
    """Run `rotel version`: proves the binary loads (its libpython included).

    Raises RotelError with the loader's message when it cannot run, e.g.
    "error while loading shared libraries: libpython3.11.so.1.0".
    """
    executable = Path(binary) if binary is not None else find_rotel()
    if executable is None:
        raise RotelError("the rotel collector is not installed: pip install rotel")
    try:
        result = subprocess.run(
            [str(executable), "version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=_environment(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RotelError(f"cannot run {executable}: {exc}") from exc
    if result.returncode != 0:
        raise RotelError(
            f"{executable} does not run (status {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )

    return result.stdout.strip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _kill_quietly(pid: int) -> None:
    """Last resort for an instance nobody stopped (finalizer, interpreter exit)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


class RotelProcess:
    """A running rotel collector: OTLP in on two loopback ports, OTLP out.

    Use it as a context manager, or call `stop()`. `grpc_endpoint` and
    `http_endpoint` are what an app's OTLP exporter points at
    (`http://127.0.0.1:PORT`).
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        grpc_port: int,
        http_port: int,
        forward_to_endpoint: str,
        protocol: str,
        workdir: Path,
    ) -> None:
        self.process = process
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.forward_to_endpoint = forward_to_endpoint
        self.protocol = protocol
        self.workdir = workdir
        self.returncode: int | None = None
        # Never leave a collector behind, even if the caller forgets stop().
        self._finalizer = weakref.finalize(self, _kill_quietly, process.pid)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "rotel.log"

    def log_text(self) -> str:
        """What rotel printed so far (JSON lines)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_seconds: float = 10.0) -> int:
        """SIGTERM by pid, wait up to `timeout_seconds`, then SIGKILL.

        rotel flushes what it holds (batches, retries in progress) when it
        gets SIGTERM. Returns the exit status (negative: killed by a signal).
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                # Bounded: SIGKILL cannot be ignored.
                self.process.wait(timeout=5.0)
        self._finalizer.detach()
        self.returncode = self.process.returncode

        return self.process.returncode

    def close(self) -> None:
        """Stop the collector and remove its temporary folder."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RotelProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else f"exited {self.process.returncode}"
        return (
            f"<RotelProcess pid={self.pid} grpc={self.grpc_endpoint} "
            f"http={self.http_endpoint} -> {self.forward_to_endpoint} "
            f"({self.protocol}) {state}>"
        )


def start_rotel(
    forward_to_endpoint: str,
    *,
    protocol: str = "http",
    batch_timeout: str = "200ms",
    retry_initial_backoff: str = "100ms",
    retry_max_backoff: str = "1s",
    startup_timeout_seconds: float = 10.0,
    extra_args: Sequence[str] = (),
    binary: str | os.PathLike[str] | None = None,
) -> RotelProcess:
    """Start rotel on free 127.0.0.1 ports, exporting to `forward_to_endpoint`.

    `forward_to_endpoint` is the base URL of the next OTLP hop
    (`http://127.0.0.1:PORT`, without `/v1/traces`); `protocol` is how rotel
    talks to it: "http" (OTLP/HTTP protobuf) or "grpc". rotel always accepts
    both gRPC and HTTP from the app. The retry backoffs are short so that a
    receiver answering 503 is retried within a test's patience; durations
    use rotel's syntax (`200ms`, `5s`).

    Returns once both ports accept connections, within
    `startup_timeout_seconds`; raises RotelError (with rotel's output) when
    the binary is missing or does not come up.
    """
    if protocol not in _PROTOCOLS:
        raise ValueError(
            f"start_rotel(protocol=...) accepts {' or '.join(map(repr, _PROTOCOLS))}, "
            f"got {protocol!r}"
        )
    if not forward_to_endpoint.startswith(("http://", "https://")):
        raise ValueError(
            "start_rotel(forward_to_endpoint=...) needs a URL such as "
            f"'http://127.0.0.1:4318', got {forward_to_endpoint!r}"
        )
    executable = Path(binary) if binary is not None else find_rotel()
    if executable is None:
        raise RotelError(
            "the rotel collector is not installed: pip install rotel "
            "(or the project's test extra)"
        )

    failures: list[str] = []
    for _ in range(_START_ATTEMPTS):
        started = _start_once(
            executable,
            forward_to_endpoint,
            protocol,
            [
                "--batch-timeout",
                batch_timeout,
                "--otlp-exporter-retry-initial-backoff",
                retry_initial_backoff,
                "--otlp-exporter-retry-max-backoff",
                retry_max_backoff,
                *extra_args,
            ],
            startup_timeout_seconds,
        )
        if isinstance(started, RotelProcess):
            return started
        failures.append(started)
        if "in use" not in started.lower():
            break

    raise RotelError(f"rotel ({executable}) did not start: " + "\n---\n".join(failures))


def _start_once(
    executable: Path,
    forward_to_endpoint: str,
    protocol: str,
    tuning: list[str],
    startup_timeout_seconds: float,
) -> RotelProcess | str:
    """One start attempt: the running process, or why it failed."""
    workdir = Path(tempfile.mkdtemp(prefix="showmax-otel-rotel-"))
    grpc_port, http_port = _free_port(), _free_port()
    while http_port == grpc_port:  # bounded: the kernel rarely repeats a port
        http_port = _free_port()
    command = [
        str(executable),
        "start",
        "--otlp-grpc-endpoint",
        f"127.0.0.1:{grpc_port}",
        "--otlp-http-endpoint",
        f"127.0.0.1:{http_port}",
        "--exporter",
        "otlp",
        "--otlp-exporter-endpoint",
        forward_to_endpoint,
        "--otlp-exporter-protocol",
        protocol,
        # Its own files, so that instances never share /tmp/rotel-agent.pid.
        "--pid-file",
        str(workdir / "rotel.pid"),
        "--log-file",
        str(workdir / "rotel-daemon.log"),
        "--log-format",
        "json",
        *tuning,
    ]
    with open(workdir / "rotel.log", "wb") as log:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_environment(),
            )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return f"cannot execute {executable}: {exc}"
    rotel = RotelProcess(
        process,
        grpc_port=grpc_port,
        http_port=http_port,
        forward_to_endpoint=forward_to_endpoint,
        protocol=protocol,
        workdir=workdir,
    )

    deadline = time.monotonic() + startup_timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _accepts(grpc_port) and _accepts(http_port) and process.poll() is None:
            return rotel
        time.sleep(0.02)

    output = rotel.log_text().strip() or "(no output)"
    status = process.poll()
    rotel.close()
    if status is None:
        return (
            f"ports {grpc_port}/{http_port} did not accept connections within "
            f"{startup_timeout_seconds:g} s; output:\n{output[-2000:]}"
        )
    return f"exited with status {status}; output:\n{output[-2000:]}"


def _main() -> int:
    """`python -m showmax_otel._rotel`: say whether the rotel binary runs here."""
    try:
        print(f"rotel {rotel_version()} ({find_rotel()})")
    except RotelError as exc:
        print(f"rotel: {exc}", file=sys.stderr)
        return 1

    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
