"""gevent: export never holds the hub, patching is checked, blocks are reported.

Every case runs in a fresh interpreter that gevent patches first thing (the
receiver, which uses real threads and a gRPC server, stays in this
process). The script prints one JSON line last; the test reads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from showmax_otel.testing import OTLPReceiver

# Measures how late a greenlet that sleeps 5 ms at a time wakes up, while
# `work()` runs in another greenlet; prints the lags in ms.
PROBE = """
import time, json, gevent

def measure(work):
    lags, running = [], [True]

    def probe():
        while running[0]:
            started = time.perf_counter()
            gevent.sleep(0.005)
            lags.append((time.perf_counter() - started - 0.005) * 1000)

    prober = gevent.spawn(probe)
    gevent.sleep(0.05)
    gevent.spawn(work).join()
    running[0] = False
    prober.join()
    lags.sort()
    # The fourth worst: one slow moment of a busy machine cannot decide.
    return {"fourth_worst": lags[-4], "max": lags[-1], "n": len(lags)}
"""


def run_script(
    code: str, env: dict[str, str] | None = None, timeout_seconds: float = 90
) -> tuple[Any, str]:
    """Run `code` in a new interpreter; (its last stdout line as JSON, stderr)."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SHOWMAX_OTEL_"))
    }
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout_seconds,
        check=False,
    )
    assert done.returncode == 0, f"script failed:\n{done.stdout}\n{done.stderr}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"script printed nothing:\n{done.stderr}"

    return json.loads(lines[-1]), done.stderr


# -- export keeps the hub free ------------------------------------------------------

# The spans are started before the measurement, so that what the probe sees
# is the cost of exporting them, not of building their attributes.
ENCODE_WORKLOAD = """
from opentelemetry import trace
attributes = {f"attribute.{i}": "x" * 40 for i in range(40)}
tracer = trace.get_tracer("probe")
spans = [tracer.start_span("span", attributes=attributes) for _ in range(8 * 512)]

def work():
    for start in range(0, len(spans), 64):
        for span in spans[start : start + 64]:
            span.end()
        gevent.sleep(0)
    flush()
"""


@pytest.mark.slow
def test_encoding_batches_leaves_the_hub_responsive(receiver: OTLPReceiver) -> None:
    """Greenlets wake up far sooner than with the SDK's processor as batches encode."""
    ours = (
        "from gevent import monkey; monkey.patch_all()\n"
        + PROBE
        + f"""
import showmax_otel
telemetry = showmax_otel.init_telemetry(
    endpoint={receiver.http_endpoint!r}, bsp_schedule_delay_millis=50,
    bsp_max_queue_size=8192, logs_exporter="none", hub_block_threshold_millis=0,
)
flush = lambda: telemetry.force_flush(20)
"""
        + ENCODE_WORKLOAD
        + "print(json.dumps(measure(work)))"
    )
    sdk = (
        "from gevent import monkey; monkey.patch_all()\n"
        + PROBE
        + f"""
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(
    OTLPSpanExporter(endpoint={receiver.http_endpoint + "/v1/traces"!r}),
    schedule_delay_millis=50,
    max_queue_size=8192,
))
trace.set_tracer_provider(provider)
flush = lambda: provider.force_flush(20000)
"""
        + ENCODE_WORKLOAD
        + "print(json.dumps(measure(work)))"
    )

    with_ours, _ = run_script(ours)
    with_sdk, _ = run_script(sdk)

    print("wake-up lag in ms, ours:", with_ours, "SDK's:", with_sdk)
    assert receiver.wait_for(lambda r: len(r.spans()) == 2 * 8 * 512, 30)
    # A loose ratio: the numbers themselves belong to the benchmark.
    assert with_ours["fourth_worst"] < with_sdk["fourth_worst"] / 2, (
        with_ours,
        with_sdk,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "grpc_gevent",
    [
        pytest.param(False, id="plain-grpc"),
        pytest.param(True, id="grpc-gevent-integration"),
    ],
)
def test_grpc_export_to_a_collector_that_never_answers_leaves_the_hub_free(
    grpc_gevent: bool,
) -> None:
    """A gRPC export that hangs for its whole timeout never freezes the greenlets."""
    with OTLPReceiver(http=False) as hanging:
        hanging.hold_responses(True)
        result, _ = run_script(
            "from gevent import monkey; monkey.patch_all()\n"
            + PROBE
            + ("import grpc.experimental.gevent as g; g.init_gevent()\n" * grpc_gevent)
            + f"""
import showmax_otel
from opentelemetry import trace
telemetry = showmax_otel.init_telemetry(
    endpoint={hanging.grpc_endpoint!r}, protocol="grpc", timeout_seconds=2.0,
    logs_exporter="none", hub_block_threshold_millis=0,
)

def work():
    with trace.get_tracer("probe").start_as_current_span("span"):
        pass
    work.flushed = telemetry.force_flush(4)

lags = measure(work)
print(json.dumps({{"lags": lags, "flushed": work.flushed,
                  "stats": telemetry.stats()["spans"]}}))
"""
        )

    assert result["flushed"] is False
    assert result["stats"]["export_failures"] == 1
    # The export waited 2 s; the hub waited for none of it.
    assert result["lags"]["max"] < 2000 / 4, result


