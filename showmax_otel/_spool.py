"""An optional on-disk spool for export requests the collector did not take.

When an export fails (the collector is down, refuses, or times out), the
encoded OTLP request is written to a file instead of being dropped; when
exports succeed again, the oldest files are sent first and removed. The
spool is bounded twice: in bytes (the oldest files are evicted to make room,
and counted as dropped with reason `spool_full`) and in age (older files are
deleted unsent and counted as `spool_expired`). A collector outage shorter
than the spool's capacity therefore loses nothing.

Each file holds one serialized request, exactly the bytes that would have
gone on the wire, so replaying it needs no re-encoding and works for HTTP
and gRPC alike. Its name carries what the spool needs to know without
opening or stat-ing it:

    <written, ns since the epoch>-<pid>-<sequence>-<records>-<bytes>.otlp

Several processes (pre-fork workers) may share one directory: a file is
written under a temporary name and renamed into place, and a sender claims
a file by renaming it, so no request is sent twice by two processes and no
half-written file is ever read.

Limitation: counts are per process, files are per directory: a process
that sends, expires or evicts a request another process spooled counts its
records as its own (`replayed`, `spool_expired`, `spool_full`).

Limitation: files are not fsync'ed; a power loss (not a process crash) can
lose or truncate the newest ones. A truncated file fails to decode at the
collector and is then deleted and counted as `spool_unreadable`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "SPOOL_EXPIRED",
    "SPOOL_FULL",
    "SPOOL_UNREADABLE",
    "Spool",
    "SpoolEntry",
]

SPOOL_FULL = "spool_full"
SPOOL_EXPIRED = "spool_expired"
SPOOL_UNREADABLE = "spool_unreadable"

_SUFFIX = ".otlp"
_CLAIMED = ".sending-"
_TEMPORARY = ".tmp-"


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled request, claimed by this process until removed or released."""

    path: str
    written_ns: int
    records: int
    size_bytes: int


@dataclass(frozen=True)
class _Name:
    written_ns: int
    pid: int
    records: int
    size_bytes: int


def _parse_name(name: str) -> _Name | None:
    if not name.endswith(_SUFFIX) or name.startswith("."):
        return None
    parts = name[: -len(_SUFFIX)].split("-")
    if len(parts) != 5 or not all(part.isdigit() for part in parts):
        return None
    written, pid, _sequence, records, size = (int(part) for part in parts)

    return _Name(written, pid, records, size)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user

    return True


