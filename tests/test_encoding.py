"""Our OTLP encoder writes the same messages as the SDK's, faster."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._log_encoder import (
    encode_logs as sdk_encode_logs,
)
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as sdk_encode_spans,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import set_span_in_context
from opentelemetry.trace.span import NonRecordingSpan, SpanContext, TraceFlags

from showmax_otel._encoding import encode_logs, encode_spans

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
_scalar = st.one_of(
    _text,
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
_value = st.one_of(
    _scalar,
    st.lists(_text, max_size=4).map(tuple),
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=4).map(
        tuple
    ),
)
_attributes = st.dictionaries(st.text(min_size=1, max_size=12), _value, max_size=6)


class _Collect(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class _CollectLogs(LogRecordProcessor):
    def __init__(self) -> None:
        self.records: list[Any] = []

    def on_emit(self, log_record: Any) -> None:
        self.records.append(log_record)

    emit = on_emit

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _spans(attribute_sets: list[dict[str, Any]]) -> list[ReadableSpan]:
    collect = _Collect()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "enc", "process.pid": 7}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(collect)
    tracer = provider.get_tracer("scope.a", "1.2")
    other = provider.get_tracer("scope.b")
    remote = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(1)
    )
    for number, attributes in enumerate(attribute_sets):
        source = tracer if number % 2 else other
        parent = set_span_in_context(NonRecordingSpan(remote)) if number % 3 else None
        with source.start_as_current_span(
            f"span {number}",
            context=parent,
            kind=SpanKind(number % 5),
            attributes=attributes,
            links=[Link(remote, {"link": number})] if number % 4 == 0 else [],
        ) as span:
            span.add_event("event", {"n": number})
            if number % 2:
                span.set_status(Status(StatusCode.ERROR, "broken"))

    return collect.spans


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_attributes, min_size=1, max_size=6))
def test_spans_encode_to_the_same_message_as_the_sdk(
    attribute_sets: list[dict[str, Any]],
) -> None:
    """Parsed, our span bytes equal the SDK encoder's message for the same spans."""
    spans = _spans(attribute_sets)

    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))

    assert ours == sdk_encode_spans(spans)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.one_of(st.none(), _scalar), _attributes), min_size=1, max_size=6
    )
)
def test_log_records_encode_to_the_same_message_as_the_sdk(
    bodies_and_attributes: list[tuple[Any, dict[str, Any]]],
) -> None:
    """Parsed, our log bytes equal the SDK encoder's message for the same records."""
    from opentelemetry._logs import LogRecord, SeverityNumber

    collect = _CollectLogs()
    provider = LoggerProvider(
        resource=Resource.create({"service.name": "enc"}), shutdown_on_exit=False
    )
    provider.add_log_record_processor(collect)
    logger = provider.get_logger("scope.logs", "3")
    span_context = SpanContext(
        trace_id=0xABC, span_id=0xDEF, is_remote=False, trace_flags=TraceFlags(1)
    )
    for number, (body, attributes) in enumerate(bodies_and_attributes):
        context = (
            set_span_in_context(NonRecordingSpan(span_context)) if number % 2 else None
        )
        logger.emit(
            LogRecord(
                timestamp=1_700_000_000_000_000_000 + number,
                observed_timestamp=1_700_000_000_000_000_500,
                context=context,
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                body=body,
                attributes=attributes,
                event_name="evt" if number % 3 == 0 else None,
            )
        )

    ours = ExportLogsServiceRequest.FromString(encode_logs(collect.records))

    assert ours == sdk_encode_logs(collect.records)


def test_invalid_utf8_and_huge_ints_do_not_fail_the_batch() -> None:
    """A lone surrogate and an int beyond int64 still encode, readably."""
    spans = _spans([{"bad": "a\udcffb", "huge": 2**70}])

    decoded = ExportTraceServiceRequest.FromString(encode_spans(spans))

    attributes = {
        kv.key: kv.value
        for kv in decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    }
    assert attributes["bad"].string_value == "a?b"
    assert attributes["huge"].string_value == str(2**70)


def test_values_equal_in_python_but_not_in_otlp_keep_their_types() -> None:
    """True, 1 and "1" under one key stay a bool, an int and a string."""
    spans = _spans([{"flag": True}, {"flag": 1}, {"flag": "1"}, {"flag": False}] * 2)

    ours = ExportTraceServiceRequest.FromString(encode_spans(spans))

    assert ours == sdk_encode_spans(spans)
    kinds = [
        span.attributes[0].value.WhichOneof("value")
        for scope in ours.resource_spans[0].scope_spans
        for span in scope.spans
    ]
    assert sorted(kinds) == sorted(
        ["bool_value", "int_value", "string_value"] * 2 + ["bool_value"] * 2
    )


def test_attribute_keys_made_from_data_do_not_pile_up_in_memory() -> None:
    """Thousands of distinct long keys are encoded right and leave little behind."""
    import gc
    import tracemalloc

    spans = _spans([{f"{number:05d}" + "k" * 20_000: number} for number in range(60)])
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            # The same spans, with other keys each time: 3000 distinct keys.
            for span in spans:
                span._attributes = {  # type: ignore[attr-defined]
                    f"{key}-{_}": value for key, value in span.attributes.items()
                }
            payload = encode_spans(spans)
        del payload
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    # 3000 keys of 20 KB: 60 MB if each were kept.
    assert retained < 8 * 2**20
    decoded = ExportTraceServiceRequest.FromString(encode_spans(spans))
    assert decoded == sdk_encode_spans(spans)


def test_spans_as_queued_for_export_encode_as_the_spans_they_copy() -> None:
    """The queue's light copy of a span loses nothing: drop counts included."""
    from opentelemetry.sdk.trace import SpanLimits

    from showmax_otel._pipeline import _QueuedSpan

    collect = _Collect()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "enc"}),
        span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(collect)
    remote = SpanContext(
        trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(1)
    )
    with provider.get_tracer("scope.a", "1.2").start_as_current_span(
        "limited",
        context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER,
        attributes={"a": 1, "b": "two", "c": 3.0},
        links=[Link(remote, {"n": 1}), Link(remote, {"n": 2})],
    ) as span:
        span.add_event("first", {"n": 1})
        span.add_event("second")
        span.set_status(Status(StatusCode.ERROR, "broken"))
    (original,) = collect.spans
    queued = _QueuedSpan(original)

    assert queued.dropped_attributes == 1
    assert queued.dropped_events == 1
    assert queued.dropped_links == 1
    assert encode_spans([queued]) == encode_spans([original])
    assert ExportTraceServiceRequest.FromString(
        encode_spans([queued])
    ) == sdk_encode_spans([original])


def test_spans_of_other_classes_are_queued_as_they_are() -> None:
    """Only the SDK's own read-only span is copied: a subclass keeps its ways."""
    from showmax_otel._pipeline import _QueuedSpan, _settled

    class OwnAttributes(ReadableSpan):
        @property
        def attributes(self) -> Any:
            return {"from": "property"}

    (original,) = _spans([{"a": 1}])
    custom = OwnAttributes(name="custom", context=original.context)

    assert isinstance(_settled(original), _QueuedSpan)
    assert _settled(custom) is custom
