"""`python -m showmax_otel.testing` prints each span and record exactly once."""

from __future__ import annotations

from _receiver_process import ReceiverProcess
from opentelemetry import trace

import showmax_otel


def test_the_receiver_command_prints_every_span_and_record_once() -> None:
    """Spans arriving after records are printed too, and nothing twice."""
    process = ReceiverProcess()
    process.start()
    try:
        telemetry = showmax_otel.init_telemetry(endpoint=process.http_endpoint)
        tracer = trace.get_tracer("tests")
        log = showmax_otel.get_logger("printed")
        for round_number in range(3):
            # Records flush first, spans after: the order that used to lose
            # the spans and print the records again.
            with tracer.start_as_current_span(f"work {round_number}"):
                log.warning("record %d", round_number)
            assert telemetry.force_flush(5)

        assert process.wait_for(lambda p: len(p.items()) >= 6, 10)
        items = process.items()
    finally:
        showmax_otel.shutdown_telemetry(2)
        process.stop()

    assert sorted(i["body"] for i in items if i["signal"] == "log") == [
        "record 0",
        "record 1",
        "record 2",
    ]
    assert sorted(i["name"] for i in items if i["signal"] == "span") == [
        "work 0",
        "work 1",
        "work 2",
    ]
    assert len(items) == 6