# -- patch checks ------------------------------------------------------------------

PATCH_CASES = {
    "no-gevent": ("import requests", []),
    "patched-first": (
        "from gevent import monkey; monkey.patch_all()\nimport requests",
        [],
    ),
    "ssl-imported-first": (
        "import requests\nfrom gevent import monkey; monkey.patch_all()",
        ["urllib3", "ssl.SSLContext", "patch_all() before anything else"],
    ),
    "socket-only": (
        "from gevent import monkey; monkey.patch_socket()",
        ["partial", "ssl", "threading", "patch_all() with its defaults"],
    ),
}


@pytest.mark.parametrize(
    ("setup", "expected"),
    [pytest.param(*case, id=name) for name, case in PATCH_CASES.items()],
)
def test_patch_findings_name_late_or_partial_patching_with_the_fix(
    setup: str, expected: list[str]
) -> None:
    """Late or partial monkey-patching is named with the fix; in-time patching not."""
    findings, _ = run_script(
        setup
        + "\nimport json\nfrom showmax_otel import _gevent\n"
        + "print(json.dumps(_gevent.patch_findings()))"
    )

    if not expected:
        assert findings == []
        return
    text = " ".join(findings)
    for words in expected:
        assert words in text, findings


def test_late_patching_is_reported_once() -> None:
    """However often init runs and records flow, the finding is logged once."""
    _, stderr = run_script(
        """
        import requests
        from gevent import monkey; monkey.patch_all()
        import json, showmax_otel
        for _ in range(3):
            showmax_otel.init_telemetry(traces_exporter="none", logs_exporter="none")
        showmax_otel.get_logger("app").warning("a record")
        print(json.dumps(True))
        """
    )

    assert stderr.count("keep the blocking originals") == 1, stderr


def test_patching_after_init_is_noticed_and_watched() -> None:
    """A patch_all() after init (a gunicorn gevent worker) is checked and watched."""
    result, stderr = run_script(
        """
        import gevent, requests, json, showmax_otel
        telemetry = showmax_otel.init_telemetry(
            traces_exporter="none", logs_exporter="none"
        )
        watched_before = telemetry.server_hooks.watch is not None
        from gevent import monkey; monkey.patch_all()
        print(json.dumps({
            "before": watched_before,
            "after": telemetry.server_hooks.watch.running,
        }))
        """
    )

    assert result == {"before": False, "after": True}
    assert stderr.count("keep the blocking originals") == 1, stderr


# -- forks ---------------------------------------------------------------------------

# Greenlets that would give themselves away if they ever ran in a child.
CHATTER = """
import os, gevent
parent = os.getpid()
seen_in_child = []

def chatter():
    for _ in range(300):
        if os.getpid() != parent:
            os.write(2, b"GREENLET RAN IN A CHILD\\n")
            os._exit(3)
        gevent.sleep(0.001)

chatterers = [gevent.spawn(chatter) for _ in range(5)]
"""


