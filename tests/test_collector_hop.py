"""A real collector hop: app -> rotel (OTLP collector binary) -> test receiver.

The app runs in a child process, so that its global telemetry state stays out
of this one; rotel runs from the binary its PyPI package ships, on free
loopback ports, and is stopped by pid.

Limitation: rotel is not otelcol-contrib. These tests prove that what the
package sends survives a real OTLP collector hop (both protocols, retries,
shutdown); they do not run the production otel-collector.yaml, which is
checked offline by test_collector_config.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from showmax_otel._rotel import RotelError, RotelProcess, find_rotel, start_rotel
from showmax_otel.testing import OTLPReceiver

pytestmark = [
    pytest.mark.collector,
    pytest.mark.skipif(
        find_rotel() is None,
        reason="the rotel package (collector binary) is not installed; "
        "pip install -e '.[test]'",
    ),
]

# The app: one span with a WARNING record inside it, then a flushing shutdown.
# It prints what it sent, so that the test can compare it with what arrived.
APP = r"""
import json, os, sys
from opentelemetry import trace
import showmax_otel

endpoint, protocol, case = sys.argv[1:4]
showmax_otel.init_telemetry(
    service_name="collector-hop", endpoint=endpoint, protocol=protocol
)
tracer = trace.get_tracer("tests.collector_hop")
logger = showmax_otel.get_logger("tests.collector_hop")
with tracer.start_as_current_span(
    f"hop {case}", attributes={"hop.case": case, "hop.count": 3, "hop.ok": True}
) as span:
    logger.warning("crossed the hop: %s", case, extra={"hop.case": case})
