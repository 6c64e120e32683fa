"""The on-disk spool: an outage shorter than its capacity loses nothing."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _receiver_process import ReceiverProcess

from showmax_otel import init_telemetry
from showmax_otel._spool import SPOOL_EXPIRED, SPOOL_FULL, Spool

_WAIT_SECONDS = 20.0
_app_logger = logging.getLogger("tests.spool.app")


@pytest.fixture
def receiver_process() -> Iterator[ReceiverProcess]:
    process = ReceiverProcess()
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- the spool itself ------------------------------------------------------------


def test_spool_returns_requests_oldest_first_and_forgets_sent_ones(
    tmp_path: Path,
) -> None:
    """Requests come back in the order written; a removed one is gone."""
    spool = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=60)
    for number in range(3):
        assert spool.add(f"request {number}".encode(), records=number + 1) == {}

    sent = []
    for _ in range(3):
        entry, expired = spool.claim_oldest()
        assert entry is not None and expired == {}
        sent.append((spool.read(entry), entry.records))
        spool.remove(entry)

    assert sent == [(b"request 0", 1), (b"request 1", 2), (b"request 2", 3)]
    assert spool.claim_oldest() == (None, {})
    assert spool.stats() == {"files": 0, "records": 0, "bytes": 0}


def test_spool_evicts_oldest_to_stay_within_its_bytes_and_counts_them(
    tmp_path: Path,
) -> None:
    """A full spool drops its oldest requests to make room, counting their records."""
    spool = Spool(str(tmp_path), "logs", max_bytes=250, max_age_seconds=60)
    evicted: dict[str, int] = {}
    for _ in range(5):
        for reason, count in spool.add(b"x" * 100, records=7).items():
            evicted[reason] = evicted.get(reason, 0) + count

    assert evicted == {SPOOL_FULL: 21}
    assert spool.stats() == {"files": 2, "records": 14, "bytes": 200}


def test_spool_refuses_a_request_larger_than_itself(tmp_path: Path) -> None:
    """A request that could never fit is refused, not written."""
    spool = Spool(str(tmp_path), "logs", max_bytes=10, max_age_seconds=60)

    with pytest.raises(OSError, match="larger than the whole spool"):
        spool.add(b"x" * 11, records=1)


def test_spool_drops_expired_requests_and_counts_them(tmp_path: Path) -> None:
    """Requests older than the age bound are deleted unsent and counted."""
    spool = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=0)
    spool.add(b"old", records=4)

    entry, expired = spool.claim_oldest()

    assert entry is None
    assert expired == {SPOOL_EXPIRED: 4}


def test_a_claimed_request_is_invisible_to_others_until_released(
    tmp_path: Path,
) -> None:
    """Two spools on one directory never send the same request twice."""
    first = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=60)
    second = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=60)
    first.add(b"only one", records=1)

    entry, _ = first.claim_oldest()
    assert entry is not None
    assert second.claim_oldest() == (None, {})

    first.release(entry)
    again, _ = second.claim_oldest()
    assert again is not None and second.read(again) == b"only one"


def test_requests_claimed_by_a_dead_process_come_back(tmp_path: Path) -> None:
    """A sender that died holding a request does not take it with it."""
    spool = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=60)
    spool.add(b"orphan", records=2)
    entry, _ = spool.claim_oldest()
    assert entry is not None
    orphaned = entry.path.rsplit("-", 1)[0] + f"-{_dead_pid()}"
    os.rename(entry.path, orphaned)

    fresh = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=60)
    recovered, _ = fresh.claim_oldest()

    assert recovered is not None
    assert fresh.read(recovered) == b"orphan"


def test_spool_files_are_private_to_the_user(tmp_path: Path) -> None:
    """Telemetry on disk is readable by its owner only."""
    spool = Spool(str(tmp_path), "logs", max_bytes=10_000, max_age_seconds=60)
    spool.add(b"private", records=1)

    assert os.stat(spool.directory).st_mode & 0o077 == 0
    (name,) = os.listdir(spool.directory)
    assert os.stat(os.path.join(spool.directory, name)).st_mode & 0o077 == 0


# -- with a collector that goes away ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_outage_shorter_than_the_spool_loses_nothing(
    receiver_process: ReceiverProcess,
    tmp_path: Path,
    protocol: str,
    outage_seconds: float = 2.0,
) -> None:
    """With a spool, every record emitted during an outage arrives after it."""
    endpoint = (
        receiver_process.grpc_endpoint
        if protocol == "grpc"
        else receiver_process.http_endpoint
    )
    telemetry = init_telemetry(
        endpoint=endpoint,
        protocol=protocol,
        traces_exporter="none",
        blrp_schedule_delay_millis=100,
        blrp_max_export_batch_size=64,
        # Long enough that a replay is never cut off on a busy machine and
        # sent twice; a killed receiver refuses connections at once anyway.
        timeout_seconds=5.0,
        spool_directory=str(tmp_path / "spool"),
    )
    _app_logger.warning("before")
    assert telemetry.force_flush(_WAIT_SECONDS)

    receiver_process.stop()
    started = time.monotonic()
    emitted = 1
    while time.monotonic() - started < outage_seconds and emitted < 5_000:
        _app_logger.warning("during %d", emitted)
        emitted += 1
        if emitted % 50 == 0:
            time.sleep(0.01)  # a steady load, not a tight loop
    telemetry.force_flush(_WAIT_SECONDS)
    spooled = telemetry.stats()["logs"]["spooled"]

    receiver_process.start()
    _app_logger.warning("after")
    emitted += 1
    assert receiver_process.wait_for(
        lambda r: len(r.logs()) >= emitted, _WAIT_SECONDS
    ), telemetry.stats()
    # The receiver records a request before it answers, and the sender
    # counts it after the answer: poll the counts to the same total.
    deadline = time.monotonic() + _WAIT_SECONDS
    while time.monotonic() < deadline:
        telemetry.force_flush(_WAIT_SECONDS)
        stats = telemetry.stats()["logs"]
        if stats["exported"] + stats["replayed"] >= emitted:
            break
        time.sleep(0.05)

    bodies = [item["body"] for item in receiver_process.logs()]
    assert spooled > 0
    assert stats["dropped"] == {}
    assert stats["exported"] + stats["replayed"] == stats["emitted"] == emitted
    assert len(bodies) == len(set(bodies)) == emitted
    assert stats["replayed"] == stats["spooled"]


def test_a_full_spool_counts_what_it_evicts(tmp_path: Path) -> None:
    """When the spool is too small for the outage, its losses are counted."""
    telemetry = init_telemetry(
        endpoint="http://127.0.0.1:9",  # discard port: nothing listens
        traces_exporter="none",
        blrp_max_export_batch_size=10,
        timeout_seconds=0.2,
        spool_directory=str(tmp_path / "spool"),
        spool_max_bytes=2_000,
    )
    for i in range(200):
        _app_logger.warning("record %d", i)
    telemetry.force_flush(_WAIT_SECONDS)

    stats = telemetry.stats()["logs"]
    held = Spool(str(tmp_path / "spool"), "logs", max_bytes=1, max_age_seconds=1)
    assert stats["dropped"].get(SPOOL_FULL, 0) > 0
    assert stats["emitted"] == 200
    assert stats["spooled"] == held.stats()["records"] + stats["dropped"][SPOOL_FULL]
    assert held.stats()["bytes"] <= 2_000


@pytest.mark.slow
def test_a_new_process_sends_what_an_earlier_one_spooled(
    receiver_process: ReceiverProcess, tmp_path: Path
) -> None:
    """Records spooled by a process that exited reach the collector from the next."""
    spool_directory = str(tmp_path / "spool")
    script = textwrap.dedent(
        f"""
        import logging
        from showmax_otel import init_telemetry, shutdown_telemetry
        init_telemetry(
            endpoint="http://127.0.0.1:9",
            traces_exporter="none",
            timeout_seconds=0.2,
            spool_directory={spool_directory!r},
        )
        for i in range(100):
            logging.getLogger("earlier").warning("earlier %d", i)
        shutdown_telemetry(10)
        """
    )
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SHOWMAX_"))
    }
    subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=60, env=environment
    )
    assert (
        Spool(spool_directory, "logs", max_bytes=1, max_age_seconds=1).stats()[
            "records"
        ]
        == 100
    )

    telemetry = init_telemetry(
        endpoint=receiver_process.http_endpoint,
        traces_exporter="none",
        blrp_schedule_delay_millis=100,
        spool_directory=spool_directory,
    )
    _app_logger.warning("later")

    assert receiver_process.wait_for(lambda r: len(r.logs()) == 101, _WAIT_SECONDS)
    assert telemetry.force_flush(_WAIT_SECONDS)
    # Counted once the receiver has answered, a moment after it recorded them.
    deadline = time.monotonic() + _WAIT_SECONDS
    while telemetry.stats()["logs"]["replayed"] < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert telemetry.stats()["logs"]["replayed"] == 100
