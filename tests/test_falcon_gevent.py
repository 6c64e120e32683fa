"""Greenlets and pooled work keep the trace context of the request that started them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from opentelemetry import trace

from showmax_otel import init_telemetry
from showmax_otel.falcon import context_bound
from showmax_otel.falcon.testing import request_telemetry
from showmax_otel.testing import OTLPReceiver

_SCRIPT = Path(__file__).parent / "apps" / "falcon_gevent_requests.py"


def test_overlapping_requests_keep_their_own_context_in_greenlets(
    receiver: OTLPReceiver,
) -> None:
    """Under gevent, spawned greenlets are children of their own request only."""
    done = subprocess.run(
        [sys.executable, str(_SCRIPT), receiver.http_endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    trace_ids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(trace_ids.values())) == 2

    def complete(current: OTLPReceiver) -> bool:
        return len(current.spans()) >= 6 and len(current.logs()) >= 6

    assert receiver.wait_for(complete, 10), (receiver.spans(), receiver.logs())
    for name, trace_id in trace_ids.items():
        seen = request_telemetry(receiver, trace_id)
        server = seen.server_span
        assert server is not None
        assert server.name == "GET /work/{name}"
        children = {s.name: s for s in seen.spans if s is not server}
        assert sorted(children) == [f"child {name} pool", f"child {name} spawn"]
        assert {s.parent_span_id for s in children.values()} == {server.span_id}

        records = {r.body: r for r in seen.other_logs}
        assert sorted(records) == [
            f"child of {name} via {how}" for how in ("pool", "spawn")
        ]
        for how in ("pool", "spawn"):
            record = records[f"child of {name} via {how}"]
            assert record.span_id == children[f"child {name} {how}"].span_id
        seen.assert_correlated()

    uncorrelated = [
        r.body for r in receiver.logs() if r.trace_id not in trace_ids.values()
    ]
    assert uncorrelated == []


def test_context_bound_carries_the_span_into_a_thread(receiver: OTLPReceiver) -> None:
    """A `context_bound` callable run on another thread sees the caller's span."""
    init_telemetry(endpoint=receiver.http_endpoint)
    tracer = trace.get_tracer("tests.falcon.threads")
    seen: list[int] = []

    def work() -> None:
        seen.append(trace.get_current_span().get_span_context().span_id)

    with tracer.start_as_current_span("parent") as parent:
        bound = context_bound(work)
        threads = [threading.Thread(target=bound), threading.Thread(target=work)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)

    assert seen[0] == parent.get_span_context().span_id
    assert seen[1] == 0