flushed = showmax_otel.shutdown_telemetry(10.0)
context = span.get_span_context()
print(json.dumps({
    "trace_id": format(context.trace_id, "032x"),
    "span_id": format(context.span_id, "016x"),
    "start": span.start_time,
    "end": span.end_time,
    "attributes": dict(span.attributes),
    "resource": dict(span.resource.attributes),
    "flushed": flushed,
    "pid": os.getpid(),
}))
"""

RESOURCE_ATTRIBUTES = "deployment.environment.name=hop-test,hop.resource=kept"
INGRESS = {"grpc": "grpc", "http": "http/protobuf"}


def run_app(endpoint: str, protocol: str, case: str) -> dict[str, Any]:
    """Run the app in a child process; return what it says it sent."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    environment["OTEL_RESOURCE_ATTRIBUTES"] = RESOURCE_ATTRIBUTES
    result = subprocess.run(
        [sys.executable, "-c", APP, endpoint, protocol, case],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sent: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert sent["flushed"] is True, "the app could not hand its data to rotel"

    return sent


def arrived(receiver: OTLPReceiver, trace_id: str) -> bool:
    return any(span.trace_id == trace_id for span in receiver.spans()) and any(
        record.trace_id == trace_id for record in receiver.logs()
    )


def assert_intact(receiver: OTLPReceiver, sent: dict[str, Any], case: str) -> None:
    """Exactly one span and one record of the app's trace, unchanged."""
    spans = [span for span in receiver.spans() if span.trace_id == sent["trace_id"]]
    records = [r for r in receiver.logs() if r.trace_id == sent["trace_id"]]
    assert len(spans) == 1, spans
    assert len(records) == 1, records
    span, record = spans[0], records[0]

    assert span.name == f"hop {case}"
    assert span.span_id == sent["span_id"]
    assert span.parent_span_id == ""
    assert span.kind == "SPAN_KIND_INTERNAL"
    assert span.start_time_unix_nano == sent["start"]
    assert span.end_time_unix_nano == sent["end"]
    assert span.attributes == sent["attributes"]
    assert span.scope == "tests.collector_hop"
    assert span.resource == sent["resource"]
    assert span.resource["service.name"] == "collector-hop"
    assert span.resource["process.pid"] == sent["pid"]
    assert span.resource["deployment.environment.name"] == "hop-test"
    assert span.resource["hop.resource"] == "kept"

    assert record.body == f"crossed the hop: {case}"
    assert record.severity_text.startswith("WARN")
    assert record.span_id == sent["span_id"]
    assert record.attributes["hop.case"] == case
    assert record.resource == sent["resource"]
    assert sent["start"] <= record.time_unix_nano <= sent["end"]


def backend_endpoint(receiver: OTLPReceiver, egress: str) -> str:
    return receiver.http_endpoint if egress == "http" else receiver.grpc_endpoint


def app_endpoint(rotel: RotelProcess, ingress: str) -> str:
    return rotel.grpc_endpoint if ingress == "grpc" else rotel.http_endpoint


@pytest.mark.parametrize("egress", ["http", "grpc"], ids=["to-http", "to-grpc"])
@pytest.mark.parametrize("ingress", ["grpc", "http"], ids=["from-grpc", "from-http"])
def test_spans_and_records_cross_the_collector_intact(
    receiver: OTLPReceiver, ingress: str, egress: str
) -> None:
    """What the app sends over either protocol arrives through rotel unchanged."""
    case = f"{ingress}-{egress}"
    with start_rotel(backend_endpoint(receiver, egress), protocol=egress) as rotel:
        sent = run_app(app_endpoint(rotel, ingress), INGRESS[ingress], case)

        assert receiver.wait_for(lambda r: arrived(r, sent["trace_id"]), 20)

    assert_intact(receiver, sent, case)
    assert {request.protocol for request in receiver.requests()} == {egress}


@pytest.mark.parametrize(
    "egress", ["http", "grpc"], ids=["http-503", "grpc-unavailable"]
)
def test_backend_errors_are_retried_until_it_recovers(
    receiver: OTLPReceiver, egress: str
) -> None:
    """The backend refuses the first exports (503 / UNAVAILABLE); data still arrives."""
    receiver.fail_next(3, status=503)
    with start_rotel(backend_endpoint(receiver, egress), protocol=egress) as rotel:
        sent = run_app(rotel.http_endpoint, "http/protobuf", f"retry-{egress}")

        assert receiver.wait_for(lambda r: arrived(r, sent["trace_id"]), 30)
        log = rotel.log_text()

    assert_intact(receiver, sent, f"retry-{egress}")
    retries = [line for line in log.splitlines() if "will retry" in line]
    assert retries, f"rotel logged no retry:\n{log[-3000:]}"


@pytest.mark.parametrize("egress", ["http", "grpc"], ids=["to-http", "to-grpc"])
def test_sigterm_flushes_what_the_collector_still_holds(
    receiver: OTLPReceiver, egress: str
) -> None:
    """Data waiting in rotel's batch is delivered when rotel is stopped by SIGTERM."""
    # A batch timeout far longer than the test: the data stays in rotel
    # until the stop.
    rotel = start_rotel(
        backend_endpoint(receiver, egress), protocol=egress, batch_timeout="5m"
    )
    try:
        sent = run_app(rotel.grpc_endpoint, "grpc", f"sigterm-{egress}")
        held = not receiver.spans() and not receiver.logs()

        status = rotel.stop(timeout_seconds=15)
    finally:
        rotel.close()

    assert held, "rotel forwarded before the stop; the test proves nothing"
    assert status == 0, rotel.log_text()[-3000:]
    assert receiver.wait_for(lambda r: arrived(r, sent["trace_id"]), 10)
    assert_intact(receiver, sent, f"sigterm-{egress}")


def test_stopped_collector_leaves_no_process_behind(receiver: OTLPReceiver) -> None:
    """Leaving the context stops rotel by pid and removes its folder."""
    with start_rotel(receiver.http_endpoint) as rotel:
        pid, workdir = rotel.pid, rotel.workdir
        assert rotel.is_running()

    assert rotel.returncode == 0
    assert not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        pytest.param(
            {"forward_to_endpoint": "http://127.0.0.1:1", "protocol": "udp"},
            "accepts 'http' or 'grpc', got 'udp'",
            id="unknown-protocol",
        ),
        pytest.param(
            {"forward_to_endpoint": "127.0.0.1:4318"},
            "needs a URL such as 'http://127.0.0.1:4318', got '127.0.0.1:4318'",
            id="endpoint-without-scheme",
        ),
    ],
)
def test_bad_arguments_name_the_setting(
    arguments: dict[str, Any], fragment: str
) -> None:
    """start_rotel refuses bad arguments before starting anything."""
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        start_rotel(**arguments)


def test_a_binary_that_cannot_start_reports_its_output(tmp_path: Path) -> None:
    """A binary that exits at once raises RotelError with what it printed."""
    fake = tmp_path / "rotel-agent"
    fake.write_text("#!/bin/sh\necho 'cannot start: no config' >&2\nexit 3\n")
    fake.chmod(0o755)

    with pytest.raises(RotelError, match="exited with status 3") as raised:
        start_rotel("http://127.0.0.1:1", binary=fake)

    assert "cannot start: no config" in str(raised.value)