def test_subprocesses_under_gevent_run_no_greenlet_and_print_nothing(
    receiver: OTLPReceiver,
) -> None:
    """Children forked by gevent's subprocess exec at once: no greenlet, no output."""
    result, stderr = run_script(
        "from gevent import monkey; monkey.patch_all()\n"
        + CHATTER
        + f"""
import json, subprocess, showmax_otel
from opentelemetry import trace
telemetry = showmax_otel.init_telemetry(endpoint={receiver.http_endpoint!r})
with trace.get_tracer("t").start_as_current_span("parent"):
    children = [int(subprocess.run(["/bin/sh", "-c", "echo $$"],
                capture_output=True, text=True, check=True).stdout)
                for _ in range(20)]
gevent.joinall(chatterers)
telemetry.force_flush(10)
print(json.dumps(children))
"""
    )

    assert "GREENLET RAN IN A CHILD" not in stderr
    assert "Traceback" not in stderr, stderr
    assert receiver.wait_for(lambda r: len(r.spans()) >= 1, 10)
    pids = {span.resource["process.pid"] for span in receiver.spans()}
    assert not pids & set(result)


def test_a_fork_that_does_not_exec_starts_no_thread_until_it_emits(
    receiver: OTLPReceiver,
) -> None:
    """A forked child has one thread, whatever runs in the parent."""
    result, stderr = run_script(
        "from gevent import monkey; monkey.patch_all()\n"
        + f"ENDPOINT = {receiver.http_endpoint!r}\n"
        + CHATTER
        + """
import json, showmax_otel
from opentelemetry import trace
telemetry = showmax_otel.init_telemetry(endpoint=ENDPOINT)
with trace.get_tracer("t").start_as_current_span("parent"):
    pass
showmax_otel.get_logger("app").warning("a record")
parent_threads = len(os.listdir("/proc/self/task"))
read_end, write_end = os.pipe()
# gevent installs its SIGCHLD handler with the first child watcher, after
# the fork: a child that exits before that (this one is quick, and the
# parent may wait for the GIL after forking) is never reaped by gevent's
# waitpid. gevent.subprocess installs it before forking; so does this.
gevent.get_hub().loop.install_sigchld()
child = os.fork()
if child == 0:
    os.write(write_end, str(len(os.listdir("/proc/self/task"))).encode())
    os._exit(0)
os.close(write_end)
child_threads = int(os.read(read_end, 16))
os.waitpid(child, 0)
gevent.joinall(chatterers)
print(json.dumps({"parent": parent_threads, "child": child_threads}))
"""
    )

    assert result["parent"] > 1
    assert result["child"] == 1
    assert "GREENLET RAN IN A CHILD" not in stderr


# -- the hub-block watch --------------------------------------------------------------

WATCHED = """
from gevent import monkey; monkey.patch_all()
import json, os, gevent, showmax_otel
from opentelemetry import trace
from gevent.monkey import get_original
telemetry = showmax_otel.init_telemetry(
    endpoint={endpoint!r}, hub_block_threshold_millis={threshold},
    traces_exporter="none",
)
real_sleep = get_original("time", "sleep")
tracer = trace.get_tracer("t")
"""


def _blocks(receiver: OTLPReceiver) -> list[Any]:
    return [r for r in receiver.logs() if r.scope == "showmax_otel.gevent"]


def test_a_block_is_reported_with_its_stack_and_the_request_trace(
    receiver: OTLPReceiver,
) -> None:
    """One WARNING per block, with the blocking stack and the running request's ids."""
    result, _ = run_script(
        WATCHED.format(endpoint=receiver.http_endpoint, threshold=50)
        + """
def request():
    with tracer.start_as_current_span("GET /slow", kind=trace.SpanKind.SERVER) as s:
        gevent.sleep(0.01)
        compute_without_yielding()
        context = s.get_span_context()
        return format(context.trace_id, "032x"), format(context.span_id, "016x")

def compute_without_yielding():
    real_sleep(0.2)

def other_request():
    with tracer.start_as_current_span("GET /fast", kind=trace.SpanKind.SERVER):
        for _ in range(20):
            gevent.sleep(0.005)

fast = gevent.spawn(other_request)
trace_id, span_id = gevent.spawn(request).get()
fast.join()
gevent.sleep(0.2)
telemetry.force_flush(10)
print(json.dumps({"trace_id": trace_id, "span_id": span_id, "pid": os.getpid()}))
"""
    )

    assert receiver.wait_for(lambda r: bool(_blocks(r)), 10)
    (record,) = _blocks(receiver)
    assert record.severity_text == "WARN"
    assert (record.trace_id, record.span_id) == (result["trace_id"], result["span_id"])
    assert 150 <= record.attributes["gevent.block.duration_ms"] < 1000
    assert record.attributes["gevent.block.ongoing"] is False
    assert "compute_without_yielding" in record.attributes["code.stacktrace"]
    assert "compute_without_yielding" in record.body
    assert record.resource["process.pid"] == result["pid"]