class Spool:
    """Failed export requests of one signal, in files under `directory/signal`.

    Used only by the export thread of each process; the file system is what
    the processes sharing a directory coordinate through.
    """

    def __init__(
        self,
        directory: str,
        signal: str,
        *,
        max_bytes: int,
        max_age_seconds: float,
    ) -> None:
        self.directory = os.path.join(directory, signal)
        self.max_bytes = max_bytes
        self.max_age_seconds = max_age_seconds
        self._sequence = 0
        self._prepared_pid = 0

    # -- writing ---------------------------------------------------------------

    def add(self, payload: bytes, records: int) -> dict[str, int]:
        """Write one request; returns records dropped to make room, by reason.

        Raises OSError when the request cannot be written (disk full, no
        permission) or is larger than the whole spool; the caller counts
        its records as lost.
        """
        if len(payload) > self.max_bytes:
            raise OSError(
                f"a request of {len(payload)} bytes is larger than the whole "
                f"spool ({self.max_bytes} bytes)"
            )
        self._prepare()
        dropped = self._make_room(len(payload))

        pid = os.getpid()
        self._sequence += 1
        name = (
            f"{time.time_ns():020d}-{pid}-{self._sequence:06d}-{records}-"
            f"{len(payload)}{_SUFFIX}"
        )
        temporary = os.path.join(self.directory, f"{_TEMPORARY}{pid}-{name}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(payload)
            os.replace(temporary, os.path.join(self.directory, name))
        except BaseException:
            _remove_quietly(temporary)
            raise

        return dropped

    def _make_room(self, size_bytes: int) -> dict[str, int]:
        dropped: dict[str, int] = {}
        entries = list(self._entries())
        total = sum(entry.size_bytes for entry in entries)
        for entry in entries:
            if total + size_bytes <= self.max_bytes:
                break
            if self._delete(entry.path):
                dropped[SPOOL_FULL] = dropped.get(SPOOL_FULL, 0) + entry.records
            total -= entry.size_bytes

        return dropped

    # -- reading -----------------------------------------------------------------

    def claim_oldest(self) -> tuple[SpoolEntry | None, dict[str, int]]:
        """The oldest unexpired request, claimed; and what expired on the way."""
        dropped: dict[str, int] = {}
        if not os.path.isdir(self.directory):
            return None, dropped
        self._prepare()
        oldest_allowed = time.time_ns() - int(self.max_age_seconds * 1e9)
        claim_suffix = f"{_CLAIMED}{os.getpid()}"
        for entry in self._entries():
            if entry.written_ns < oldest_allowed:
                if self._delete(entry.path):
                    dropped[SPOOL_EXPIRED] = (
                        dropped.get(SPOOL_EXPIRED, 0) + entry.records
                    )
                continue
            claimed = entry.path + claim_suffix
            try:
                os.rename(entry.path, claimed)
            except FileNotFoundError:
                continue  # another process claimed it first
            return (
                SpoolEntry(claimed, entry.written_ns, entry.records, entry.size_bytes),
                dropped,
            )

        return None, dropped

    def read(self, entry: SpoolEntry) -> bytes:
        with open(entry.path, "rb") as file:
            return file.read()

    def remove(self, entry: SpoolEntry) -> None:
        """Forget a claimed request: it was sent, or it is beyond repair."""
        _remove_quietly(entry.path)

    def release(self, entry: SpoolEntry) -> None:
        """Give a claimed request back, to be sent later."""
        original = entry.path.rsplit(_CLAIMED, 1)[0]
        try:
            os.rename(entry.path, original)
        except FileNotFoundError:
            # Someone removed it meanwhile (a second process expired or
            # evicted it after we claimed it cannot, so this is a manual
            # clean-up); nothing left to give back.
            return

    # -- state -------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """What the directory holds now, every process's files included."""
        files = records = size = 0
        for entry in self._entries():
            files += 1
            records += entry.records
            size += entry.size_bytes

        return {"files": files, "records": records, "bytes": size}

    def _entries(self) -> Iterator[SpoolEntry]:
        """Unclaimed requests, oldest first."""
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            return
        for name in names:
            parsed = _parse_name(name)
            if parsed is not None:
                yield SpoolEntry(
                    os.path.join(self.directory, name),
                    parsed.written_ns,
                    parsed.records,
                    parsed.size_bytes,
                )

    def _prepare(self) -> None:
        """Create the directory and recover what dead processes left behind.

        Once per process: a claimed file whose claimer died goes back into
        the spool; a temporary file whose writer died is deleted.
        """
        pid = os.getpid()
        if self._prepared_pid == pid:
            return
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._prepared_pid = pid
        self._sequence = 0
        for name in os.listdir(self.directory):
            path = os.path.join(self.directory, name)
            if _CLAIMED in name:
                original, _, owner = name.rpartition(_CLAIMED)
                if owner.isdigit() and not _process_alive(int(owner)):
                    try:
                        os.rename(path, os.path.join(self.directory, original))
                    except FileNotFoundError:
                        continue  # recovered by another process already
            elif name.startswith(_TEMPORARY):
                owner = name[len(_TEMPORARY) :].partition("-")[0]
                if owner.isdigit() and not _process_alive(int(owner)):
                    _remove_quietly(path)

    @staticmethod
    def _delete(path: str) -> bool:
        try:
            os.remove(path)
        except FileNotFoundError:
            return False  # taken by another process: its records are not lost

        return True


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        return  # already gone, which is what was wanted
