"""A test receiver in its own process, to stop and restart like a collector.

`python -m showmax_otel.testing` prints its endpoints as JSON on the first
line, then one JSON line per item received; a reader thread collects them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


class ReceiverProcess:
    """`python -m showmax_otel.testing`, started, stopped and restarted on its ports."""

    def __init__(self) -> None:
        self.http_port = 0
        self.grpc_port = 0
        self.http_endpoint = ""
        self.grpc_endpoint = ""
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._items: list[dict[str, Any]] = []
        self._changed = threading.Condition()

    def start(self, timeout_seconds: float = 30.0) -> None:
        """Start (or restart, on the same ports) and wait until it listens."""
        command = [
            sys.executable,
            "-m",
            "showmax_otel.testing",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
        ]
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
        }
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
            env=environment,
        )
        self._process = process
        ready = threading.Event()
        self._reader = threading.Thread(
            target=self._read, args=(process, ready), daemon=True
        )
        self._reader.start()
        if not ready.wait(timeout_seconds):
            process.kill()
            raise RuntimeError("the receiver process printed no endpoints")

    def _read(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        first = process.stdout.readline()
        endpoints = json.loads(first)
        self.http_endpoint = endpoints["http"]
        self.grpc_endpoint = endpoints["grpc"]
        self.http_port = int(self.http_endpoint.rsplit(":", 1)[1])
        self.grpc_port = int(self.grpc_endpoint.rsplit(":", 1)[1])
        ready.set()
        for line in process.stdout:
            item = json.loads(line)
            with self._changed:
                self._items.append(item)
                self._changed.notify_all()

    def stop(self) -> None:
        """Kill it, as a collector crash would; its ports close at once."""
        process = self._process
        if process is None:
            return
        process.kill()
        process.wait(30)
        # The reader takes what the process printed before it died, up to
        # the end of the pipe; the pipe is closed only after that.
        if self._reader is not None:
            self._reader.join(30)
            self._reader = None
        if process.stdout is not None:
            process.stdout.close()
        self._process = None

    def items(self) -> list[dict[str, Any]]:
        with self._changed:
            return list(self._items)

    def logs(self) -> list[dict[str, Any]]:
        return [item for item in self.items() if "severity_text" in item]

    def wait_for(
        self, predicate: Callable[[ReceiverProcess], bool], timeout_seconds: float
    ) -> bool:
        deadline = time.monotonic() + timeout_seconds
        with self._changed:
            while True:
                self._changed.release()
                try:
                    if predicate(self):
                        return True
                finally:
                    self._changed.acquire()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.2))