def test_a_block_after_the_greenlets_span_ended_carries_no_trace(
    receiver: OTLPReceiver,
) -> None:
    """A greenlet that ended its request span and then blocks the hub is not
    reported under that request's ids."""
    run_script(
        WATCHED.format(endpoint=receiver.http_endpoint, threshold=50)
        + """
def job():
    with tracer.start_as_current_span("GET /done", kind=trace.SpanKind.SERVER):
        gevent.sleep(0.01)
    real_sleep(0.2)

gevent.spawn(job).join()
gevent.sleep(0.2)
telemetry.force_flush(10)
print(json.dumps(True))
"""
    )

    assert receiver.wait_for(lambda r: bool(_blocks(r)), 10)
    (record,) = _blocks(receiver)
    assert 150 <= record.attributes["gevent.block.duration_ms"] < 1000
    assert (record.trace_id, record.span_id) == ("", "")


def test_the_watch_knows_the_innermost_open_root_span_of_each_greenlet() -> None:
    """Roots nested in one greenlet, children, and a root ended in another
    greenlet: the watch's table follows them all."""
    from greenlet import getcurrent, greenlet
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from showmax_otel._gevent import RequestSpans

    spans = RequestSpans()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(spans)
    tracer = provider.get_tracer("tests")
    here = getcurrent()

    request = tracer.start_span("request")
    assert spans.span_context_of(here) == request.get_span_context()
    with trace.use_span(request):
        job = tracer.start_span("job", context=otel_context.Context())
        assert spans.span_context_of(here) == job.get_span_context()
        job.end()
        assert spans.span_context_of(here) == request.get_span_context()
        child = tracer.start_span("child")
        child.end()
        assert spans.span_context_of(here) == request.get_span_context()

    greenlet(request.end).switch()
    assert spans.span_context_of(here) is None


def test_yielding_work_and_an_idle_hub_are_not_reported(receiver: OTLPReceiver) -> None:
    """Greenlets that yield often, and a hub waiting for I/O, report nothing."""
    run_script(
        WATCHED.format(endpoint=receiver.http_endpoint, threshold=50)
        + """
def busy_but_polite():
    for _ in range(50):
        real_sleep(0.005)
        gevent.sleep(0)

gevent.joinall([gevent.spawn(busy_but_polite) for _ in range(3)])
gevent.sleep(0.4)
showmax_otel.get_logger("app").warning("done")
telemetry.force_flush(10)
print(json.dumps(True))
"""
    )

    assert receiver.wait_for(lambda r: any(x.body == "done" for x in r.logs()), 10)
    assert _blocks(receiver) == []


def test_a_block_that_lasts_is_reported_while_it_lasts(receiver: OTLPReceiver) -> None:
    """A greenlet stuck past ten thresholds (1 s at least) is reported mid-block."""
    run_script(
        WATCHED.format(endpoint=receiver.http_endpoint, threshold=20)
        + """
def stuck():
    real_sleep(1.3)

gevent.spawn(stuck).join()
telemetry.force_flush(10)
print(json.dumps(True))
"""
    )

    assert receiver.wait_for(lambda r: bool(_blocks(r)), 10)
    (record,) = _blocks(receiver)
    assert record.attributes["gevent.block.ongoing"] is True
    assert record.attributes["gevent.block.duration_ms"] >= 1000
    assert "and counting" in record.body


def test_a_zero_threshold_turns_the_watch_off(receiver: OTLPReceiver) -> None:
    """With the threshold at 0 no watch thread starts and nothing is reported."""
    result, _ = run_script(
        WATCHED.format(endpoint=receiver.http_endpoint, threshold=0)
        + """
gevent.spawn(real_sleep, 0.2).join()
showmax_otel.get_logger("app").warning("done")
telemetry.force_flush(10)
names = [open(f"/proc/self/task/{t}/comm").read().strip()
         for t in os.listdir("/proc/self/task")]
print(json.dumps(names))
"""
    )

    assert "otel-hub-watch" not in result
    assert receiver.wait_for(lambda r: any(x.body == "done" for x in r.logs()), 10)
    assert _blocks(receiver) == []
