"""Costs of staying honest under faults: the spool, and memory in an outage.

`python -m bench.faults` prints one JSON object with two figures:

- `spool`: what the on-disk spool costs per record, to write a failed
  request and to read it back for sending, measured on requests of real
  log records encoded by the package's encoder (the encoding itself is
  paid with or without a spool, and is shown for scale);
- `outage`: the process's resident memory while the collector is down and
  the application keeps logging at a steady rate, with the default queue
  sizes, with and without a spool: it must level off at the queue bound.

Both are functions (`spool_cost_per_record()`, `rss_during_outage()`) so
that the benchmark report can call them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Any


def _log_records(count: int) -> list[Any]:
    """Log records like a request's: a message, a few attributes, ids."""
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.sdk._logs import ReadWriteLogRecord
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create({"service.name": "bench", "process.pid": 1})
    return [
        ReadWriteLogRecord(
            LogRecord(
                timestamp=time.time_ns(),
                observed_timestamp=time.time_ns(),
                trace_id=0x1234567890ABCDEF1234567890ABCDEF + number,
                span_id=0x1234567890ABCDEF,
                trace_flags=1,  # type: ignore[arg-type]
                severity_text="INFO",
                severity_number=SeverityNumber.INFO,
                body=f"GET /api/items/{number} 200 in 12.3 ms",
                attributes={
                    "http.request.method": "GET",
                    "http.route": "/api/items/{id}",
                    "http.response.status_code": 200,
                    "url.path": f"/api/items/{number}",
                    "client.address": "10.1.2.3",
                    "duration_ms": 12.3,
                },
            ),
            resource=resource,
        )
        for number in range(count)
    ]


def spool_cost_per_record(
    records_per_request: int = 512, requests: int = 40
) -> dict[str, float]:
    """Microseconds per record: encode (for scale), spool write, spool read."""
    from showmax_otel._encoding import encode_logs
    from showmax_otel._spool import Spool

    records = _log_records(records_per_request)
    started = time.perf_counter()
    payload = encode_logs(records)
    encode_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="showmax-otel-spool-bench-") as directory:
        spool = Spool(directory, "logs", max_bytes=1 << 40, max_age_seconds=3600)
        spool.add(payload, records_per_request)  # directory creation, once
        started = time.perf_counter()
        for _ in range(requests):
            spool.add(payload, records_per_request)
        write_seconds = time.perf_counter() - started

        started = time.perf_counter()
        read = 0
        while True:
            entry, _ = spool.claim_oldest()
            if entry is None:
                break
            spool.read(entry)
            spool.remove(entry)
            read += 1
        read_seconds = time.perf_counter() - started

    total = records_per_request * requests
    return {
        "records_per_request": records_per_request,
        "request_bytes": len(payload),
        "encode_us_per_record": encode_seconds / records_per_request * 1e6,
        "spool_write_us_per_record": write_seconds / total * 1e6,
        "spool_read_us_per_record": read_seconds / (records_per_request * read) * 1e6,
    }


_OUTAGE_SCRIPT = textwrap.dedent(
    """
    import json, logging, os, socket, sys, time

    from showmax_otel import init_telemetry

    seconds, rate, spool = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    collector = sys.argv[4]
    page = os.sysconf("SC_PAGE_SIZE")

    def rss_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * page / 2**20

    if collector == "hung":
        # Listens and never accepts: every export waits out its timeout,
        # so the queue fills up to its bound; the worst case for memory.
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(0)
        endpoint = "http://127.0.0.1:%d" % hung.getsockname()[1]
    else:
        endpoint = "http://127.0.0.1:9"  # nothing listens: refused at once
    telemetry = init_telemetry(endpoint=endpoint, spool_directory=spool or None)
    logger = logging.getLogger("bench.outage")
    # Warm up: imports, the export thread, the first failures.
    for i in range(2000):
        logger.warning("warm-up %d", i)
    time.sleep(1.0)
    before = rss_mib()
    samples = []
    started = time.monotonic()
    emitted = 0
    while time.monotonic() - started < seconds:
        tick = time.monotonic()
        for _ in range(rate // 10):
            logger.warning(
                "GET /api/items/%d 200", emitted,
                extra={"http.route": "/api/items/{id}", "client.address": "10.1.2.3"},
            )
            emitted += 1
        samples.append(rss_mib())
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    stats = telemetry.stats()["logs"]
    print(json.dumps({
        "rss_before_mib": round(before, 1),
        "rss_peak_mib": round(max(samples), 1),
        "rss_last_mib": round(samples[-1], 1),
        "emitted": stats["emitted"],
        "queued_at_end": stats["queued"],
        "dropped": stats["dropped"],
        "spooled": stats["spooled"],
    }))
    os._exit(0)  # the collector stays down: skip the bounded flush at exit
    """
)


def rss_during_outage(
    seconds: float = 10.0,
    records_per_second: int = 5000,
    spool: bool = False,
    collector: str = "hung",
) -> dict[str, Any]:
    """Resident memory of a process logging through a collector outage.

    `collector` is "hung" (accepts connections, never answers: exports wait
    out the default 10 s timeout and the queue fills) or "refused" (nothing
    listens: exports fail at once).
    """
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SHOWMAX_"))
    }
    with tempfile.TemporaryDirectory(prefix="showmax-otel-outage-") as directory:
        finished = subprocess.run(
            [
                sys.executable,
                "-c",
                _OUTAGE_SCRIPT,
                str(seconds),
                str(records_per_second),
                directory if spool else "",
                collector,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            env=environment,
            check=True,
        )
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    result.update(
        seconds=seconds,
        records_per_second=records_per_second,
        spool=spool,
        collector=collector,
    )

    return result


def main() -> int:
    figures = {
        "spool": spool_cost_per_record(),
        "outage_hung": rss_during_outage(collector="hung"),
        "outage_refused": rss_during_outage(collector="refused"),
        "outage_refused_with_spool": rss_during_outage(collector="refused", spool=True),
    }
    print(json.dumps(figures, indent=2))

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
